//! What the facade's end-to-end tests share: an emulator with short-lived tokens, and a pool built from
//! its environment exactly as a service builds one from its own.
#![allow(dead_code)]

use std::time::Duration;

use entra_emulator::Emulator;
use entra_pool::postgres::PoolBuilder;
use entra_pool::token::{Env, RefreshPolicy, TokenHandle, TokenStatus};

/// An emulator whose tokens live `lifetime`.
pub async fn emulator(lifetime: Duration) -> Emulator {
    Emulator::builder()
        .token_lifetime(lifetime)
        .start()
        .await
        .expect("the emulator starts (is PostgreSQL installed? `bash .ci/setup`)")
}

/// `PoolBuilder::from_env()` reading the emulator's variables, scaled for tokens of a few seconds. Its
/// waits for a connection are hang bounds: far above what a busy machine needs.
pub fn pool_builder(emulator: &Emulator) -> PoolBuilder {
    PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .refresh_policy(RefreshPolicy::short_lived())
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(30)))
}

/// Fails the test instead of hanging when `future` takes longer than `secs`.
pub async fn bounded<T>(secs: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

/// The identity endpoint's request count and the refresher's status, read at a moment when no fetch was
/// in flight: the status has the next fetch planned (none under way), and no request arrived between the
/// two readings of the count around it. A renewal in flight would otherwise be counted by one and not yet by
/// the other.
pub async fn settled(emulator: &Emulator, tokens: &TokenHandle) -> (u64, TokenStatus) {
    bounded(30, "a moment with no token fetch in flight", async {
        loop {
            let before = emulator.identity().token_requests();
            let status = tokens.status();
            let after = emulator.identity().token_requests();
            if before == after && status.next_fetch.is_some() {
                return (after as u64, status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
