//! What the demo measured, whether it passed, and its summary for a person.

use super::config::DemoConfig;
use crate::error::LoadError;
use crate::failover::Drill;
use crate::stats::{format_us, RunStats};

/// What the demo measured.
#[derive(Debug)]
#[non_exhaustive]
pub struct DemoReport {
    /// What was run.
    pub config: DemoConfig,
    /// Throughput, latency and errors of the load.
    pub stats: RunStats,
    /// Token requests the fake identity endpoint received in all.
    pub token_fetches: usize,
    /// Token renewals after the first token.
    pub rotations: u64,
    /// Sessions the gate signed in, over the whole run.
    pub connections_created: usize,
    /// The first error messages, distinct, at most five.
    pub first_errors: Vec<String>,
    /// The failover drill, when it was asked for: what it saw, or why it could not finish.
    pub drill: Option<Result<Drill, LoadError>>,
}

/// Whether the demo passed.
// Not non_exhaustive: a front end must tell every verdict apart, so a new one should break its match.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// No error: the pool outlived this many tokens.
    ZeroErrors {
        /// The first token and every renewal.
        tokens: u64,
    },
    /// The failover drill ran and only what was in flight when the server went failed: the pool served
    /// again by itself.
    OnlyInFlightFailed,
    /// The failover drill could not finish.
    DrillFailed(&'a LoadError),
    /// Queries failed that should not have: the run fails.
    Errors {
        /// Failed operations in all.
        count: u64,
        /// Whether the failover drill ran (so these are errors outside it).
        outside_drill: bool,
    },
}

impl Verdict<'_> {
    /// Whether the demo passed.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::ZeroErrors { .. } | Verdict::OnlyInFlightFailed)
    }
}

impl DemoReport {
    /// Whether the run passed: zero errors, or with the failover drill, none but what was in flight.
    pub fn verdict(&self) -> Verdict<'_> {
        let errors = self.stats.errors;
        match &self.drill {
            Some(Err(e)) => Verdict::DrillFailed(e),
            Some(Ok(drill)) if drill.only_in_flight_failed(errors) => Verdict::OnlyInFlightFailed,
            None if errors == 0 => Verdict::ZeroErrors {
                tokens: self.rotations + 1,
            },
            drill => Verdict::Errors {
                count: errors,
                outside_drill: drill.is_some(),
            },
        }
    }

    /// The summary for a person: the run, the numbers, then what the failover drill saw (when it
    /// finished).
    pub fn table(&self) -> String {
        let (c, stats, all) = (&self.config, &self.stats, &self.stats.all);
        let rows = [
            ("queries", format!("{} ({:.0}/s)", stats.ops, stats.throughput())),
            ("errors", stats.errors.to_string()),
            ("token fetches", self.token_fetches.to_string()),
            ("rotations", self.rotations.to_string()),
            ("connections created", self.connections_created.to_string()),
            ("latency p50", format_us(all.p50)),
            ("latency p99", format_us(all.p99)),
            ("latency p99.9", format_us(all.p999)),
        ];
        let mut out = format!(
            "\nentra-pg demo: {:.1} s, {} tasks, pool of {}, tokens live {} s, connections retire after ~{} ms\n\n",
            stats.elapsed.as_secs_f64(),
            c.tasks,
            c.connections,
            c.token_lifetime.as_secs(),
            c.max_lifetime.as_millis()
        );
        for (label, value) in rows {
            out.push_str(&format!("  {label:<20} {value}\n"));
        }
        if let Some(Ok(drill)) = &self.drill {
            out.push_str(&drill_lines(drill, stats.errors));
        }
        out
    }
}

/// What the drill saw, below the table.
fn drill_lines(drill: &Drill, total_errors: u64) -> String {
    let rows = [
        (
            "errors",
            format!(
                "{} while the server was away (statements and sign-ins in flight when it went), {} before, {} \
                 after it served again",
                drill.errors,
                drill.errors_before,
                drill.errors_after(total_errors)
            ),
        ),
        (
            "served again",
            format!(
                "{:.1} s after the failure, {} ms after the gate came back",
                drill.recovered_after.as_secs_f64(),
                drill.served_after_return.as_millis()
            ),
        ),
        (
            "token fetches",
            format!("{} during the drill", drill.token_fetches),
        ),
    ];
    let mut out = format!(
        "\nfailover drill: the server restarted and the gate was away {} s\n",
        drill.pause.as_secs()
    );
    for (label, value) in rows {
        out.push_str(&format!("  {label:<20} {value}\n"));
    }
    out
}
