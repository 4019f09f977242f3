//! The proxy in production, one promise per test: its health endpoints before and after the first token
//! and through an identity outage, `/metrics`, a graceful drain, and the connection test. Each asserts
//! the order of events (what the endpoint said while no token had been issued, what a client saw while
//! the proxy drained); real-time waits only bound a hang.

mod common;

use std::time::Duration;

use common::*;
use entra_emulator::{Emulator, Fault};
use entra_proxy::{ProxyBuilder, ProxyError};
use entra_testkit::http::{get, until_answer};
use entra_token::RetryPolicy;
use tokio_postgres::NoTls;

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn loopback() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The value of the series `series` (name and labels, as Prometheus prints them) in `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// While the identity endpoint fails, the proxy is starting: `/startup` and `/readiness` say 503,
/// `/liveness` 200. Once the endpoint answers and the start finishes, all three say 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_answers_before_and_after_the_first_token() {
    let emulator = Emulator::start().await.unwrap();
    emulator.identity().set_persistent_fault(Some(Fault::status(503)));
    // A first fetch that keeps retrying for as long as the test needs (the bound catches a hang).
    let policy = short_tokens().retry(
        RetryPolicy::default()
            .backoff(Duration::from_millis(100), Duration::from_millis(500))
            .budget(Duration::from_secs(300))
            .attempt_timeout(Duration::from_secs(5)),
    );
    let config = config(&emulator, policy);
    let health = std::net::TcpListener::bind(loopback()).unwrap();
    let address = health.local_addr().unwrap();
    let starting = tokio::spawn(async move {
        ProxyBuilder::new()
            .listen(loopback())
            .health_listener(health)
            .start(&config)
            .await
    });
    entra_testkit::until(30, "the first token request", || {
        emulator.identity().token_requests() > 0
    })
    .await;

    let (status, body) = get(address, "/startup").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "starting\n"));
    let (status, body) = get(address, "/readiness").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.starts_with("starting"), "{body}");
    let (status, _) = get(address, "/liveness").await.unwrap();
    assert_eq!(status, 200, "a starting proxy is alive");
    let (status, metrics) = get(address, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "entra_proxy_ready"), 0.0);
    // All of the above was answered while no token existed.
    assert_eq!(emulator.identity().tokens_issued(), 0);
    assert!(!starting.is_finished());

    emulator.identity().set_persistent_fault(None);
    let proxy = entra_testkit::bounded(60, "the start once the endpoint answers", starting)
        .await
        .unwrap()
        .expect("the proxy starts");
    assert_eq!(proxy.health_address(), Some(address));
    assert_eq!(get(address, "/startup").await.unwrap(), (200, "started\n".into()));
    assert_eq!(get(address, "/readiness").await.unwrap(), (200, "ok\n".into()));
    assert_eq!(get(address, "/liveness").await.unwrap(), (200, "ok\n".into()));
    assert_eq!(proxy.readiness(), Ok(()));
}

/// During an identity outage the proxy stays ready while its cached token is usable for the margin;
/// then readiness fails (and says why), while liveness holds, until the endpoint is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_and_liveness_holds_once_an_outage_outlasts_the_token() {
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(6))
        .start()
        .await
        .unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.health_listen(loopback())
            .readiness_margin(Duration::from_secs(1))
    })
    .await;
    let address = proxy.health_address().unwrap();
    let tokens = proxy.tokens().unwrap().clone();
    until_answer(30, address, "/readiness", |status, _| status == 200).await;

    emulator.identity().set_persistent_fault(Some(Fault::status(503)));
    let (_, body) = until_answer(60, address, "/readiness", |status, _| status == 503).await;
    // Not a renewal that had not happened yet: the one the outage made fail.
    assert!(body.contains("renewal failing"), "{body}");
    assert!(body.contains("HTTP 503"), "{body}");
    assert!(
        !body.contains(proxy.role()),
        "no role in a probe's answer: {body}"
    );
    assert_eq!(get(address, "/liveness").await.unwrap().0, 200);
    // Then the token is no longer usable at all: still live, still not ready.
    let (_, body) = until_answer(60, address, "/readiness", |status, body| {
        status == 503 && body.starts_with("no usable token")
    })
    .await;
    assert!(!tokens.status().is_usable(), "{body}");
    assert_eq!(get(address, "/liveness").await.unwrap().0, 200);
    let (_, metrics) = get(address, "/metrics").await.unwrap();
    assert_eq!(sample(&metrics, "entra_proxy_ready"), 0.0);

    emulator.identity().set_persistent_fault(None);
    until_answer(60, address, "/readiness", |status, _| status == 200).await;
    assert!(tokens.status().is_usable());
}

/// After one session and one refused client, `/metrics` counts both; the sign-in was timed and bytes
/// went each way; no client text and no role name is in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_session_and_a_refused_client() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        // Counts every upstream sign-in: none ahead of the client's own (no warm sessions).
        b.health_listen(loopback()).warm(0)
    })
    .await;
    let address = proxy.health_address().unwrap();

    let client = connect(&tcp_config(&proxy)).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    drop(client);
    entra_testkit::until(30, "the session to end", || proxy.stats().active == 0).await;
    let mut other_role = tcp_config(&proxy);
    other_role.user("someone_else");
    connect(&other_role).await.expect_err("another role is refused");

    let (status, text) = get(address, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "entra_proxy_sessions_total"), 1.0);
    assert_eq!(sample(&text, "entra_proxy_sessions_open"), 0.0);
    assert_eq!(sample(&text, "entra_proxy_refusals_total{reason=\"role\"}"), 1.0);
    assert_eq!(
        sample(&text, "entra_proxy_refusals_total{reason=\"upstream\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "entra_proxy_upstream_sign_in_seconds_count{outcome=\"ok\"}"
        ),
        1.0
    );
    assert!(sample(&text, "entra_proxy_bytes_total{direction=\"to_server\"}") > 0.0);
    assert!(sample(&text, "entra_proxy_bytes_total{direction=\"to_client\"}") > 0.0);
    assert_eq!(sample(&text, "entra_proxy_clients_waiting"), 0.0);
    assert_eq!(sample(&text, "entra_proxy_ready"), 1.0);
    assert!(!text.contains("someone_else"), "client text in a label:\n{text}");
    assert!(!text.contains(proxy.role()), "the role in the metrics:\n{text}");
    // The exporter writes metrics in no fixed order: compared line by line.
    let lines = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        lines(&text),
        lines(&proxy.metrics_text()),
        "the endpoint serves what the handle renders"
    );
}

/// A drain with a session in a transaction: readiness fails at once, a new client is refused, the
/// transaction still commits, and the drain ends when that session does, having closed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_an_open_transaction_commit_and_refuses_new_clients() {
    let emulator = Emulator::start().await.unwrap();
    let mut proxy = proxy(&emulator, short_tokens(), |b| {
        // Counts every upstream sign-in: none ahead of the client's own (no warm sessions).
        b.health_listen(loopback()).warm(0)
    })
    .await;
    let address = proxy.health_address().unwrap();
    let config = tcp_config(&proxy);
    let client = connect(&config).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE drained (n int)")
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO drained VALUES (1)", &[])
        .await
        .unwrap();

    // A grace far beyond the test's own bounds: only the session's end can end this drain in time.
    let draining = tokio::spawn(async move {
        let drained = proxy.drain(Duration::from_secs(600)).await;
        (proxy, drained)
    });
    let (_, body) = until_answer(30, address, "/readiness", |status, _| status == 503).await;
    assert_eq!(body, "draining: not accepting new sessions\n");
    assert_eq!(get(address, "/liveness").await.unwrap().0, 200);
    // Refused by the kernel once the listener is closed, or with 57P03 if accepted just before.
    let err = connect(&config).await.expect_err("no new session while draining");
    if let Some(db) = err.as_db_error() {
        assert_eq!(db.code().code(), "57P03", "{err}");
    }

    client
        .batch_execute("COMMIT")
        .await
        .expect("the transaction commits");
    let row = client
        .query_one("SELECT count(*) FROM drained", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert!(!draining.is_finished(), "the drain waits for the open session");
    drop(client);
    let (proxy, drained) = entra_testkit::bounded(60, "the drain, once its session ended", draining)
        .await
        .unwrap();
    assert_eq!((drained.open, drained.closed), (1, 0));
    assert_eq!(
        emulator.gate().sessions().len(),
        1,
        "the refused client never went upstream"
    );
    assert!(
        get(address, "/liveness").await.is_err(),
        "the health listener stopped with the proxy"
    );
    drop(proxy);
}

/// A session still open at the drain's deadline is closed, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_the_sessions_still_open_at_its_deadline() {
    let emulator = Emulator::start().await.unwrap();
    let mut proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    // The client never ends its session: only the deadline does.
    let drained = entra_testkit::bounded(
        60,
        "a drain with a short grace",
        proxy.drain(Duration::from_millis(200)),
    )
    .await;
    assert_eq!((drained.open, drained.closed), (1, 1));
    let err = entra_testkit::bounded(
        60,
        "the closed session's next query",
        client.query_one("SELECT 1", &[]),
    )
    .await
    .expect_err("the session was closed");
    assert!(err.is_closed() || err.as_db_error().is_none(), "{err}");
}

/// A session still signing in upstream at the drain's deadline is closed too, and counted: its client
/// loses it as surely as a relayed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_counts_a_session_cut_while_it_signs_in() {
    let emulator = Emulator::start().await.unwrap();
    let mut proxy = proxy(&emulator, short_tokens(), |b| b).await;
    // The gate holds every sign-in for 10 minutes: the client below stays signing in.
    emulator.gate().set_sign_in_delay(Duration::from_secs(600));
    let config = tcp_config(&proxy);
    let signing_in = tokio::spawn(async move { connect(&config).await });
    entra_testkit::until(60, "the client signing in upstream", || {
        proxy.stats().signing_in == 1
    })
    .await;
    let drained = entra_testkit::bounded(
        60,
        "a drain with a short grace",
        proxy.drain(Duration::from_millis(200)),
    )
    .await;
    assert_eq!((drained.open, drained.closed), (1, 1), "{:?}", proxy.stats());
    let result = entra_testkit::bounded(60, "the cut client's connect", signing_in)
        .await
        .expect("no panic");
    assert!(result.is_err(), "the client was not signed in");
}

/// With the connection test, the start signs in upstream once before it returns, and no client is
/// needed for that; a principal the server refuses ends the start with a cause `diagnose` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_test_signs_in_before_the_proxy_is_ready_or_stops_the_start() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        // Counts sessions at the gate: no warm sessions.
        b.run_connection_test(true).warm(0)
    })
    .await;
    assert_eq!(proxy.readiness(), Ok(()));
    assert_eq!(
        emulator.gate().sessions().len(),
        1,
        "signed in once before it was ready"
    );
    assert_eq!(proxy.stats().accepted, 0, "no client was needed");
    drop(proxy);

    assert!(emulator.gate().revoke_principal(emulator.user()));
    let err = ProxyBuilder::new()
        .listen(loopback())
        .run_connection_test(true)
        .start(&config(&emulator, short_tokens()))
        .await
        .expect_err("the connection test fails");
    let ProxyError::ConnectionTest(session) = &err else {
        panic!("{err:?}");
    };
    let diagnosis = entra_postgres::diagnose(session.as_ref());
    assert_eq!(
        diagnosis.cause,
        entra_postgres::Cause::PrincipalRejected,
        "{diagnosis}"
    );
    eprintln!("{}\n  {diagnosis}", entra_postgres::report(&err));
}
