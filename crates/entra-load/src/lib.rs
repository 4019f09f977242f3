//! The load engine behind `entra-pg demo`, `entra-pg bench` and `cargo bench --bench load`: one engine and
//! one statistics module for all three.
//!
//! - [`demo`]: the demo: a pool under load through many token rotations against the emulator, with an
//!   optional failover drill; its report, verdict and summary.
//! - [`drive`](mod@drive): tasks over a deadpool pool until a deadline, every operation timed (checkout included),
//!   token rotations watched, acknowledged writes recorded.
//! - [`event`]: what a run reports as it goes, to a callback the caller gives; this crate prints nothing.
//! - [`failover`]: the drill behind `entra-pg demo --failover`: the server goes away under the load and
//!   comes back; what failed, and how long the pool took to serve again.
//! - [`stats`]: percentiles (nearest rank) and one-second windows classed by whether a rotation happened
//!   in them.
//! - [`bench`](mod@bench): the benchmark: through the emulator's gate, directly, and `pgbench -S`, in interleaved
//!   cycles; every ratio is a [`PairedRatio`] (median of pairs, with min and max), and the load average
//!   is recorded around each run.
//! - `bystander` (behind `entra-pg bench --bystander`): sessions signing in and out beside a load they do
//!   not serve, the floor a machine puts under "p99.9 in sign-in windows over the rest".
//! - [`proxy_bench`]: `pgbench -S` through `entra-proxy` against the same straight at the gate, interleaved.
//! - [`proxy_connect`]: `pgbench -C` (a connection per transaction) the same way: the price of a connect,
//!   also beside 10 000 idle loopback sockets.
//! - [`setup`]: the tables the workloads use and the end-of-run check that no acknowledged write is lost.
//!
//! Every public function that can fail returns a [`LoadError`]; none prints.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod bench;
mod bystander;
pub mod demo;
pub mod drive;
mod error;
pub mod event;
pub mod failover;
mod pairs;
pub mod pgbench;
pub mod plot;
pub mod proxy_bench;
pub mod proxy_connect;
pub mod setup;
pub mod stats;
pub mod workload;

pub use bench::{BenchConfig, BenchReport};
pub use drive::{drive, drive_with, Driven, Live, Rotations};
pub use error::LoadError;
pub use event::Event;
pub use failover::Drill;
pub use pairs::{load_average, PairedRatio};
pub use workload::{Mix, Target, Workload};
