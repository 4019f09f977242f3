//! Building a pool: the connection plan's refusals come before any token request or byte on the wire,
//! and the first token follows Azure's retry guidance, even when a whole fleet starts at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_emulator::{FakeIdentity, Fault, RateLimit, Trap};
use entra_postgres::{BuildError, ConfigError, EntraConfig, PoolBuilder};
use entra_token::{Env, HttpOptions, RefreshPolicy, RetryPolicy};

/// A builder whose token comes from the fake IMDS, for a server that is never connected to.
fn builder_for(fake: &FakeIdentity, connection_string: &str) -> PoolBuilder {
    PoolBuilder::new(
        EntraConfig::from_connection_string(connection_string)
            .env(Env::from_pairs([(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                fake.imds_authority(),
            )]))
            .http_options(
                HttpOptions::default()
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(10)),
            ),
    )
}

#[tokio::test]
async fn cleartext_to_a_remote_name_is_refused_before_a_token_is_fetched_or_a_byte_sent() {
    let fake = FakeIdentity::start().await.unwrap();
    let trap = Trap::start().unwrap();
    let err = builder_for(
        &fake,
        &format!(
            "host=db.example.com hostaddr=127.0.0.1 port={} sslmode=disable user=app",
            trap.port()
        ),
    )
    .build()
    .await
    .unwrap_err();
    assert!(
        matches!(&err, BuildError::Config(ConfigError::CleartextToken { host, .. }) if host == "db.example.com"),
        "{err:?}"
    );
    assert_eq!(fake.token_requests(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((trap.connections(), trap.bytes()), (0, 0));
}

/// Where a hostaddr connects decides, not what the host name says: a loopback name or a socket
/// directory with a remote hostaddr sends nothing (192.0.2.1 is TEST-NET-1, reachable nowhere).
#[tokio::test]
async fn a_remote_hostaddr_behind_a_loopback_or_socket_host_is_refused_before_a_token_is_fetched() {
    let fake = FakeIdentity::start().await.unwrap();
    for conninfo in [
        "host=localhost hostaddr=192.0.2.1 sslmode=disable user=app",
        "host=/var/run/postgresql hostaddr=192.0.2.1 user=app",
        "host=/var/run/postgresql hostaddr=192.0.2.1 sslmode=disable user=app",
    ] {
        let err = builder_for(&fake, conninfo).build().await.unwrap_err();
        let text = entra_postgres::report(&err);
        assert!(matches!(&err, BuildError::Config(_)), "{conninfo}: {text}");
        assert!(text.contains("192.0.2.1"), "{conninfo}: {text}");
    }
    assert_eq!(fake.token_requests(), 0);
}

#[tokio::test]
async fn a_fail_fast_build_rides_out_one_429_from_imds() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::throttled(1)]);
    let pool = builder_for(&fake, "host=db.example.com user=app")
        .build()
        .await
        .expect("a 429 is retried, not fatal");
    assert_eq!(pool.status().token.map(|t| t.fetches), Some(2));
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test]
async fn a_build_fails_at_once_when_the_machine_has_no_such_identity() {
    let fake = FakeIdentity::start().await.unwrap();
    let err = builder_for(&fake, "host=db.example.com user=app")
        .with_config(|c| c.managed_identity_client_id("00000000-0000-0000-0000-00000000dead"))
        .build()
        .await
        .unwrap_err();
    let d = entra_postgres::diagnose(&err);
    assert_eq!(d.cause, entra_postgres::Cause::IdentityNotFound, "{d}");
    // At once: one request, no retry (the count, not a clock, says so).
    assert_eq!(fake.token_requests(), 1);
}

/// Forty processes' pools start at the same moment on one node, whose IMDS throttles above 5 requests
/// per second. Every one builds within the retry budget, with the request count bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_starting_together_builds_through_imds_throttling() {
    const FLEET: usize = 40;
    const BUDGET: Duration = Duration::from_secs(70);
    let fake = Arc::new(FakeIdentity::start().await.unwrap());
    fake.set_rate_limit(Some(RateLimit::new(5, 1)));
    let started = Instant::now();
    let builds: Vec<_> = (0..FLEET)
        .map(|_| {
            let fake = fake.clone();
            tokio::spawn(async move {
                let pool = builder_for(&fake, "host=db.example.com user=app")
                    .with_config(|c| {
                        c.refresh_policy(
                            RefreshPolicy::default().retry(RetryPolicy::default().budget(BUDGET)),
                        )
                    })
                    .build()
                    .await;
                (pool.map(|p| p.status()), started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for build in builds {
        let (status, took) = build.await.expect("no panic");
        let status =
            status.unwrap_or_else(|e| panic!("a pool failed to build: {}", entra_postgres::report(&e)));
        assert!(status.token.is_some());
        slowest = slowest.max(took);
    }
    let requests = fake.token_requests();
    let throttled = fake.requests().iter().filter(|r| r.status == 429).count();
    eprintln!(
        "fleet start-up: {FLEET} pools built in {:.1} s (slowest), {requests} token requests, {throttled} of \
         them throttled (limit 5/s, Retry-After 1 s)",
        slowest.as_secs_f64()
    );
    // Every pool built, so every one finished within its own retry budget: no clock to compare.
    assert_eq!(requests - throttled, FLEET, "one token issued per pool");
    assert!(
        requests <= FLEET * 12,
        "the request count stays bounded: {requests} for {FLEET} pools"
    );
}
