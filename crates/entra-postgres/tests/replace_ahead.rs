//! Replace-ahead: with spares signed in in the background, connections retiring under load are replaced
//! without any `get()` waiting for a sign-in (the gate adds a sign-in delay, as Azure's sign-in costs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::EntraPool;
use entra_testkit::{bounded, pool_builder};

/// `tasks` tasks doing `SELECT 1` in a loop until the pool has taken `taken_ahead` connections from its
/// spares in all (an event, however long a loaded machine takes to get there); any failure fails the
/// test. The pool's counts are watched apart from the load, which runs as a service's would.
async fn load(pool: &EntraPool, tasks: usize, taken_ahead: u64) {
    let done = Arc::new(AtomicBool::new(false));
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (pool, done) = (pool.clone(), done.clone());
        running.spawn(async move {
            while !done.load(Ordering::Relaxed) {
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
    entra_testkit::until(120, "the hand-overs", || {
        pool.status().connections.taken_ahead >= taken_ahead
    })
    .await;
    done.store(true, Ordering::Relaxed);
    while let Some(joined) = bounded(120, "the load", running.join_next()).await {
        joined.expect("no panic").expect("no failed query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_connections_are_replaced_by_spares_signed_in_ahead() {
    let emulator = Emulator::builder()
        .sign_in_delay(Duration::from_millis(100))
        .start()
        .await
        .expect("emulator");
    let pool = pool_builder(&emulator)
        .max_size(4)
        // Four spares of 100 ms sign-ins refill in well under a lifetime, even on a third of a core.
        .max_lifetime(Some(Duration::from_secs(3)))
        .replace_ahead(4)
        .build()
        .await
        .expect("pool");
    // Let the spares sign in before the load starts.
    bounded(60, "the spares getting ready", async {
        while pool.status().connections.spares_ready < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Eight hand-overs: each of the four connections retired (3 s lifetimes) twice at least.
    load(&pool, 4, 8).await;
    let counts = pool.status().connections;
    assert_eq!(
        counts.opened_in_checkout, 0,
        "no get() signed in itself: {counts:?}"
    );
    assert!(
        counts.taken_ahead >= 8,
        "retired connections were replaced from spares: {counts:?}"
    );
    // Every sign-in was a spare's: the gate's count and the spares' agree once no spare is half-way (the
    // gate records a session before the pool counts the spare it becomes).
    entra_testkit::until(60, "the gate's sign-ins and the spares' count to agree", || {
        emulator.gate().sessions().len() as u64 == pool.status().connections.opened_ahead
    })
    .await;
    assert_eq!(pool.status().connections.opened_in_checkout, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_together_hand_over_to_fewer_spares_one_after_another() {
    // 8 connections opened at once retire at random within ±10 % of 20 s, so some within one 300 ms
    // sign-in of each other, more than two spares can replace at their lifetimes. Two spares keep up only
    // because connections near their end (the last 15 %, 3 s) retire early, one per spare opened. The
    // margin is wide, so that a busy machine does not decide the outcome: 8 sign-ins one after another
    // take about 2.5 s of the 7 s from the first early window to the last lifetime (a third of a core
    // slows the CPU part of a sign-in, not the gate's 300 ms).
    let emulator = Emulator::builder()
        .sign_in_delay(Duration::from_millis(300))
        .start()
        .await
        .expect("emulator");
    let pool = pool_builder(&emulator)
        .max_size(8)
        .max_lifetime(Some(Duration::from_secs(20)))
        .replace_ahead(2)
        .build()
        .await
        .expect("pool");
    // Eight checkouts held together: eight connections opened at once.
    let all_held = std::sync::Arc::new(tokio::sync::Barrier::new(8));
    let mut filling = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (pool, all_held) = (pool.clone(), all_held.clone());
        filling.spawn(async move {
            let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
            all_held.wait().await;
            drop(client);
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = bounded(60, "filling the pool", filling.join_next()).await {
        joined.expect("no panic").expect("the pool fills");
    }
    let filled = pool.status().connections;
    // Until every connection of the first fill has been replaced from the spares.
    load(&pool, 8, filled.taken_ahead + 8).await;
    let counts = pool.status().connections;
    assert_eq!(
        counts.opened_in_checkout, filled.opened_in_checkout,
        "no get() signed in itself after the pool filled: {counts:?}"
    );
    assert!(
        counts.retired_early >= 4,
        "connections near their end handed over early: {counts:?}"
    );
    assert!(
        counts.taken_ahead >= filled.taken_ahead + 8,
        "every connection of the first fill was replaced from the spares: {counts:?}"
    );
}
