//! The bb8 pool through the emulator: token rotations under load, a refused token, and a server whose
//! certificate is not trusted. The tests wait for events (a token published, a session signed in)
//! under hang bounds, and assert what happened and in which order, never that it happened within some
//! time.

use std::time::Duration;

use entra_bb8::{EntraBb8Pool, EntraBb8PoolBuilder};
use entra_emulator::{Claims, Emulator, Fault, OSSRDBMS_RESOURCE};
use entra_testkit::{emulator, rotations_under_load};
use entra_token::Env;

/// The shortest load of the rotation tests: ten 3 s tokens' worth.
const LOAD: Duration = Duration::from_secs(30);

/// A bb8 pool of the emulator's connections whose waits only catch a hang.
fn builder(emulator: &Emulator) -> EntraBb8PoolBuilder {
    EntraBb8PoolBuilder::new(entra_testkit::config(emulator)).wait_timeout(Some(Duration::from_secs(30)))
}

async fn current_user(pool: &EntraBb8Pool) -> Result<String, String> {
    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| entra_postgres::report(&e))?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_load_cost_no_query_and_one_token_request_each() {
    let emu = emulator(Duration::from_secs(3)).await;
    let pool = builder(&emu)
        .max_size(4)
        .max_lifetime(Some(Duration::from_millis(500)))
        .build()
        .await
        .expect("builds");
    let tokens = pool.tokens().expect("token mode").clone();
    // Ten 3 s tokens' worth of load, and then until new sessions have signed in with eight of the
    // refresher's tokens and 500 queries have run.
    let run = rotations_under_load(&emu, &tokens, 8, LOAD, 8, 500, move |v| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
            let row = client
                .query_one("SELECT $1::int8 * 2", &[&v])
                .await
                .map_err(|e| entra_postgres::report(&e))?;
            Ok(row.get(0))
        }
    })
    .await;
    let used = run.tokens_used();
    eprintln!(
        "queries={} failed={} tokens={} requests={} sessions={} tokens used={}",
        run.queries,
        run.failed,
        run.status.refreshes,
        run.requests,
        run.sessions.len(),
        used.len()
    );
    assert_eq!(run.failed, 0, "no query may fail");
    assert!(run.queries > 500);
    assert!(run.status.refreshes >= 8, "eight tokens used: {:?}", run.status);
    assert_eq!(
        run.requests, run.status.refreshes,
        "one token request per rotation"
    );
    assert!(
        used.is_subset(&run.published),
        "every session signed in with a token the refresher published"
    );
    assert!(
        used.len() >= 8,
        "new connections followed the rotations: {} tokens used",
        used.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_once_and_the_connection_opens() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // The endpoint first hands out a token the server refuses (wrong audience), then good ones.
    let mut claims = Claims::managed_identity(emu.principal(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emu.identity().issuer().sign(&claims);
    emu.identity().push_faults([Fault::token(
        &wrong_audience,
        Duration::from_secs(3600),
        OSSRDBMS_RESOURCE,
    )]);
    let pool = builder(&emu).max_size(2).build().await.expect("builds");
    // Older than min_invalidate_interval (200 ms): a sleep never ends early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(current_user(&pool).await, Ok(emu.user().to_string()));
    assert_eq!(emu.identity().token_requests(), 2, "exactly one refetch");
    assert_eq!(emu.gate().rejections().len(), 1, "one refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_ca_is_not_trusted_and_sends_no_token() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // Without PGSSLROOTCERT only the built-in roots are trusted; the emulator's CA is not one of them.
    let env = emu.env_vars().into_iter().filter(|(k, _)| k != "PGSSLROOTCERT");
    let config = entra_testkit::config(&emu).env(Env::from_pairs(env));
    let pool = EntraBb8PoolBuilder::new(config)
        .wait_timeout(Some(Duration::from_secs(2)))
        .pool_builder(|b| b.retry_connection(false))
        .build()
        .await
        .expect("builds (no connection yet)");
    let opened = pool.dedicated_connection().await;
    let err = opened.expect_err("refused");
    let d = entra_postgres::diagnose(&err);
    assert_eq!(
        d.cause,
        entra_postgres::Cause::UntrustedCertificate,
        "{err:?}: {d}"
    );
    assert_eq!(emu.gate().stats().accepted, 0);
    assert!(emu.gate().rejections().is_empty(), "no password reached the gate");
}

#[tokio::test]
async fn a_pool_of_no_connections_is_refused_with_an_error_not_a_panic() {
    let err = EntraBb8PoolBuilder::new(entra_postgres::EntraConfig::from_env())
        .max_size(0)
        .wait_timeout(Some(Duration::ZERO))
        .build()
        .await
        .expect_err("max_size(0) is refused");
    assert!(
        matches!(
            &err,
            entra_postgres::BuildError::Config(entra_postgres::ConfigError::Invalid { origin, .. })
                if origin == "EntraBb8PoolBuilder::max_size"
        ),
        "{err:?}"
    );
}
