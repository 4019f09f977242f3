//! The bb8 pool through the emulator: token rotations under load, a refused token, and a server whose
//! certificate is not trusted. The tests wait for events (a token published, a session signed in)
//! under hang bounds, and assert what happened and in which order, never that it happened within some
//! time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_bb8::{EntraBb8Pool, EntraBb8PoolBuilder};
use entra_emulator::{Claims, Emulator, Fault, TokenFingerprint, OSSRDBMS_RESOURCE};
use entra_testkit::{bounded, emulator, settled, until};
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

    // Every token the refresher publishes, as the gate fingerprints it.
    let published = Arc::new(parking_lot_free::Set::default());
    published.insert(TokenFingerprint::of(tokens.current().expect("a token").secret()));
    let watcher = {
        let (tokens, published) = (tokens.clone(), published.clone());
        let mut changes = tokens.watch();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if let Some(t) = tokens.current() {
                    published.insert(TokenFingerprint::of(t.secret()));
                }
            }
        })
    };

    let queries = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8i64 {
        let (pool, queries, failed, stop) = (pool.clone(), queries.clone(), failed.clone(), stop.clone());
        tasks.spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let v = task * 1_000_000 + n;
                let result = async {
                    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
                    let row = client
                        .query_one("SELECT $1::int8 * 2", &[&v])
                        .await
                        .map_err(|e| entra_postgres::report(&e))?;
                    Ok::<i64, String>(row.get(0))
                };
                match bounded(60, "a query", result).await {
                    Ok(doubled) if doubled == v * 2 => queries.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("query {n} of task {task} failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                n += 1;
            }
        });
    }
    // The load lasts 30 s (ten 3 s tokens), and then until new sessions have signed in with eight of the
    // refresher's tokens and 500 queries have run: what the assertions below need has happened, however
    // slow the machine; the bound only catches a hang.
    let started = Instant::now();
    until(
        180,
        "30 s of load, sessions signed in with eight tokens, and 500 queries",
        || {
            let used: HashSet<_> = emu.gate().sessions().into_iter().map(|s| s.token).collect();
            started.elapsed() >= LOAD && used.len() >= 8 && queries.load(Ordering::Relaxed) > 500
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = bounded(60, "the load to stop", tasks.join_next()).await {
        joined.expect("no panic");
    }
    watcher.abort();

    let (requests, status) = settled(&emu, &tokens).await;
    let sessions = emu.gate().sessions();
    let used: HashSet<_> = sessions.iter().map(|s| s.token.clone()).collect();
    eprintln!(
        "queries={} failed={} tokens={} requests={requests} sessions={} tokens used={}",
        queries.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        status.refreshes,
        sessions.len(),
        used.len()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no query may fail");
    assert!(queries.load(Ordering::Relaxed) > 500);
    assert!(status.refreshes >= 8, "eight tokens used: {status:?}");
    assert_eq!(requests, status.refreshes, "one token request per rotation");
    assert!(
        sessions.iter().all(|s| published.contains(&s.token)),
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

/// A set shared between tasks (std's Mutex: the test needs nothing faster).
mod parking_lot_free {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use entra_emulator::TokenFingerprint;

    #[derive(Default)]
    pub(crate) struct Set(Mutex<HashSet<TokenFingerprint>>);

    impl Set {
        pub(crate) fn insert(&self, fingerprint: TokenFingerprint) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(fingerprint);
        }

        pub(crate) fn contains(&self, fingerprint: &TokenFingerprint) -> bool {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(fingerprint)
        }
    }
}
