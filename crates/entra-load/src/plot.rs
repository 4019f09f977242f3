//! An SVG of throughput and p99 per second, with the seconds that saw a token rotation marked.

use std::path::Path;

use plotters::prelude::*;

use crate::error::LoadError;
use crate::stats::Window;

/// Draws `windows` (one per second) to `path`: throughput on top, p99 below, a red line at each
/// rotation.
pub fn draw(path: &Path, title: &str, windows: &[Window]) -> Result<(), LoadError> {
    let error = |e: Box<dyn std::error::Error + Send + Sync>| LoadError::Plot {
        path: path.to_path_buf(),
        source: e,
    };
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.into()))?;
    let (top, bottom) = root.split_vertically(320);
    let seconds = windows.len().max(1) as u32;
    let throughput: Vec<(u32, f64)> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| (i as u32, w.ops as f64))
        .collect();
    let p99: Vec<(u32, f64)> = windows
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.p99_us.map(|us| (i as u32, us as f64 / 1000.0)))
        .collect();
    let rotations: Vec<u32> = windows
        .iter()
        .enumerate()
        .filter(|(_, w)| w.rotation)
        .map(|(i, _)| i as u32)
        .collect();

    for (area, caption, series, unit) in [
        (&top, format!("{title}: throughput"), &throughput, "ops/s"),
        (
            &bottom,
            "p99 latency (red: second with a token rotation)".to_string(),
            &p99,
            "p99 (ms)",
        ),
    ] {
        let max = series.iter().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0u32..seconds, 0.0..max)
            .map_err(|e| error(e.into()))?;
        chart
            .configure_mesh()
            .x_desc("second")
            .y_desc(unit)
            .draw()
            .map_err(|e| error(e.into()))?;
        for &r in &rotations {
            chart
                .draw_series(LineSeries::new([(r, 0.0), (r, max)], RED.mix(0.5)))
                .map_err(|e| error(e.into()))?;
        }
        chart
            .draw_series(LineSeries::new(series.iter().copied(), &BLUE))
            .map_err(|e| error(e.into()))?;
    }
    root.present().map_err(|e| error(e.into()))
}
