//! A service's pool under load through many token rotations: no query fails, and the identity endpoint
//! sees one request per rotation, however many connections sign in. The load lasts until events have
//! happened (rotations, sessions signed in with new tokens, queries), not for a span of wall clock, and
//! the assertions are on the order of events: a renewal never starts before the refresher planned it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::TokenFingerprint;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_under_load_outlives_every_token_with_one_request_per_rotation() {
    let emulator = entra_testkit::emulator(Duration::from_secs(3)).await;
    let pool = entra_testkit::pool_builder(&emulator)
        .max_size(4)
        .max_lifetime(Some(Duration::from_millis(1500)))
        .build()
        .await
        .expect("the pool builds");
    let tokens = pool.tokens().expect("token mode").clone();

    // Renewals follow the token's lifetime, not the connections: each fetch the refresher starts comes
    // no earlier than the renewal it planned when it published the token before. A watcher sees a fetch
    // after it began, and may miss a status (it sees the latest), so it can overlook an early fetch but
    // never report a timely one as early.
    let early_fetches = {
        let mut rx = tokens.watch();
        tokio::spawn(async move {
            let (mut early, mut checked) = (Vec::new(), 0);
            let (mut fetches, mut planned) = {
                let s = rx.borrow_and_update();
                (s.fetches, s.next_fetch)
            };
            while rx.changed().await.is_ok() {
                let seen_at = Instant::now();
                let s = rx.borrow_and_update();
                if s.fetches > fetches {
                    if let Some(plan) = planned {
                        checked += 1;
                        if seen_at < plan {
                            early.push((s.fetches, plan - seen_at));
                        }
                    }
                    fetches = s.fetches;
                }
                if s.next_fetch.is_some() {
                    planned = s.next_fetch;
                }
            }
            (early, checked)
        })
    };

    let queries = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16i64 {
        let (pool, queries, stop) = (pool.clone(), queries.clone(), stop.clone());
        tasks.spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
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
    // The load lasts until new sessions have signed in with eleven of the refresher's tokens (so through
    // at least ten rotations) and 1000 queries have run. A token replaced before any connection was opened
    // with it is not counted; the next one may be.
    let mut followed = BTreeSet::new();
    entra_testkit::bounded(
        120,
        "new sessions signing in with eleven of the refresher's tokens",
        async {
            while followed.len() < 11 || queries.load(Ordering::Relaxed) <= 1000 {
                if let Some(token) = tokens.current() {
                    let fingerprint = TokenFingerprint::of(token.secret());
                    if emulator.gate().sessions().iter().any(|s| s.token == fingerprint) {
                        followed.insert(token.generation());
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = entra_testkit::bounded(60, "the load to stop", tasks.join_next()).await {
        joined.expect("no task panicked").expect("no query failed");
    }

    let (requests, token) = entra_testkit::settled(&emulator, &tokens).await;
    let rotations = token.refreshes - 1;
    assert!(rotations >= 10, "the load spanned ten rotations, saw {rotations}");
    assert!(
        emulator.gate().rejections().is_empty(),
        "no token was refused, so no connection asked for a new one"
    );
    // The watcher ends when the refresher does, once the last handle on it is gone.
    drop((tokens, pool));
    let (early, checked) = entra_testkit::bounded(60, "the watcher to end with the refresher", early_fetches)
        .await
        .expect("the watcher ran to the end");
    assert!(checked > 0, "the watcher saw renewals start");
    assert!(
        early.is_empty(),
        "fetches started before their planned renewal (fetch number, how early): {early:?}; connections must not cause fetches"
    );
    assert_eq!(
        requests, token.refreshes,
        "one token request per rotation (plus the first)"
    );
    assert!(
        followed.len() >= 11,
        "connections were re-created on new tokens: {followed:?}"
    );
    assert!(queries.load(Ordering::Relaxed) > 1000);
}
