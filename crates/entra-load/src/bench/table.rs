//! The report for a person: per kind of run the median over cycles, then the ratios.

use super::report::{BenchReport, RunResult};
use crate::pairs::PairedRatio;
use crate::stats::format_us;

fn us(v: Option<u32>) -> Option<f64> {
    v.map(f64::from)
}

fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    PairedRatio::of(values).map(|r| r.median)
}

impl BenchReport {
    /// The summary for a person: per kind of run the median over cycles, then the ratios.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "\nentra-pg bench: {} mode, {} mix, {} tasks, {} connections, {} cycles of {} s runs, tokens live {} s, \
             sign-in delay {} ms, replace-ahead {}\n\n",
            c.mode.name(),
            c.mix.name(),
            c.tasks,
            c.connections,
            c.cycles,
            c.run_duration.as_secs(),
            c.token_lifetime.as_secs(),
            c.sign_in_delay.as_millis(),
            c.replace_ahead
        );
        let labels: Vec<&str> = ["gate", "bystander", "no-spares", "plain", "direct"]
            .into_iter()
            .filter(|l| self.runs.iter().any(|r| r.label == *l))
            .collect();
        out.push_str(&format!("  {:<34}", "(median over cycles)"));
        for l in &labels {
            out.push_str(&format!("{l:>16}"));
        }
        out.push('\n');
        type Cell = fn(&RunResult) -> Option<f64>;
        let rows: [(&str, Cell, bool); 10] = [
            ("throughput (ops/s)", |r| Some(r.stats.throughput()), false),
            ("latency p50", |r| us(r.stats.all.p50), true),
            ("latency p99", |r| us(r.stats.all.p99), true),
            ("latency p99.9", |r| us(r.stats.all.p999), true),
            ("latency max", |r| us(r.stats.all.max), true),
            (
                "sign-ins inside get() (per run)",
                |r| r.opened_in_checkout.map(|n| n as f64),
                false,
            ),
            ("p99 in rotation windows", |r| us(r.stats.rotation.p99), true),
            ("p99.9 in rotation windows", |r| us(r.stats.rotation.p999), true),
            ("p99 in other windows", |r| us(r.stats.rest.p99), true),
            ("p99.9 in other windows", |r| us(r.stats.rest.p999), true),
        ];
        for (name, cell, is_latency) in rows {
            out.push_str(&format!("  {name:<34}"));
            for l in &labels {
                let m = median(self.runs.iter().filter(|r| r.label == *l).filter_map(cell));
                let shown = match (m, is_latency) {
                    (None, _) => "-".to_string(),
                    (Some(v), true) => format_us(Some(v.round() as u32)),
                    (Some(v), false) => format!("{v:.0}"),
                };
                out.push_str(&format!("{shown:>16}"));
            }
            out.push('\n');
        }
        let total = |f: fn(&RunResult) -> Option<u64>| {
            let v: Vec<u64> = self.runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum::<u64>().to_string())
        };
        let sums: [(&str, Option<String>); 6] = [
            ("errors (all runs)", total(|r| Some(r.stats.errors))),
            ("token rotations (gate)", total(|r| r.rotations)),
            ("token fetches (gate)", total(|r| r.token_fetches)),
            ("connections signed in (gate)", total(|r| r.connections_created)),
            ("acknowledged writes", total(|r| r.writes.map(|w| w.acknowledged))),
            (
                "acknowledged writes missing",
                total(|r| r.writes.map(|w| w.missing)),
            ),
        ];
        out.push('\n');
        for (name, value) in sums {
            out.push_str(&format!("  {name:<34}{:>16}\n", value.as_deref().unwrap_or("-")));
        }
        out.push('\n');
        let mut clients: Vec<usize> = self.pgbench.iter().map(|p| p.clients).collect();
        clients.sort_unstable();
        clients.dedup();
        for c in clients {
            if let Some(tps) = median(self.pgbench.iter().filter(|p| p.clients == c).map(|p| p.tps)) {
                out.push_str(&format!("  pgbench -S -M prepared -c {c:<3} tps  {tps:>10.0}\n"));
            }
        }
        if self.pgbench_missing {
            out.push_str("  pgbench: not installed, no ratio to it\n");
        }
        let lines = [
            (
                "ours direct / pgbench (same -c)",
                &self.ratios.direct_over_pgbench,
            ),
            ("ours direct / pgbench -c 16", &self.ratios.direct_over_pgbench_16),
            ("through the gate / direct", &self.ratios.gate_over_direct),
            (
                "p99 rotation / other windows",
                &self.ratios.p99_rotation_over_rest,
            ),
            (
                "p99.9 rotation / other windows",
                &self.ratios.p999_rotation_over_rest,
            ),
            (
                "plain p99 retiring / other",
                &self.ratios.plain_p99_rotation_over_rest,
            ),
            (
                "plain p99.9 retiring / other",
                &self.ratios.plain_p999_rotation_over_rest,
            ),
            (
                "no-spares p99.9 rotation / other",
                &self.ratios.no_spares_p999_rotation_over_rest,
            ),
            (
                "bystander p99 sign-in / other",
                &self.ratios.bystander_p99_rotation_over_rest,
            ),
            (
                "bystander p99.9 sign-in / other",
                &self.ratios.bystander_p999_rotation_over_rest,
            ),
        ];
        for (name, r) in lines {
            if let Some(r) = r {
                out.push_str(&format!("  {name:<34}{}\n", r.display()));
            }
        }
        if let (Some(before), Some(after)) = self.load {
            out.push_str(&format!(
                "\n  load average: {:.2} before, {:.2} after (1 min); {} cores\n",
                before[0],
                after[0],
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ));
        }
        out
    }
}
