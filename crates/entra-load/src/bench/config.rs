//! What a benchmark runs, and how its load reaches the server.

use std::time::Duration;

use crate::workload::Mix;

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchConfig {
    /// Concurrent tasks (more than connections, so tasks wait for the pool).
    pub tasks: usize,
    /// The pool's size, and pgbench's `-c`.
    pub connections: usize,
    /// How long each run lasts.
    pub run_duration: Duration,
    /// Cycles of (gate, direct, pgbench): at least 1; 3 or more for a published ratio.
    pub cycles: usize,
    /// Lifetime of the emulator's tokens.
    pub token_lifetime: Duration,
    /// Retire gate connections after about this long (default: the token lifetime).
    pub max_lifetime: Option<Duration>,
    /// What each operation does.
    pub mix: Mix,
    /// Run the direct load (and pgbench, for the point mix).
    pub direct: bool,
    /// Run pgbench (point mix only).
    pub pgbench: bool,
    /// How operations reach the server.
    pub mode: Mode,
    /// Added by the gate to every sign-in.
    pub sign_in_delay: Duration,
    /// Replace-ahead spares of the gate's checkout pool.
    pub replace_ahead: usize,
    /// Also run plain deadpool-postgres through the gate, retiring connections at the same lifetime.
    pub plain_deadpool: bool,
    /// Also run the bystander control (checkout mode with a sign-in delay): the gate pool with no
    /// connection retiring, beside sessions signing in and out when the gate run before it signed in.
    pub bystander: bool,
}

/// How the load reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Mode {
    /// `pool.get()` and one statement per operation.
    #[default]
    Checkout,
    /// Statements pipelined on `connections` shared connections ([`entra_postgres::MultiplexedPool`]).
    Multiplexed,
    /// `pgbench -S -c <connections>` through `entra-proxy` against the same straight at the gate
    /// ([`crate::proxy_bench`]).
    Proxy,
    /// `pgbench -n -C -S -c <connections> -R 20` (a connection per transaction) through `entra-proxy`
    /// against the same straight at the gate, also beside 10 000 idle loopback sockets
    /// ([`crate::proxy_connect`]).
    ProxyConnect,
}

impl Mode {
    /// The name in results.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Checkout => "checkout",
            Mode::Multiplexed => "multiplexed",
            Mode::Proxy => "proxy",
            Mode::ProxyConnect => "proxy-connect",
        }
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            tasks: 64,
            connections: 16,
            run_duration: Duration::from_secs(20),
            cycles: 3,
            token_lifetime: Duration::from_secs(5),
            max_lifetime: None,
            mix: Mix::Point,
            direct: true,
            pgbench: true,
            mode: Mode::Checkout,
            sign_in_delay: Duration::ZERO,
            replace_ahead: 0,
            plain_deadpool: false,
            bystander: false,
        }
    }
}
