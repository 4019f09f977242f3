//! `TestPgBouncer` behind the `EntraGate`: client → gate (TLS, token check) → PgBouncer → PostgreSQL,
//! in session and transaction pooling, with what each mode does to named prepared statements.

#[path = "common/report.rs"]
mod report;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::{Claims, EntraGate, PoolMode, PrincipalKind, TestPgBouncer, TestPostgres};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

const ROLE: &str = "app-identity";
const OID: &str = "11111111-2222-3333-4444-555555555555";
/// The first PgBouncer release that tracks named prepared statements in transaction mode by default
/// (`max_prepared_statements`: added in 1.21 at 0, i.e. off; on by default from 1.24).
const PREPARED_TRACKING_DEFAULT_ON: (u32, u32, u32) = (1, 24, 0);

/// A cluster, a PgBouncer in `mode` in front of it and a gate relaying to the PgBouncer.
struct Chain {
    // Drop order: the gate's sessions, then PgBouncer, then the cluster.
    gate: EntraGate,
    bouncer: TestPgBouncer,
    pg: Arc<TestPostgres>,
}

async fn chain(mode: PoolMode) -> Chain {
    let pg = Arc::new(
        TestPostgres::start()
            .await
            .unwrap_or_else(|e| panic!("{}", report::report(&e))),
    );
    let bouncer = TestPgBouncer::start(&pg, mode)
        .await
        .unwrap_or_else(|e| panic!("{}", report::report(&e)));
    let gate = EntraGate::builder(pg.clone())
        .upstream_socket(bouncer.socket_dir(), bouncer.port())
        .start()
        .await
        .unwrap();
    gate.create_principal(ROLE, OID, PrincipalKind::Service)
        .await
        .unwrap();
    Chain { gate, bouncer, pg }
}

fn token(gate: &EntraGate, oid: &str) -> String {
    gate.issuer().sign(&Claims::new(oid, Duration::from_secs(3600)))
}

/// `sslmode=require` with rustls verifying the gate's certificate for `localhost` against the emulator
/// CA: verify-full.
fn config(gate: &EntraGate, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(gate.host())
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(gate.port())
        .user(ROLE)
        .password(password)
        .dbname("postgres")
        .ssl_mode(SslMode::Require);
    config
}

fn tls(gate: &EntraGate) -> MakeRustlsConnect {
    MakeRustlsConnect::new(gate.upstream().ca().client_config().unwrap())
}

async fn connect_with(gate: &EntraGate, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config(gate, password).connect(tls(gate)).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn connect(gate: &EntraGate) -> Client {
    connect_with(gate, &token(gate, OID))
        .await
        .unwrap_or_else(|e| panic!("signing in through the gate and PgBouncer: {e}"))
}

/// The first column of the first row of a simple query.
async fn simple_value(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql} returned no row"))
}

async fn backend_pid(client: &Client) -> String {
    simple_value(client, "SELECT pg_backend_pid()").await
}

/// Bounds a step that could hang if relaying broke.
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    entra_testkit::bounded(60, what, f).await
}

/// Client `a` prepares a named statement; `b` then opens a transaction, taking the server connection the
/// statement was prepared on whenever PgBouncer shares connections; `a` then runs the statement.
async fn prepare_then_run_while_another_client_holds_a_transaction(
    gate: &EntraGate,
) -> Result<i32, tokio_postgres::Error> {
    let a = connect(gate).await;
    let b = connect(gate).await;
    let statement = a.prepare("SELECT $1::int4 + 1").await?;
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(simple_value(&b, "SELECT 7").await, "7");
    let result = a.query_one(&statement, &[&41i32]).await.map(|row| row.get(0));
    b.batch_execute("COMMIT").await.unwrap();
    result
}

#[tokio::test]
async fn session_mode_relays_signed_in_sessions_and_keeps_prepared_statements() {
    let chain = chain(PoolMode::Session).await;
    let gate = &chain.gate;
    assert_eq!(chain.bouncer.pool_mode(), PoolMode::Session);

    // The gate still checks the token before anything reaches PgBouncer.
    let stranger = token(gate, "99999999-9999-9999-9999-999999999999");
    let err = connect_with(gate, &stranger).await.map(|_| ()).unwrap_err();
    assert!(
        err.as_db_error().is_some(),
        "expected the gate's refusal, got {err}"
    );

    let client = connect(gate).await;
    assert_eq!(simple_value(&client, "SELECT current_user").await, ROLE);
    let answer = bounded(
        "the prepared statement",
        prepare_then_run_while_another_client_holds_a_transaction(gate),
    )
    .await
    .unwrap_or_else(|e| panic!("session pooling keeps a client's server connection: {e}"));
    assert_eq!(answer, 42);
}

#[tokio::test]
async fn session_mode_hands_a_closed_sessions_server_connection_to_the_next_client() {
    let chain = chain(PoolMode::Session).await;
    let gate = &chain.gate;
    let first = connect(gate).await;
    let pid = backend_pid(&first).await;
    drop(first);
    // Directly connected clients always get a new backend; through PgBouncer the pooled one comes back
    // as soon as PgBouncer has seen the first client leave.
    bounded(
        &format!("handing backend {pid} to a later client (is PgBouncer in the chain?)"),
        async {
            loop {
                let next = connect(gate).await;
                if backend_pid(&next).await == pid {
                    break;
                }
                drop(next);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn transaction_mode_shares_one_server_connection_between_open_clients() {
    let chain = chain(PoolMode::Transaction).await;
    let a = connect(&chain.gate).await;
    let b = connect(&chain.gate).await;
    // Both clients stay connected: only transaction pooling can give them the same backend.
    let pid_a = backend_pid(&a).await;
    let pid_b = backend_pid(&b).await;
    assert_eq!(pid_a, pid_b);
}

#[tokio::test]
async fn transaction_mode_runs_simple_and_unnamed_statements_from_several_clients() {
    const CLIENTS: i32 = 4;
    const ROUNDS: i32 = 50;
    let chain = chain(PoolMode::Transaction).await;
    let gate = &chain.gate;
    chain
        .pg
        .execute(&format!(
            "CREATE TABLE public.ledger (client int, round int); GRANT ALL ON public.ledger TO \"{ROLE}\""
        ))
        .await
        .unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let mut client = connect(gate).await;
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let sum: i32 = client
                    .query_typed_one(
                        "SELECT $1::int4 + $2::int4",
                        &[(&c, Type::INT4), (&round, Type::INT4)],
                    )
                    .await?
                    .get(0);
                assert_eq!(sum, c + round);
                // An explicit transaction: BEGIN/COMMIT are simple queries, the insert an unnamed statement.
                let tx = client.transaction().await?;
                tx.query_typed(
                    "INSERT INTO public.ledger VALUES ($1, $2)",
                    &[(&c, Type::INT4), (&round, Type::INT4)],
                )
                .await?;
                tx.commit().await?;
                client
                    .simple_query(&format!("SELECT {round} -- client {c}"))
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        });
    }
    bounded("the clients", async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap_or_else(|e| panic!("a client failed: {e}"));
        }
    })
    .await;

    let check = connect(gate).await;
    let rows = simple_value(
        &check,
        "SELECT count(DISTINCT (client, round)) FROM public.ledger",
    )
    .await;
    assert_eq!(rows, (CLIENTS * ROUNDS).to_string());
}

#[tokio::test]
async fn transaction_mode_loses_named_prepared_statements_as_the_installed_pgbouncer_does() {
    let chain = chain(PoolMode::Transaction).await;
    let version = chain.bouncer.version().expect("pgbouncer --version is readable");
    let result = bounded(
        "the prepared statement",
        prepare_then_run_while_another_client_holds_a_transaction(&chain.gate),
    )
    .await;
    if version >= PREPARED_TRACKING_DEFAULT_ON {
        // PgBouncer re-prepares the statement on whichever server connection runs it.
        assert_eq!(result.unwrap(), 42);
    } else {
        // Before 1.24 (by default) PgBouncer passes Parse and Bind on as they come: the statement lives on the
        // server connection the other client now holds, so this one's backend has never seen it.
        let err = result.map(|_| ()).unwrap_err();
        let db = err
            .as_db_error()
            .unwrap_or_else(|| panic!("expected a server error, got {err}"));
        assert_eq!(db.code(), &SqlState::INVALID_SQL_STATEMENT_NAME, "{db}");
        assert!(db.message().contains("does not exist"), "{db}");
    }
}

#[tokio::test]
async fn transaction_mode_runs_named_statements_prepared_inside_the_same_transaction() {
    let chain = chain(PoolMode::Transaction).await;
    let mut a = connect(&chain.gate).await;
    let b = connect(&chain.gate).await;
    let tx = a.transaction().await.unwrap();
    // Inside a transaction the server connection stays with the client, statements and all.
    let statement = tx.prepare("SELECT $1::int4 + 1").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(simple_value(&b, "SELECT 7").await, "7");
    let answer: i32 = bounded("the statement", tx.query_one(&statement, &[&41i32]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer, 42);
    let by_text: i32 = tx
        .query_one("SELECT $1::int4 * 2", &[&21i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(by_text, 42);
    tx.commit().await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn a_cancel_request_through_the_gate_reaches_the_query_behind_pgbouncer() {
    let chain = chain(PoolMode::Session).await;
    let gate = &chain.gate;
    let client = connect(gate).await;
    let cancel = client.cancel_token();
    // Ten minutes: within the 60 s bound, only the cancel can end it.
    let sleeper = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(600)").await.map(|_| ()) });
    // The cancel can only hit the query once PgBouncer has passed it on; retry until the query is gone.
    let result = bounded("the cancelled query", async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel_query(tls(gate)).await.unwrap();
            if sleeper.is_finished() {
                break sleeper.await.unwrap();
            }
        }
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
}
