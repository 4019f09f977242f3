//! The load benchmark: the same load through the emulator's gate (Entra tokens, rotating) and directly
//! against the server (static password), and `pgbench -S -M prepared` against the same server, in
//! interleaved cycles (gate, direct, pgbench; gate, direct, pgbench; …) so every ratio is a median of
//! pairs measured side by side, with its min and max, and the load average recorded around each run.
//!
//! Latency is classed by one-second window: a window holds a rotation when the refresher renewed the
//! token in it.
//!
//! - `args`: the command-line flags (feature `clap`); `config`: what to run; `outcome`: [`run_mode`], this
//!   benchmark or the proxy's, by mode.
//! - `cycles`: [`run`], the interleaved cycles; `pools`: the pools each kind of run drives; `arms`: one
//!   run of each kind (gate, plain deadpool, direct).
//! - `report`: what was measured and the ratios; `json` and `table`: the report for files and people.

#[cfg(feature = "clap")]
mod args;
mod arms;
mod config;
mod cycles;
mod json;
mod outcome;
mod pools;
mod report;
mod table;

#[cfg(feature = "clap")]
pub use args::BenchArgs;
pub use config::{BenchConfig, Mode};
pub use cycles::run;
pub use outcome::{run_mode, BenchOutcome};
pub use report::{BenchReport, PgbenchRun, Ratios, RunResult};
