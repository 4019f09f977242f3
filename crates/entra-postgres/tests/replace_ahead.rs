//! Replace-ahead: with spares signed in in the background, connections retiring under load are replaced
//! without any `get()` waiting for a sign-in (the gate adds a sign-in delay, as Azure's sign-in costs).

mod support;

use std::time::{Duration, Instant};

use entra_emulator::Emulator;
use support::{bounded, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_connections_are_replaced_by_spares_signed_in_ahead() {
    let emulator = Emulator::builder()
        .sign_in_delay(Duration::from_millis(100))
        .start()
        .await
        .expect("emulator");
    let pool = builder(&emulator)
        .max_size(4)
        .max_lifetime(Some(Duration::from_millis(1500)))
        .replace_ahead(4)
        .build()
        .await
        .expect("pool");
    // Let the spares sign in before the load starts.
    let ready = Instant::now();
    while pool.status().connections.spares_ready < 4 {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "spares never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = pool.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
                client
                    .simple_query("SELECT 1")
                    .await
                    .map_err(|e| entra_postgres::report(&e))?;
                drop(client);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = bounded(60, "the load", tasks.join_next()).await {
        joined.expect("no panic").expect("no failed query");
    }
    let counts = pool.status().connections;
    assert_eq!(
        counts.opened_in_checkout, 0,
        "no get() signed in itself: {counts:?}"
    );
    assert!(
        counts.taken_ahead >= 8,
        "8 s of 1.5 s lifetimes retired connections repeatedly, all replaced from spares: {counts:?}"
    );
    assert_eq!(
        emulator.gate().sessions().len() as u64,
        counts.opened_ahead,
        "every sign-in was a spare's"
    );
}
