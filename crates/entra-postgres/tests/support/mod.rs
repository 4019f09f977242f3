//! Shared set-up of the pool tests: a pool builder pointed at an Emulator, with short timings.
#![allow(dead_code)]

use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::PoolBuilder;
use entra_token::{Env, HttpOptions, RefreshPolicy, StartMode};

/// Network settings for loopback: short, but far above what a healthy local request takes.
pub fn http() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    }
}

/// A refresh policy scaled for tokens that live a few seconds.
pub fn short_policy() -> RefreshPolicy {
    RefreshPolicy::default()
        .expiry_margin(Duration::from_millis(500))
        .refresh_margin(Duration::from_secs(1))
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .get_timeout(Duration::from_secs(5))
        .min_invalidate_interval(Duration::from_millis(200))
        .start_mode(StartMode::FailFast)
}

/// A pool builder configured only through the emulator's environment variables, as a user's service
/// would be (AZURE_POD_IDENTITY_AUTHORITY_HOST, PGHOST, PGSSLROOTCERT…).
pub fn builder(emulator: &Emulator) -> PoolBuilder {
    PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(http())
        .refresh_policy(short_policy())
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
