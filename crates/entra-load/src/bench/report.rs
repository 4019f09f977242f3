//! What a benchmark measured: its runs, pgbench's, and the ratios paired by cycle.

use super::config::BenchConfig;
use crate::pairs::PairedRatio;
use crate::setup::WriteCheck;
use crate::stats::RunStats;

/// One run of the load (through the gate or direct).
#[derive(Debug)]
#[non_exhaustive]
pub struct RunResult {
    /// `gate` or `direct`.
    pub label: &'static str,
    /// The cycle it belongs to (0-based).
    pub cycle: usize,
    /// What it measured.
    pub stats: RunStats,
    /// When the token was renewed, in ms from the run's start (gate runs).
    pub rotations_ms: Vec<u32>,
    /// The first error messages.
    pub first_errors: Vec<String>,
    /// The write check, for mixes that write.
    pub writes: Option<WriteCheck>,
    /// Gate runs: token rotations, token requests and connections signed in during the run.
    pub rotations: Option<u64>,
    /// Token requests the fake identity endpoint received during the run.
    pub token_fetches: Option<u64>,
    /// Sessions the gate signed in during the run.
    pub connections_created: Option<u64>,
    /// Gate and plain runs: connections opened inside a `get()` during the run (after the warm-up that
    /// fills the pool), whose caller waited for the sign-in.
    pub opened_in_checkout: Option<u64>,
    /// Load average before and after the run.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// One pgbench run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgbenchRun {
    /// The cycle it belongs to.
    pub cycle: usize,
    /// Its `-c`.
    pub clients: usize,
    /// Transactions per second, without initial connection time.
    pub tps: f64,
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// The ratios, each a median of pairs from the same cycle.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Ratios {
    /// Our direct throughput over pgbench's tps.
    pub direct_over_pgbench: Option<PairedRatio>,
    /// Throughput through the gate over direct throughput.
    pub gate_over_direct: Option<PairedRatio>,
    /// p99 in rotation windows over p99 in the other windows, per gate run.
    pub p99_rotation_over_rest: Option<PairedRatio>,
    /// The same for p99.9.
    pub p999_rotation_over_rest: Option<PairedRatio>,
    /// Multiplexed mode: our direct throughput over pgbench's at `-c 16`.
    pub direct_over_pgbench_16: Option<PairedRatio>,
    /// `--plain-deadpool`: plain deadpool's p99 in windows with a connection retirement over its p99 in
    /// the rest.
    pub plain_p99_rotation_over_rest: Option<PairedRatio>,
    /// The same for p99.9.
    pub plain_p999_rotation_over_rest: Option<PairedRatio>,
    /// `--plain-deadpool` with replace-ahead: the gate pool without spares, p99.9 in its sign-in windows
    /// over the rest.
    pub no_spares_p999_rotation_over_rest: Option<PairedRatio>,
    /// `--bystander`: p99 in windows where a bystander signed in over the rest, the pool itself signing
    /// nothing in.
    pub bystander_p99_rotation_over_rest: Option<PairedRatio>,
    /// The same for p99.9: the floor this machine puts under `p999_rotation_over_rest`.
    pub bystander_p999_rotation_over_rest: Option<PairedRatio>,
}

/// Everything one benchmark measured.
#[derive(Debug)]
#[non_exhaustive]
pub struct BenchReport {
    /// What was run.
    pub config: BenchConfig,
    /// Gate and direct runs, in the order they ran.
    pub runs: Vec<RunResult>,
    /// pgbench runs (`None` entries: pgbench is not installed).
    pub pgbench: Vec<PgbenchRun>,
    /// pgbench was wanted but is not installed.
    pub pgbench_missing: bool,
    /// The ratios.
    pub ratios: Ratios,
    /// Load average at the start and at the end.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

fn ratio_of(a: Option<u32>, b: Option<u32>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    }
}

pub(super) fn ratios(runs: &[RunResult], pgbench: &[PgbenchRun], connections: usize) -> Ratios {
    let of = |label: &str, cycle: usize| {
        runs.iter()
            .find(|r| r.label == label && r.cycle == cycle)
            .map(|r| r.stats.throughput())
    };
    let mut cycles: Vec<usize> = runs.iter().map(|r| r.cycle).collect();
    cycles.dedup();
    let gates = runs.iter().filter(|r| r.label == "gate");
    let plains = runs.iter().filter(|r| r.label == "plain");
    let bystanders = runs.iter().filter(|r| r.label == "bystander");
    Ratios {
        direct_over_pgbench: PairedRatio::of_pairs(
            pgbench
                .iter()
                .filter(|p| p.clients == connections)
                .filter_map(|p| of("direct", p.cycle).map(|d| (d, p.tps))),
        ),
        direct_over_pgbench_16: PairedRatio::of_pairs(
            pgbench
                .iter()
                .filter(|p| p.clients == 16 && connections != 16)
                .filter_map(|p| of("direct", p.cycle).map(|d| (d, p.tps))),
        ),
        gate_over_direct: PairedRatio::of_pairs(
            cycles
                .iter()
                .filter_map(|c| Some((of("gate", *c)?, of("direct", *c)?))),
        ),
        p99_rotation_over_rest: PairedRatio::of(
            gates
                .clone()
                .filter_map(|g| ratio_of(g.stats.rotation.p99, g.stats.rest.p99)),
        ),
        p999_rotation_over_rest: PairedRatio::of(
            gates.filter_map(|g| ratio_of(g.stats.rotation.p999, g.stats.rest.p999)),
        ),
        plain_p99_rotation_over_rest: PairedRatio::of(
            plains
                .clone()
                .filter_map(|p| ratio_of(p.stats.rotation.p99, p.stats.rest.p99)),
        ),
        plain_p999_rotation_over_rest: PairedRatio::of(
            plains.filter_map(|p| ratio_of(p.stats.rotation.p999, p.stats.rest.p999)),
        ),
        no_spares_p999_rotation_over_rest: PairedRatio::of(
            runs.iter()
                .filter(|r| r.label == "no-spares")
                .filter_map(|r| ratio_of(r.stats.rotation.p999, r.stats.rest.p999)),
        ),
        bystander_p99_rotation_over_rest: PairedRatio::of(
            bystanders
                .clone()
                .filter_map(|r| ratio_of(r.stats.rotation.p99, r.stats.rest.p99)),
        ),
        bystander_p999_rotation_over_rest: PairedRatio::of(
            bystanders.filter_map(|r| ratio_of(r.stats.rotation.p999, r.stats.rest.p999)),
        ),
    }
}

impl BenchReport {
    /// Whether anything failed: an error in a run, or an acknowledged write missing.
    pub fn failed(&self) -> bool {
        self.runs
            .iter()
            .any(|r| r.stats.errors > 0 || r.writes.is_some_and(|w| w.missing > 0))
    }
}
