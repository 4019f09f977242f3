//! Replace-ahead: with spares signed in in the background, connections retiring under load are replaced
//! without any `get()` waiting for a sign-in (the gate adds a sign-in delay, as Azure's sign-in costs).
//!
//! Whether spares keep up is a race in real time between their sign-ins and the connections' lifetimes,
//! and a sign-in's CPU part (TLS, the token's check, SCRAM upstream, in a debug build) is many times
//! slower on a third of a core than on an idle one. So each test first measures how long a spare takes
//! to sign in on this machine now ([`sign_in_pace`]) and sets the lifetimes to a multiple of it: a busy
//! machine runs the same race slower, with the same margin. With fixed lifetimes (20 s for eight
//! connections and two spares, the first version) one `get()` in three runs signed in itself, pinned to
//! one core beside two busy loops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_emulator::Emulator;
use entra_postgres::EntraPool;
use entra_testkit::{bounded, pool_builder};

/// Rounds of `tasks` checkouts doing `SELECT 1`, every task holding its connection until all do, 50 ms
/// apart, until the pool has taken `taken_ahead` connections from its spares in all (an event, however
/// long a loaded machine takes to get there), within `secs`; any failure fails the test.
///
/// With as many tasks as the pool's `max_size`, every connection is checked out in every round, so a
/// connection retired in a round (at its lifetime or early) is replaced in that round and takes a spare
/// then. Tasks that each loop on their own would leave that to chance: deadpool replaces a retired
/// connection only when no idle one is left, so the pool would shrink while the spares stay ready, and a
/// later burst of checkouts would want more new connections than there are spares. The pause between
/// rounds leaves the CPU to the spares' sign-ins, measured without load (a checkout every 5 ms per task,
/// the first version, took most of a third of a core).
async fn load(pool: &EntraPool, tasks: usize, taken_ahead: u64, secs: u64) {
    bounded(secs, "the hand-overs", async {
        while pool.status().connections.taken_ahead < taken_ahead {
            let all_held = Arc::new(tokio::sync::Barrier::new(tasks));
            let mut round = tokio::task::JoinSet::new();
            for _ in 0..tasks {
                let (pool, all_held) = (pool.clone(), all_held.clone());
                round.spawn(async move {
                    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
                    client
                        .simple_query("SELECT 1")
                        .await
                        .map_err(|e| entra_postgres::report(&e))?;
                    all_held.wait().await;
                    Ok::<(), String>(())
                });
            }
            while let Some(joined) = round.join_next().await {
                joined.expect("no panic").expect("no failed query");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A hang bound for `load`: a loaded machine's lifetimes are longer (`sign_in_pace`). Replacing every
/// connection twice takes two of them; the bound allows three, plus 120 s for a slow start.
fn hang_bound(lifetime: Duration) -> u64 {
    120 + 3 * lifetime.as_secs()
}

/// How long one spare takes to sign in on this machine now: `spares` of them opened one after another
/// (as the pool's warmer opens them) by a pool of its own, which is then dropped. Its sessions stay in
/// the gate's log: the caller counts from the returned length on.
async fn sign_in_pace(emulator: &Emulator, spares: usize) -> (Duration, usize) {
    let pool = pool_builder(emulator)
        .max_size(1)
        .replace_ahead(spares)
        .build()
        .await
        .expect("pool");
    let started = Instant::now();
    entra_testkit::until(120, "the measuring pool's spares", || {
        pool.status().connections.spares_ready >= spares
    })
    .await;
    let pace = started.elapsed() / spares as u32;
    // Its warmer opens nothing more (its spares are all ready), so the gate's log is complete here.
    let sessions = emulator.gate().sessions().len();
    drop(pool);
    (pace, sessions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_connections_are_replaced_by_spares_signed_in_ahead() {
    let emulator = Emulator::builder()
        .sign_in_delay(Duration::from_millis(100))
        .start()
        .await
        .expect("emulator");
    // The first four checkouts take the four spares at once, so their connections retire together, from
    // 76 % of a lifetime on (its last 15 % less 10 % jitter); by then the warmer must have signed in four
    // more, one after another. A lifetime of 16 sign-ins leaves three times that; 3 s at least.
    let (pace, earlier_sessions) = sign_in_pace(&emulator, 4).await;
    let lifetime = (pace * 16).max(Duration::from_secs(3));
    eprintln!("a spare signs in in {pace:?} here: lifetime {lifetime:?}");
    let pool = pool_builder(&emulator)
        .max_size(4)
        .max_lifetime(Some(lifetime))
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
    // Eight hand-overs: each of the four connections retired twice at least.
    load(&pool, 4, 8, hang_bound(lifetime)).await;
    let counts = pool.status().connections;
    assert_eq!(
        counts.opened_in_checkout, 0,
        "no get() signed in itself: {counts:?}; a spare signs in in {pace:?} here, lifetime {lifetime:?}"
    );
    assert!(
        counts.taken_ahead >= 8,
        "retired connections were replaced from spares: {counts:?}"
    );
    // Every sign-in was a spare's: the gate's count and the spares' agree once no spare is half-way (the
    // gate records a session before the pool counts the spare it becomes).
    entra_testkit::until(60, "the gate's sign-ins and the spares' count to agree", || {
        (emulator.gate().sessions().len() - earlier_sessions) as u64 == pool.status().connections.opened_ahead
    })
    .await;
    assert_eq!(
        pool.status().connections.opened_in_checkout,
        0,
        "a spare signs in in {pace:?} here; lifetime {lifetime:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_together_hand_over_to_fewer_spares_one_after_another() {
    // 8 connections opened at once retire at random within ±10 % of one lifetime, four times as many as
    // the spares. Two spares keep up because connections near their end (the last 15 %) retire early, one
    // per spare opened (the test checks that at least four did). Early hand-overs take whichever
    // connection near its end is checked out first, and wait while fewer than two spares are ready, so
    // eight of them, one sign-in apart, must fit in the early windows of the lowest lifetimes: 13.5 % of
    // a lifetime when all eight fall at the low end. A lifetime of 180 sign-ins leaves three times the
    // eight sign-ins there; 20 s at least. (At a fixed 20 s with 300 ms sign-ins, the first version left
    // barely one time: it failed on a third of a core.)
    let emulator = Emulator::builder()
        .sign_in_delay(Duration::from_millis(100))
        .start()
        .await
        .expect("emulator");
    let (pace, _) = sign_in_pace(&emulator, 2).await;
    let lifetime = (pace * 180).max(Duration::from_secs(20));
    eprintln!("a spare signs in in {pace:?} here: lifetime {lifetime:?}");
    let pool = pool_builder(&emulator)
        .max_size(8)
        .max_lifetime(Some(lifetime))
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
    load(&pool, 8, filled.taken_ahead + 8, hang_bound(lifetime)).await;
    let counts = pool.status().connections;
    assert_eq!(
        counts.opened_in_checkout, filled.opened_in_checkout,
        "no get() signed in itself after the pool filled: {counts:?}; a spare signs in in {pace:?} \
         here, lifetime {lifetime:?}"
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
