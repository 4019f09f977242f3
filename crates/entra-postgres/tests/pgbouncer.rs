//! The pool through PgBouncer in transaction mode, as behind Azure's built-in PgBouncer: the emulator's
//! gate checks the token and relays to a PgBouncer in front of the server. Simple queries and unnamed
//! statements (`query_typed`) work; see docs/pgbouncer.md for named prepared statements.

use entra_emulator::{Emulator, PoolMode};
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

use entra_testkit::{bounded, pool_builder};

const TASKS: i32 = 8;
const CALLS: i32 = 200;

fn first_value(messages: &[SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    })
}

async fn emulator() -> Emulator {
    let emulator = Emulator::builder()
        .pgbouncer(PoolMode::Transaction)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        emulator.pgbouncer().map(|b| b.pool_mode()),
        Some(PoolMode::Transaction)
    );
    emulator
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_share_server_connections_through_pgbouncer() {
    let emulator = emulator().await;
    let pool = pool_builder(&emulator).max_size(4).build().await.unwrap();
    let a = bounded(60, "get a", pool.get()).await.unwrap();
    let b = bounded(60, "get b", pool.get()).await.unwrap();
    // Two pooled connections held at once reach the same backend: only transaction pooling does that.
    let pid_a = first_value(&a.simple_query("SELECT pg_backend_pid()").await.unwrap());
    let pid_b = first_value(&b.simple_query("SELECT pg_backend_pid()").await.unwrap());
    assert!(pid_a.is_some());
    assert_eq!(pid_a, pid_b);
    let user = first_value(&a.simple_query("SELECT current_user").await.unwrap());
    assert_eq!(user.as_deref(), Some(emulator.user()));
    pool.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_unnamed_statements_run_without_failures_under_load() {
    let emulator = emulator().await;
    let pool = pool_builder(&emulator)
        .max_size(TASKS as usize)
        .build()
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let pool = pool.pool().clone();
        tasks.spawn(async move {
            let mut failures = Vec::new();
            for call in 0..CALLS {
                let client = match pool.get().await {
                    Ok(client) => client,
                    Err(e) => {
                        failures.push(format!("get: {e}"));
                        continue;
                    }
                };
                let expected = task * CALLS + call;
                let got = if call % 2 == 0 {
                    client
                        .simple_query(&format!("SELECT {task} * {CALLS} + {call}"))
                        .await
                        .map(|m| first_value(&m).and_then(|v| v.parse::<i32>().ok()))
                } else {
                    client
                        .query_typed_one(
                            "SELECT $1::int4 * $2::int4 + $3::int4",
                            &[(&task, Type::INT4), (&CALLS, Type::INT4), (&call, Type::INT4)],
                        )
                        .await
                        .map(|row| Some(row.get::<_, i32>(0)))
                };
                match got {
                    Ok(Some(value)) if value == expected => {}
                    Ok(other) => failures.push(format!("call {call}: expected {expected}, got {other:?}")),
                    Err(e) => failures.push(format!("call {call}: {e}")),
                }
            }
            failures
        });
    }
    let mut failures = Vec::new();
    bounded(240, "the load", async {
        while let Some(done) = tasks.join_next().await {
            failures.extend(done.unwrap());
        }
    })
    .await;
    assert!(
        failures.is_empty(),
        "{} of {} calls failed; first: {:?}",
        failures.len(),
        TASKS * CALLS,
        failures.first()
    );
}

/// With `transaction_pooling`, statements prepared (and cached) inside a transaction are prepared again on
/// each checkout, so they always exist on the server connection the transaction runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_makes_cached_statements_safe_inside_transactions() {
    let emulator = emulator().await;
    let pool = pool_builder(&emulator)
        .max_size(4)
        .transaction_pooling(true)
        .build()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..4i32 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..50i32 {
                let mut client = pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                let stmt = tx
                    .prepare_cached("SELECT $1::int4 * 1000 + $2::int4")
                    .await
                    .unwrap();
                let row = tx.query_one(&stmt, &[&task, &round]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), task * 1000 + round);
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        bounded(60, "a transaction task", t).await.unwrap();
    }
}
