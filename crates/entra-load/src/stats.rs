//! Latency percentiles and per-second windows, split by whether a token rotation happened in them.

use std::time::Duration;

/// One acknowledged operation: when it completed (ms since the run started) and how long it took.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Sample {
    /// When it completed, in ms since the run started.
    pub at_ms: u32,
    /// How long it took, in µs (pool checkout included).
    pub latency_us: u32,
}

/// p50 / p99 / p99.9 of a set of latencies (µs), `None` when it is empty.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Percentiles {
    /// How many latencies.
    pub count: usize,
    /// The median, µs.
    pub p50: Option<u32>,
    /// The 99th percentile, µs.
    pub p99: Option<u32>,
    /// The 99.9th percentile, µs.
    pub p999: Option<u32>,
    /// The slowest, µs.
    pub max: Option<u32>,
}

impl Percentiles {
    fn of(mut latencies: Vec<u32>) -> Self {
        latencies.sort_unstable();
        Percentiles {
            count: latencies.len(),
            p50: percentile(&latencies, 50.0),
            p99: percentile(&latencies, 99.0),
            p999: percentile(&latencies, 99.9),
            max: latencies.last().copied(),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Window {
    /// Operations acknowledged in it.
    pub ops: u64,
    /// Operations that failed in it.
    pub errors: u64,
    /// p99 latency of its operations, µs.
    pub p99_us: Option<u32>,
    /// Whether the token was renewed in it.
    pub rotation: bool,
}

/// What one run measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunStats {
    /// Acknowledged operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// How long the run took (at least its duration).
    pub elapsed: Duration,
    /// Latency over every operation.
    pub all: Percentiles,
    /// Operations that completed in a window with a token rotation.
    pub rotation: Percentiles,
    /// Operations that completed in the other windows.
    pub rest: Percentiles,
    /// One per second.
    pub windows: Vec<Window>,
}

impl RunStats {
    /// Acknowledged operations per second over the whole run.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// p99 in rotation windows over p99 in the rest (`None` when either class is empty).
    pub fn p99_ratio(&self) -> Option<f64> {
        match (self.rotation.p99, self.rest.p99) {
            (Some(r), Some(o)) if o > 0 => Some(r as f64 / o as f64),
            _ => None,
        }
    }

    /// Splits `samples` into 1 s windows; a window is a rotation window when one of `rotations_ms`
    /// falls in it. `elapsed` is at least the run's whole seconds; what completed after the last whole
    /// second (operations in flight at the deadline) counts in the last window.
    pub fn analyse(samples: &[Sample], errors_ms: &[u32], rotations_ms: &[u32], elapsed: Duration) -> Self {
        let seconds = ((elapsed.as_millis() / 1000) as usize).max(1);
        let slot = |ms: u32| ((ms / 1000) as usize).min(seconds - 1);
        let mut per_window: Vec<Vec<u32>> = vec![Vec::new(); seconds];
        for s in samples {
            per_window[slot(s.at_ms)].push(s.latency_us);
        }
        let mut rotation_flags = vec![false; seconds];
        for &r in rotations_ms {
            rotation_flags[slot(r)] = true;
        }
        let mut error_counts = vec![0u64; seconds];
        for &e in errors_ms {
            error_counts[slot(e)] += 1;
        }
        let (mut in_rotation, mut rest) = (Vec::new(), Vec::new());
        let mut windows = Vec::with_capacity(seconds);
        for (i, mut latencies) in per_window.into_iter().enumerate() {
            latencies.sort_unstable();
            windows.push(Window {
                ops: latencies.len() as u64,
                errors: error_counts[i],
                p99_us: percentile(&latencies, 99.0),
                rotation: rotation_flags[i],
            });
            if rotation_flags[i] {
                in_rotation.extend_from_slice(&latencies);
            } else {
                rest.extend_from_slice(&latencies);
            }
        }
        RunStats {
            ops: samples.len() as u64,
            errors: errors_ms.len() as u64,
            elapsed,
            all: Percentiles::of(samples.iter().map(|s| s.latency_us).collect()),
            rotation: Percentiles::of(in_rotation),
            rest: Percentiles::of(rest),
            windows,
        }
    }
}

/// The `p`th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `812 µs`, `3.4 ms` or `-`.
pub fn format_us(us: Option<u32>) -> String {
    match us {
        None => "-".to_string(),
        Some(us) if us >= 1000 => format!("{:.1} ms", us as f64 / 1000.0),
        Some(us) => format!("{us} µs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn windows_with_a_rotation_are_classed_apart() {
        // Second 0 is fast, second 1 (with a rotation at 1.5 s) is slow, second 2 is fast again.
        let mut samples = Vec::new();
        for i in 0..100 {
            samples.push(Sample {
                at_ms: i,
                latency_us: 100,
            });
            samples.push(Sample {
                at_ms: 1000 + i,
                latency_us: 5000,
            });
            samples.push(Sample {
                at_ms: 2000 + i,
                latency_us: 200,
            });
        }
        let stats = RunStats::analyse(&samples, &[2500], &[1500], Duration::from_millis(3050));
        assert_eq!(stats.windows.len(), 3);
        assert!(stats.windows[1].rotation && !stats.windows[0].rotation && !stats.windows[2].rotation);
        assert_eq!(stats.rotation.p99, Some(5000));
        assert_eq!(stats.rest.p99, Some(200));
        assert_eq!(stats.rest.count, 200);
        assert_eq!(stats.windows[2].errors, 1);
        assert_eq!(stats.errors, 1);
        assert_eq!(stats.p99_ratio(), Some(25.0));
    }
}
