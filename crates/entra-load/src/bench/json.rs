//! The report as JSON, and the files it is written to (the JSON and an SVG of the first gate run).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::config::Mode;
use super::report::{BenchReport, RunResult};
use crate::error::LoadError;
use crate::pairs::PairedRatio;
use crate::plot;
use crate::stats::Percentiles;

fn load_json(load: &(Option<[f64; 3]>, Option<[f64; 3]>)) -> serde_json::Value {
    json!({ "before": load.0, "after": load.1 })
}

fn percentiles_json(p: &Percentiles) -> serde_json::Value {
    json!({ "count": p.count, "p50_us": p.p50, "p99_us": p.p99, "p999_us": p.p999, "max_us": p.max })
}

fn run_json(r: &RunResult) -> serde_json::Value {
    json!({
        "label": r.label,
        "cycle": r.cycle,
        "throughput_per_s": r.stats.throughput(),
        "operations": r.stats.ops,
        "errors": r.stats.errors,
        "first_errors": r.first_errors,
        "elapsed_s": r.stats.elapsed.as_secs_f64(),
        "latency_all": percentiles_json(&r.stats.all),
        "latency_rotation_windows": percentiles_json(&r.stats.rotation),
        "latency_other_windows": percentiles_json(&r.stats.rest),
        "rotation_windows": r.stats.windows.iter().filter(|w| w.rotation).count(),
        "rotations": r.rotations,
        "rotations_at_ms": r.rotations_ms,
        "token_fetches": r.token_fetches,
        "connections_created": r.connections_created,
        "opened_in_checkout": r.opened_in_checkout,
        "writes": r.writes.map(|w| json!({
            "acknowledged": w.acknowledged, "missing": w.missing, "rows": w.rows
        })),
        "load_average": load_json(&r.load),
        "windows": r.stats.windows.iter().map(|w| json!({
            "ops": w.ops, "errors": w.errors, "p99_us": w.p99_us, "rotation": w.rotation
        })).collect::<Vec<_>>(),
    })
}

impl BenchReport {
    /// The whole report as JSON, ratios under `ratios`.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.config;
        json!({
            "config": {
                "tasks": c.tasks, "connections": c.connections, "run_duration_s": c.run_duration.as_secs(),
                "cycles": c.cycles, "token_lifetime_s": c.token_lifetime.as_secs(),
                "max_lifetime_ms": c.max_lifetime.map(|d| d.as_millis() as u64), "mix": c.mix.name(),
                "mode": c.mode.name(), "sign_in_delay_ms": c.sign_in_delay.as_millis() as u64,
                "replace_ahead": c.replace_ahead, "plain_deadpool": c.plain_deadpool, "bystander": c.bystander,
                "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            },
            "load_average": load_json(&self.load),
            "runs": self.runs.iter().map(run_json).collect::<Vec<_>>(),
            "pgbench": self.pgbench.iter().map(|p| json!({
                "cycle": p.cycle, "clients": p.clients, "tps": p.tps, "load_average": load_json(&p.load),
            })).collect::<Vec<_>>(),
            "ratios": self.ratios_json(),
        })
    }

    fn ratios_json(&self) -> serde_json::Value {
        let (r, c) = (&self.ratios, &self.config);
        let (plain, bystander) = (c.plain_deadpool, c.bystander);
        let multiplexed = c.mode == Mode::Multiplexed;
        // (key, ratio, whether this run's configuration reports it)
        let rows: [(String, &Option<PairedRatio>, bool); 11] = [
            ("direct_over_pgbench".into(), &r.direct_over_pgbench, true),
            ("gate_over_direct".into(), &r.gate_over_direct, true),
            ("p99_rotation_over_rest".into(), &r.p99_rotation_over_rest, true),
            ("p999_rotation_over_rest".into(), &r.p999_rotation_over_rest, true),
            (
                "plain_p99_rotation_over_rest".into(),
                &r.plain_p99_rotation_over_rest,
                plain,
            ),
            (
                "plain_p999_rotation_over_rest".into(),
                &r.plain_p999_rotation_over_rest,
                plain,
            ),
            (
                "no_spares_p999_rotation_over_rest".into(),
                &r.no_spares_p999_rotation_over_rest,
                plain,
            ),
            (
                "bystander_p99_rotation_over_rest".into(),
                &r.bystander_p99_rotation_over_rest,
                bystander,
            ),
            (
                "bystander_p999_rotation_over_rest".into(),
                &r.bystander_p999_rotation_over_rest,
                bystander,
            ),
            (
                "multiplexed_over_pgbench".into(),
                &r.direct_over_pgbench,
                multiplexed,
            ),
            (
                format!("multiplexed_{}_over_pgbench_16", c.connections),
                &r.direct_over_pgbench_16,
                multiplexed,
            ),
        ];
        let ratios = rows
            .into_iter()
            .filter(|(_, _, shown)| *shown)
            .map(|(key, ratio, _)| (key, json!(ratio.as_ref().map(PairedRatio::json))))
            .collect();
        serde_json::Value::Object(ratios)
    }

    /// Writes `load-<timestamp>.json` and an SVG of the first gate run into `dir`; returns both paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), LoadError> {
        std::fs::create_dir_all(dir).map_err(|source| LoadError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .map_err(LoadError::Timestamp)?;
        let json_path = dir.join(format!("load-{stamp}.json"));
        let svg_path = dir.join(format!("load-{stamp}.svg"));
        let text = serde_json::to_string_pretty(&self.json()).map_err(LoadError::Json)?;
        std::fs::write(&json_path, text).map_err(|source| LoadError::Write {
            path: json_path.clone(),
            source,
        })?;
        if let Some(gate) = self.runs.iter().find(|r| r.label == "gate") {
            let title = format!(
                "gate, {} mix, tokens live {} s",
                self.config.mix.name(),
                self.config.token_lifetime.as_secs()
            );
            plot::draw(&svg_path, &title, &gate.stats.windows)?;
        }
        Ok((json_path, svg_path))
    }
}
