//! The one way the tests point a pool at an [`Emulator`]: through the environment variables the
//! emulator exports, as a service on Azure would be configured, with timings scaled to tokens that live
//! a few seconds.

use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::{EntraConfig, PoolBuilder};
use entra_token::{Env, HttpOptions, RefreshPolicy, TokenHandle, TokenStatus};

/// An emulator whose tokens live `lifetime`.
pub async fn emulator(lifetime: Duration) -> Emulator {
    Emulator::builder()
        .token_lifetime(lifetime)
        .start()
        .await
        .expect("the emulator starts (is PostgreSQL installed? `bash .ci/setup`)")
}

/// Network settings for loopback: far above what a local request takes even on a third of a core (a
/// request timed out client-side but served would count as a second token request).
pub fn http() -> HttpOptions {
    HttpOptions::default()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
}

/// `EntraConfig::from_env()` reading only the emulator's variables (AZURE_POD_IDENTITY_AUTHORITY_HOST,
/// PGHOST, PGSSLROOTCERT…), with the refresh policy for short-lived tokens: the one configuration every
/// front's tests start from (the pool, the multiplexed pool, the proxy, the sqlx pool).
pub fn config(emulator: &Emulator) -> EntraConfig {
    EntraConfig::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(http())
        .refresh_policy(RefreshPolicy::short_lived())
        .token_wait(Duration::from_secs(5))
}

/// A pool of [`config`]'s connections whose waits only catch a hang (60 s for a connection, far above
/// what a busy machine needs).
pub fn pool_builder(emulator: &Emulator) -> PoolBuilder {
    PoolBuilder::new(config(emulator))
        .wait_timeout(Some(Duration::from_secs(60)))
        .create_timeout(Some(Duration::from_secs(60)))
}

/// The identity endpoint's request count and the refresher's status, read at a moment when no fetch was
/// in flight: the status has the next fetch planned (none under way), and no request arrived between the
/// two readings of the count around it. A renewal in flight would otherwise be counted by one and not yet
/// by the other.
pub async fn settled(emulator: &Emulator, tokens: &TokenHandle) -> (u64, TokenStatus) {
    crate::bounded(60, "a moment with no token fetch in flight", async {
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
