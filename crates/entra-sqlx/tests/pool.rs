//! A sqlx pool through the emulator: token rotations under load, a refused token, an identity outage,
//! and a server whose certificate is not trusted. The tests wait for events (a token published, a
//! session signed in, a renewal failed) under hang bounds, and assert what happened and in which order,
//! never that it happened within some time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::{Claims, Emulator, Fault, TokenFingerprint, OSSRDBMS_RESOURCE};
use entra_sqlx::sqlx::postgres::PgPoolOptions;
use entra_sqlx::{EntraPgPool, EntraPgPoolBuilder};
use entra_testkit::{bounded, emulator, settled};
use entra_token::{Env, RefreshPolicy, TokenState};

/// Hang prevention only: far above what a passing step takes, even on a busy machine.
const HANG: Duration = Duration::from_secs(60);
/// Acquiring a connection waits at most this long: a hang, not a busy machine, would reach it.
const ACQUIRE_HANG: Duration = Duration::from_secs(60);

/// The emulator's environment, as a service on Azure would have it, minus `skip`.
fn builder(emulator: &Emulator, skip: &[&str], options: PgPoolOptions) -> EntraPgPoolBuilder {
    builder_with(emulator, skip, options, RefreshPolicy::short_lived())
}

fn builder_with(
    emulator: &Emulator,
    skip: &[&str],
    options: PgPoolOptions,
    policy: RefreshPolicy,
) -> EntraPgPoolBuilder {
    let env = emulator
        .env_vars()
        .into_iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()));
    let config = entra_testkit::config(emulator)
        .env(Env::from_pairs(env))
        .refresh_policy(policy);
    EntraPgPoolBuilder::new(config).pool_options(options.acquire_timeout(ACQUIRE_HANG))
}

async fn current_user(pool: &EntraPgPool) -> Result<String, entra_sqlx::sqlx::Error> {
    let mut connection = pool.acquire().await?;
    let (user,): (String,) = entra_sqlx::sqlx::query_as("SELECT current_user::text")
        .fetch_one(&mut *connection)
        .await?;
    Ok(user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_load_cost_no_query_and_one_token_request_each() {
    let emu = emulator(Duration::from_secs(4)).await;
    let pool = builder(
        &emu,
        &[],
        PgPoolOptions::new()
            .max_connections(4)
            .max_lifetime(Duration::from_millis(1500)),
    )
    .build()
    .await
    .expect("builds");
    let tokens = pool.tokens().expect("token mode").clone();
    let queries = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8i64 {
        let (pool, queries, stop) = (pool.clone(), queries.clone(), stop.clone());
        tasks.spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let v = task * 1_000_000 + n;
                let (doubled,): (i64,) = entra_sqlx::sqlx::query_as("SELECT $1::int8 * 2")
                    .bind(v)
                    .fetch_one(pool.pool())
                    .await
                    .map_err(|e| format!("query {n} of task {task}: {e}"))?;
                assert_eq!(doubled, v * 2);
                queries.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<(), String>(())
        });
    }
    // The load lasts until new sessions have signed in with eight of the refresher's tokens (so through
    // at least seven rotations), and 500 queries have run. A token replaced before any connection was
    // opened with it is not counted; the next one may be.
    let mut followed = BTreeSet::new();
    bounded(
        120,
        "new sessions signing in with eight of the refresher's tokens",
        async {
            while followed.len() < 8 || queries.load(Ordering::Relaxed) <= 500 {
                if let Some(token) = tokens.current() {
                    let fingerprint = TokenFingerprint::of(token.secret());
                    if emu.gate().sessions().iter().any(|s| s.token == fingerprint) {
                        followed.insert(token.generation());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = bounded(HANG.as_secs(), "the load to stop", tasks.join_next()).await {
        joined.expect("no panic").expect("no query failed");
    }
    let (requests, status) = settled(&emu, &tokens).await;
    assert!(
        status.refreshes >= 8,
        "eight tokens used, {} published",
        status.refreshes
    );
    assert_eq!(requests, status.refreshes, "one request per rotation");
    assert!(
        followed.len() >= 8,
        "new connections signed in with new tokens: {followed:?}"
    );
    assert!(queries.load(Ordering::Relaxed) > 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_and_the_acquire_retried_once() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let mut claims = Claims::new(emu.principal().object_id.clone(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emu.identity().issuer().sign(&claims);
    emu.identity().push_faults([Fault::token(
        &wrong_audience,
        Duration::from_secs(3600),
        OSSRDBMS_RESOURCE,
    )]);
    let pool = builder(&emu, &[], PgPoolOptions::new().max_connections(2))
        .build()
        .await
        .expect("builds");
    // Older than min_invalidate_interval (200 ms): a sleep never ends early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(current_user(&pool).await.expect("recovered"), emu.user());
    assert_eq!(emu.identity().token_requests(), 2, "exactly one refetch");
    assert_eq!(emu.gate().rejections().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outage_while_the_token_is_valid_goes_unnoticed() {
    // 30 s tokens (29–30 s left on arrival: expiry has whole seconds) are renewed at half-life, about 15 s
    // in (25 s before expiry would come sooner, but renewal never comes before half-life), and served
    // until 0.5 s before expiry: the renewals fail from then on, while the cached token stays usable for
    // about 14 s more, the window in which the queries below must run (a busy machine's stalls fit in it).
    let emu = emulator(Duration::from_secs(30)).await;
    let policy = RefreshPolicy::short_lived().refresh_margin(Duration::from_secs(25));
    let pool = builder_with(
        &emu,
        &[],
        PgPoolOptions::new()
            .max_connections(2)
            .max_lifetime(Duration::from_millis(300)),
        policy,
    )
    .build()
    .await
    .expect("builds");
    emu.identity().set_persistent_fault(Some(Fault::status(503)));
    let mut status = pool.tokens().expect("token mode").watch();
    let failing = bounded(
        HANG.as_secs(),
        "the refresher's renewals to fail during the outage",
        status.wait_for(|s| s.consecutive_failures >= 2),
    )
    .await
    .expect("the refresher is running")
    .clone();
    assert_eq!(
        failing.state,
        TokenState::Stale,
        "the renewals failed while the token was still served: {failing:?}"
    );
    assert_eq!(emu.identity().tokens_issued(), 1, "every renewal failed");
    let sessions_before = emu.gate().sessions().len();
    for _ in 0..6 {
        assert_eq!(current_user(&pool).await.expect("served"), emu.user());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The queries ran while the token was valid: after the last one the refresher still serves it, and
    // it could only have stopped by expiring (nothing can renew it during the outage).
    let after = pool.token_status();
    assert_eq!(
        after.state,
        TokenState::Stale,
        "the test outlived the token; it proves nothing: {after:?}"
    );
    let sessions = emu.gate().sessions();
    assert!(
        sessions.len() > sessions_before,
        "new connections signed in after renewals failed, with the cached token"
    );
    assert!(
        sessions.iter().all(|s| s.token == sessions[0].token),
        "one token throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_ca_is_not_trusted_and_sends_no_token() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // Without PGSSLROOTCERT only the built-in roots are trusted; the emulator's CA is not one of them.
    let pool = builder(&emu, &["PGSSLROOTCERT"], PgPoolOptions::new().max_connections(1))
        .build()
        .await
        .expect("builds (no connection yet)");
    let err = current_user(&pool).await.expect_err("refused");
    let d = entra_postgres::diagnose(&err);
    assert_eq!(
        d.cause,
        entra_postgres::Cause::UntrustedCertificate,
        "{err:?}: {d}"
    );
    assert_eq!(emu.gate().stats().accepted, 0);
    assert!(emu.gate().rejections().is_empty(), "no password reached the gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datestyle_refused_by_the_server_is_not_taken_for_a_refused_token() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // The words the old text rule took for a token refusal, in a parameter the server refuses after
    // sign-in (22023).
    let mut env = emu.env_vars();
    env.push(("PGOPTIONS".into(), "-c DateStyle=access\\ token".into()));
    let config = entra_testkit::config(&emu).env(Env::from_pairs(env));
    let pool = EntraPgPoolBuilder::new(config)
        .pool_options(PgPoolOptions::new().acquire_timeout(ACQUIRE_HANG))
        .build()
        .await
        .unwrap();
    // Older than min_invalidate_interval, so a refusal read as a token problem would refetch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = current_user(&pool).await.unwrap_err();
    assert!(err.to_string().contains("DateStyle"), "{err}");
    assert_eq!(emu.identity().token_requests(), 1, "no refetch");
}
