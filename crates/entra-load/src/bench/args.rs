//! The command-line flags of `entra-pg bench` and `cargo bench --bench load`.

use std::path::PathBuf;
use std::time::Duration;

use super::config::{BenchConfig, Mode};
use crate::workload::Mix;

/// The command-line flags of `entra-pg bench` and `cargo bench --bench load`.
#[derive(Debug, clap::Args)]
#[non_exhaustive]
pub struct BenchArgs {
    /// Concurrent tasks running operations (more than connections, so tasks wait for the pool).
    #[arg(long, value_name = "N", default_value_t = 64)]
    tasks: usize,
    /// The pool's size (and pgbench's -c).
    #[arg(long, value_name = "N", default_value_t = 16)]
    connections: usize,
    /// Seconds each run lasts (each gate, direct and pgbench run of every cycle).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    duration: u64,
    /// Cycles of (gate, direct, pgbench), interleaved; each ratio is the median of the cycles' pairs.
    #[arg(long, value_name = "N", default_value_t = 3)]
    cycles: usize,
    /// Lifetime of each token the emulator issues, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    token_lifetime: u64,
    /// Retire gate connections after about this many milliseconds (default: the token lifetime), so
    /// new connections sign in with new tokens throughout the run.
    #[arg(long, value_name = "MS")]
    max_lifetime_ms: Option<u64>,
    /// What each operation does.
    #[arg(long, value_enum, default_value_t = Mix::Point)]
    mix: Mix,
    /// Directory for the JSON result and the SVG plot.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,
    /// `checkout` (a connection per operation), `multiplexed` (statements pipelined on --connections
    /// shared connections; pgbench then also runs at -c 16), `proxy` (pgbench -c --connections through
    /// `entra-pg proxy` against the same straight at the gate) or `proxy-connect` (the same with
    /// `pgbench -C -R 20`, a connection per transaction, also beside 10 000 idle loopback sockets; use
    /// --sign-in-delay-ms 50).
    #[arg(long, value_enum, default_value_t = Mode::Checkout)]
    mode: Mode,
    /// The gate waits this long at every sign-in, as Azure's sign-in costs tens of milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    sign_in_delay_ms: u64,
    /// Replace-ahead spares for the gate's checkout pool (0: off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    replace_ahead: usize,
    /// Also run plain deadpool-postgres through the gate in each cycle: a token fetched once as its
    /// password, connections retired at the same lifetime by a pre-recycle hook, as a user would write it.
    #[arg(long)]
    plain_deadpool: bool,
    /// Also run a control in each cycle (needs --sign-in-delay-ms): the gate pool with no connection
    /// retiring and no spares, while sessions no operation waits for sign in and out through the gate at
    /// the moments the gate run before it signed in. It prices what a sign-in costs the queries around
    /// it on this machine, which no pool can avoid.
    #[arg(long)]
    bystander: bool,
    /// Skip the pgbench runs.
    #[arg(long)]
    no_pgbench: bool,
    /// Skip the direct runs (and so pgbench too).
    #[arg(long)]
    no_direct: bool,
}

impl BenchArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> BenchConfig {
        BenchConfig {
            tasks: self.tasks,
            connections: self.connections,
            run_duration: Duration::from_secs(self.duration),
            cycles: self.cycles,
            token_lifetime: Duration::from_secs(self.token_lifetime),
            max_lifetime: self.max_lifetime_ms.map(Duration::from_millis),
            mix: self.mix,
            direct: !self.no_direct,
            pgbench: !self.no_pgbench,
            mode: self.mode,
            sign_in_delay: Duration::from_millis(self.sign_in_delay_ms),
            replace_ahead: self.replace_ahead,
            plain_deadpool: self.plain_deadpool,
            bystander: self.bystander,
        }
    }
}
