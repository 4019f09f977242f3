//! The pool's and the refresher's metrics, as a metrics backend sees them: names, labels and values,
//! through token rotations and connection retirements.

mod common;

use std::time::Duration;

use entra_emulator::{Claims, Fault, OSSRDBMS_RESOURCE};
use entra_pool::token::RefreshPolicy;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

type Entry = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

fn find<'a>(
    entries: &'a [Entry],
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a DebugValue> {
    entries.iter().find_map(|(key, _, _, value)| {
        let k = key.key();
        let matches = key.kind() == kind
            && k.name() == name
            && labels
                .iter()
                .all(|(l, v)| k.labels().any(|label| label.key() == *l && label.value() == *v));
        matches.then_some(value)
    })
}

fn counter(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(entries, MetricKind::Counter, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        _ => 0,
    }
}

fn gauge(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(entries, MetricKind::Gauge, name, labels) {
        Some(DebugValue::Gauge(g)) => Some(g.into_inner()),
        _ => None,
    }
}

fn histogram_len(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> usize {
    match find(entries, MetricKind::Histogram, name, labels) {
        Some(DebugValue::Histogram(v)) => v.len(),
        _ => 0,
    }
}

// One test in this binary: the recorder is process-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_token_metrics_carry_otel_names_and_true_values() {
    let recorder = DebuggingRecorder::new();
    let snapshotter: Snapshotter = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");

    let emulator = common::emulator(Duration::from_secs(3)).await;
    let pool = common::pool_builder(&emulator)
        // The wrong-audience token below arrives at a renewal whose moment the test does not choose; a
        // connection opened within `min_invalidate_interval` of it would be refused without a refetch (by
        // design: a token refused moments after its fetch is usually refused for good), so this test, whose
        // subject is the refetch and its metrics, turns that guard off.
        .refresh_policy(RefreshPolicy::short_lived().min_invalidate_interval(Duration::ZERO))
        .pool_name("orders")
        .max_size(3)
        .max_lifetime(Some(Duration::from_millis(800)))
        .build()
        .await
        .expect("builds");
    let deadline = std::time::Instant::now() + Duration::from_secs(7);
    while std::time::Instant::now() < deadline {
        let client = pool.get().await.expect("a connection");
        client.simple_query("SELECT 1").await.expect("a query");
        drop(client);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // one more gauge refresh
    let entries = snapshotter.snapshot().into_vec();
    let pool_label = [("db.client.connection.pool.name", "orders")];

    let status = pool.status();
    let token = status.token.expect("token mode");
    let fetched_ok = counter(&entries, "entra.token.fetches", &[("outcome", "ok")]);
    assert_eq!(fetched_ok, token.refreshes, "one ok fetch per token");
    assert_eq!(
        counter(&entries, "entra.token.rotations", &[]),
        token.refreshes,
        "every published token"
    );
    assert!(
        token.refreshes >= 3,
        "7 s of 3 s tokens: {} tokens",
        token.refreshes
    );
    assert_eq!(
        gauge(&entries, "entra.token.state", &[("state", "valid")]),
        Some(1.0)
    );
    assert_eq!(
        gauge(&entries, "entra.token.state", &[("state", "stale")]),
        Some(0.0)
    );
    let expires_at = gauge(&entries, "entra.token.expires_at", &[]).expect("expiry gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expires_at > now && expires_at < now + 4.0,
        "{expires_at} vs now {now}"
    );

    let created = counter(&entries, "entra.pool.connections.created", &pool_label);
    let sessions = emulator.gate().sessions().len() as u64;
    assert_eq!(created, sessions, "every connection the gate signed in");
    assert!(created >= 4, "connections retired and re-created: {created}");
    assert!(
        counter(
            &entries,
            "entra.pool.connections.retired",
            &[("reason", "max_lifetime")]
        ) >= 1
    );
    assert_eq!(counter(&entries, "entra.pool.connections.failed", &pool_label), 0);
    assert_eq!(
        histogram_len(&entries, "db.client.connection.create_time", &pool_label) as u64,
        created
    );
    assert!(histogram_len(&entries, "db.client.connection.wait_time", &pool_label) > 50);
    assert_eq!(
        gauge(&entries, "db.client.connection.max", &pool_label),
        Some(3.0)
    );
    let idle = gauge(
        &entries,
        "db.client.connection.count",
        &[("db.client.connection.state", "idle")],
    );
    let used = gauge(
        &entries,
        "db.client.connection.count",
        &[("db.client.connection.state", "used")],
    );
    assert_eq!(used, Some(0.0), "nothing checked out at the last refresh");
    assert!(idle.is_some_and(|n| (0.0..=3.0).contains(&n)), "{idle:?}");
    assert_eq!(
        gauge(&entries, "db.client.connection.pending_requests", &pool_label),
        Some(0.0)
    );
    assert_eq!(
        counter(&entries, "entra.token.fetches", &[("outcome", "error")]),
        0
    );
    assert_eq!(counter(&entries, "entra.pool.token_rejections", &pool_label), 0);

    // The failure path: the next renewal meets a 429 and a 503 (both retried), then a token for the wrong
    // audience, which the gate refuses; the pool refetches once and carries on.
    let mut claims = Claims::new(emulator.principal().object_id.clone(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emulator.identity().issuer().sign(&claims);
    emulator.identity().push_faults([
        Fault::status(429),
        Fault::status(503),
        Fault::token(&wrong_audience, Duration::from_secs(3600), OSSRDBMS_RESOURCE),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < deadline {
        let client = pool
            .get()
            .await
            .expect("a connection, the refused token replaced");
        client.simple_query("SELECT 1").await.expect("a query");
        drop(client);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(&entries, "entra.token.failures", &[("kind", "throttled")]),
        1
    );
    assert_eq!(
        counter(&entries, "entra.token.failures", &[("kind", "transient")]),
        1
    );
    assert_eq!(
        counter(&entries, "entra.token.fetches", &[("outcome", "error")]),
        2
    );
    let rejections = emulator.gate().rejections().len() as u64;
    assert!(rejections >= 1, "the gate refused the wrong audience");
    assert_eq!(
        counter(&entries, "entra.pool.token_rejections", &pool_label),
        rejections,
        "one count per refusal"
    );
    assert_eq!(
        counter(&entries, "entra.pool.connections.failed", &pool_label),
        0,
        "a refused token is retried inside the connect, not surfaced"
    );
}
