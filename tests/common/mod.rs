//! What the facade's end-to-end tests share: an emulator with short-lived tokens, and a pool built from
//! its environment exactly as a service builds one from its own.
#![allow(dead_code)]

use std::time::Duration;

use entra_emulator::Emulator;
use entra_pool::postgres::PoolBuilder;
use entra_pool::token::{Env, RefreshPolicy};

/// An emulator whose tokens live `lifetime`.
pub async fn emulator(lifetime: Duration) -> Emulator {
    Emulator::builder()
        .token_lifetime(lifetime)
        .start()
        .await
        .expect("the emulator starts (is PostgreSQL installed? `bash .ci/setup`)")
}

/// `PoolBuilder::from_env()` reading the emulator's variables, scaled for tokens of a few seconds.
pub fn pool_builder(emulator: &Emulator) -> PoolBuilder {
    PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .refresh_policy(RefreshPolicy::short_lived())
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
}

/// Fails the test instead of hanging when `future` takes longer than `secs`.
pub async fn bounded<T>(secs: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}
