//! Shared set-up of the pool tests: a pool builder pointed at an Emulator, with short timings.
#![allow(dead_code)]

use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::PoolBuilder;
use entra_token::{Env, HttpOptions, RefreshPolicy};

/// Network settings for loopback: short, but far above what a healthy local request takes.
pub fn http() -> HttpOptions {
    HttpOptions::default()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
}

/// A pool builder configured only through the emulator's environment variables, as a user's service
/// would be (AZURE_POD_IDENTITY_AUTHORITY_HOST, PGHOST, PGSSLROOTCERT…).
pub fn builder(emulator: &Emulator) -> PoolBuilder {
    PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(http())
        .refresh_policy(RefreshPolicy::short_lived())
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .token_wait(Duration::from_secs(5))
}

/// Awaits `f`, failing the test (instead of hanging) after `secs` seconds.
pub async fn bounded<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}
