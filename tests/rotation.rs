//! A service's pool under load through many token rotations: no query fails, and the identity endpoint
//! sees one request per rotation, however many connections sign in.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_under_load_outlives_every_token_with_one_request_per_rotation() {
    let emulator = common::emulator(Duration::from_secs(3)).await;
    let pool = common::pool_builder(&emulator)
        .max_size(4)
        .max_lifetime(Some(Duration::from_millis(1500)))
        .build()
        .await
        .expect("the pool builds");
    let built = Instant::now();
    let queries = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16i64 {
        let (pool, queries) = (pool.clone(), queries.clone());
        tasks.spawn(async move {
            let mut n = 0i64;
            while Instant::now() < deadline {
                let client = pool.get().await.map_err(|e| entra_pool::postgres::report(&e))?;
                let row = client
                    .query_one("SELECT $1::int8 * 2", &[&(task * 1_000_000 + n)])
                    .await
                    .map_err(|e| entra_pool::postgres::report(&e))?;
                assert_eq!(row.get::<_, i64>(0), (task * 1_000_000 + n) * 2);
                queries.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = common::bounded(60, "the load", tasks.join_next()).await {
        joined.expect("no task panicked").expect("no query failed");
    }
    let status = pool.status();
    let token = status.token.expect("token mode");
    let rotations = token.refreshes - 1;
    assert!(
        rotations >= 5,
        "20 s of 3 s tokens renew at least 5 times, saw {rotations}"
    );
    // Renewals follow the token's lifetime, not the connections. IMDS gives expiry in whole seconds, so
    // a 3 s token has 2–3 s left on arrival; it renews 1 s before expiry but never before half-life,
    // up to 10 % earlier (jitter): at most one renewal per 0.9 s, however many connections sign in.
    let most = (built.elapsed().as_secs_f64() / 0.9).ceil() as u64 + 1;
    assert!(
        rotations <= most,
        "{rotations} renewals in {:?}: more than the lifetime allows ({most}); connections must not cause fetches",
        built.elapsed()
    );
    assert_eq!(
        emulator.identity().token_requests() as u64,
        token.refreshes,
        "one token request per rotation (plus the first)"
    );
    let sessions = emulator.gate().sessions().len();
    assert!(
        sessions as u64 > token.refreshes,
        "connections were re-created on new tokens: {sessions} sessions"
    );
    assert!(queries.load(Ordering::Relaxed) > 1000);
}
