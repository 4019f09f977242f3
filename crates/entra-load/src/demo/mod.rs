//! The demo behind `entra-pg demo`: a pool under load through many token rotations, against the local
//! emulator.
//!
//! Tokens live a few seconds and connections retire after about two, so during the run every new
//! physical connection signs in with whatever token is current, the refresher renews it several times,
//! and the load never sees an error. [`DemoReport`] shows that with numbers, and its [`Verdict`] says
//! whether the run passed.
//!
//! - `config`: what to run; `run`: [`run`], the load, its progress and the failover drill;
//!   `report`: what it measured, the verdict and the summary table.

mod config;
mod report;
mod run;

pub use config::DemoConfig;
pub use report::{DemoReport, Verdict};
pub use run::run;
