//! The multiplexed pool: many tasks on a few connections through token rotations, a replacement that
//! prepares its predecessor's statements, a server restart that fails only what was in flight, and
//! PgBouncer in transaction mode.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::{Emulator, PoolMode};
use entra_postgres::{MultiplexError, MultiplexedPool};
use entra_testkit::{bounded, pool_builder, settled, until};
use tokio_postgres::types::Type;

/// `tasks` tasks checking `SELECT $1::int8 * 2` until `done()`; (acknowledged, errors).
async fn load_until(
    pool: &MultiplexedPool,
    tasks: i64,
    done: impl Fn() -> bool + Clone + Send + Sync + 'static,
) -> (u64, u64) {
    load_counting(pool, tasks, Arc::new(AtomicU64::new(0)), done).await
}

/// [`load_until`], counting acknowledged statements in `ok` as they come.
async fn load_counting(
    pool: &MultiplexedPool,
    tasks: i64,
    ok: Arc<AtomicU64>,
    done: impl Fn() -> bool + Clone + Send + Sync + 'static,
) -> (u64, u64) {
    let failed = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (pool, ok, failed, done) = (pool.clone(), ok.clone(), failed.clone(), done.clone());
        set.spawn(async move {
            let mut n = 0i64;
            while !done() {
                let v = task * 1_000_000 + n;
                match pool.query_one("SELECT $1::int8 * 2", &[&v]).await {
                    Ok(row) => {
                        assert_eq!(
                            row.get::<_, i64>(0),
                            v * 2,
                            "a pipelined answer went to its caller"
                        );
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 1;
            }
        });
    }
    while let Some(joined) = bounded(180, "the load", set.join_next()).await {
        joined.expect("no task panicked");
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_two_connections_through_twenty_rotations_without_an_error() {
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(2))
        .start()
        .await
        .expect("emulator");
    let pool = pool_builder(&emulator)
        .max_size(1)
        .max_lifetime(Some(Duration::from_millis(1200)))
        .build_multiplexed(2)
        .await
        .expect("multiplexed pool");
    let sessions_before = emulator.gate().sessions().len();
    // Until twenty rotations went by and replacements signed in with 15 of those tokens: events, however
    // long a loaded machine takes for them (a pool stuck on one token never gets there).
    let tokens = pool.checkout().tokens().expect("token mode").clone();
    let distinct_tokens = |gate: &entra_emulator::EntraGate| {
        gate.sessions()[sessions_before..]
            .iter()
            .map(|s| s.token.clone())
            .collect::<HashSet<_>>()
            .len()
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = async {
        while tokens.generation() < 21 || distinct_tokens(emulator.gate()) < 15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
    };
    let done = {
        let stop = stop.clone();
        move || stop.load(Ordering::Relaxed)
    };
    let ((ok, failed), ()) = tokio::join!(load_until(&pool, 32, done), monitor);
    assert_eq!(failed, 0, "no statement failed ({ok} acknowledged)");
    // Read at a moment with no renewal in flight: the refresher keeps rotating 2 s tokens meanwhile.
    let (requests, token) = settled(&emulator, &tokens).await;
    assert!(
        token.refreshes >= 21,
        "≥ 20 rotations, saw {} tokens",
        token.refreshes
    );
    assert_eq!(requests, token.refreshes, "one request per rotation");
    // Each replacement signed in with the token current at its creation: consecutive sessions carry a
    // new token as rotations go by, and none was refused.
    let sessions = emulator.gate().sessions();
    let tokens: HashSet<_> = sessions[sessions_before..]
        .iter()
        .map(|s| s.token.clone())
        .collect();
    assert!(
        tokens.len() >= 15,
        "connections opened with {} distinct tokens",
        tokens.len()
    );
    assert!(
        emulator.gate().rejections().is_empty(),
        "no stale token was offered"
    );
    assert!(ok > 2000, "pipelined throughput: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_prepares_its_predecessors_statements_before_it_takes_over() {
    let emulator = Emulator::start().await.expect("emulator");
    let pool = pool_builder(&emulator)
        .max_size(1)
        // Long enough that no second replacement comes between two polls, however busy the machine.
        .max_lifetime(Some(Duration::from_secs(10)))
        .build_multiplexed(1)
        .await
        .expect("multiplexed pool");
    // The backend serving a statement, and the statements prepared there, read by one statement.
    let backend = |pool: MultiplexedPool| async move {
        let row = pool
            .query_one(
                "SELECT pg_backend_pid(), coalesce(array_agg(statement::text), '{}') \
                 FROM pg_prepared_statements",
                &[],
            )
            .await
            .expect("the backend and its statements");
        (row.get::<_, i32>(0), row.get::<_, Vec<String>>(1))
    };
    let (first, _) = backend(pool.clone()).await;
    for sql in ["SELECT 'cached one'::text", "SELECT 'cached two'::text"] {
        pool.query_one(sql, &[]).await.expect("a cached statement");
    }
    // Once another backend serves, the statements used only on its predecessor are already prepared there.
    let prepared: HashSet<String> = bounded(60, "a replacement connection", async {
        loop {
            let (pid, prepared) = backend(pool.clone()).await;
            if pid != first {
                return prepared.into_iter().collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for sql in ["SELECT 'cached one'::text", "SELECT 'cached two'::text"] {
        assert!(
            prepared.contains(sql),
            "{sql:?} prepared on the replacement before its first use there: {prepared:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_fails_only_the_statements_in_flight() {
    let emulator = Emulator::start().await.expect("emulator");
    let pool = pool_builder(&emulator)
        .max_size(1)
        .build_multiplexed(2)
        .await
        .expect("pool");
    let ok = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The server restarts once the pool has served 100 statements, and the load runs until the restart
    // finished and both connections died with the server and were reopened after it: events, however long
    // a busy machine takes for them (each wait fails the test if its event never comes).
    let restart = async {
        until(60, "100 statements acknowledged before the restart", || {
            ok.load(Ordering::Relaxed) >= 100
        })
        .await;
        let before = emulator.gate().sessions().len();
        emulator.gate().restart_upstream().await.expect("restart");
        until(
            60,
            "both connections died with the server and were reopened",
            || emulator.gate().sessions().len() >= before + 2,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
    };
    let done = {
        let stop = stop.clone();
        move || stop.load(Ordering::Relaxed)
    };
    let ((ok, failed), ()) = tokio::join!(load_counting(&pool, 8, ok.clone(), done), restart);
    assert!(
        failed <= 8 * 2,
        "only statements in flight (8 tasks on 2 connections): {failed} failed, {ok} acknowledged"
    );
    let row = bounded(60, "after the restart", pool.query_one("SELECT 1::int4", &[]))
        .await
        .expect("served again");
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_transaction_mode_statements_go_unnamed() {
    let emulator = Emulator::builder()
        .pgbouncer(PoolMode::Transaction)
        .start()
        .await
        .expect("emulator with PgBouncer");
    let pool = pool_builder(&emulator)
        .transaction_pooling(true)
        .max_size(1)
        .build_multiplexed(2)
        .await
        .expect("pool");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16i64 {
        let pool = pool.clone();
        tasks.spawn(async move {
            for j in 0..50i64 {
                let v = i * 1000 + j;
                let rows = pool
                    .query_typed("SELECT $1::int8 + 1", &[(&v, Type::INT8)])
                    .await
                    .map_err(|e| entra_postgres::report(&e))?;
                assert_eq!(rows[0].get::<_, i64>(0), v + 1);
            }
            let row = pool
                .query_one("SELECT 41 + 1", &[])
                .await
                .map_err(|e| entra_postgres::report(&e))?;
            assert_eq!(row.get::<_, i32>(0), 42);
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = bounded(60, "the statements", tasks.join_next()).await {
        joined.expect("no panic").expect("no failed statement");
    }
    let v = 1i64;
    assert!(matches!(
        pool.query("SELECT $1::int8", &[&v]).await,
        Err(MultiplexError::NeedsTypes)
    ));
}
