//! The pool's and the refresher's metrics, as a metrics backend sees them: names, labels and values,
//! through token rotations and connection retirements. Each phase lasts until the events it is about have
//! happened (tokens published, connections retired, a refused token replaced), not for a span of wall
//! clock, and values are read at moments the test knows to be settled: after a gauge refresh that began
//! once the load had ended, and while no token fetch is in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use entra_emulator::{Claims, Emulator, Fault, OSSRDBMS_RESOURCE};
use entra_pool::token::{RefreshPolicy, TokenHandle};

use metrics::{Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use metrics_util::MetricKind;

/// A recorder whose values can be read as often as the test likes (metrics-util's `DebuggingRecorder`
/// empties counters and gauges at each snapshot, so it cannot be polled), and which counts the pool's
/// gauge refreshes, so the test can wait for one instead of sleeping through its period.
struct Reading {
    registry: Arc<Registry<Key, AtomicStorage>>,
    /// Sets of `db.client.connection.pending_requests`, the last gauge each refresh sets.
    refreshes: Arc<AtomicU64>,
}

/// A gauge that counts how often it is set.
struct CountingSets {
    value: Arc<std::sync::atomic::AtomicU64>,
    sets: Arc<AtomicU64>,
}

impl GaugeFn for CountingSets {
    fn increment(&self, value: f64) {
        GaugeFn::increment(&*self.value, value);
    }
    fn decrement(&self, value: f64) {
        GaugeFn::decrement(&*self.value, value);
    }
    fn set(&self, value: f64) {
        GaugeFn::set(&*self.value, value);
        self.sets.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder for Reading {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let value = self.registry.get_or_create_gauge(key, |g| g.clone());
        if key.name() == "db.client.connection.pending_requests" {
            Gauge::from_arc(Arc::new(CountingSets {
                value,
                sets: self.refreshes.clone(),
            }))
        } else {
            Gauge::from_arc(value)
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(usize),
}

type Entry = (MetricKind, Key, Value);

/// Every metric's value at this moment.
fn read(registry: &Registry<Key, AtomicStorage>) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (key, c) in registry.get_counter_handles() {
        entries.push((MetricKind::Counter, key, Value::Counter(c.load(Ordering::SeqCst))));
    }
    for (key, g) in registry.get_gauge_handles() {
        let value = f64::from_bits(g.load(Ordering::SeqCst));
        entries.push((MetricKind::Gauge, key, Value::Gauge(value)));
    }
    for (key, h) in registry.get_histogram_handles() {
        entries.push((MetricKind::Histogram, key, Value::Histogram(h.data().len())));
    }
    entries
}

fn find<'a>(
    entries: &'a [Entry],
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Value> {
    entries.iter().find_map(|(k, key, value)| {
        let matches = *k == kind
            && key.name() == name
            && labels
                .iter()
                .all(|(l, v)| key.labels().any(|label| label.key() == *l && label.value() == *v));
        matches.then_some(value)
    })
}

fn counter(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(entries, MetricKind::Counter, name, labels) {
        Some(Value::Counter(n)) => *n,
        _ => 0,
    }
}

fn gauge(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(entries, MetricKind::Gauge, name, labels) {
        Some(Value::Gauge(g)) => Some(*g),
        _ => None,
    }
}

fn histogram_len(entries: &[Entry], name: &str, labels: &[(&str, &str)]) -> usize {
    match find(entries, MetricKind::Histogram, name, labels) {
        Some(Value::Histogram(n)) => *n,
        _ => 0,
    }
}

/// Every metric, the refresher's status and its current token, read while no token fetch was in flight:
/// the status is the same before and after the reading and has the next fetch planned (none under way),
/// so the token metrics and the status describe the same fetches and tokens.
async fn settled_read(
    registry: &Registry<Key, AtomicStorage>,
    tokens: &TokenHandle,
) -> (
    Vec<Entry>,
    entra_pool::token::TokenStatus,
    entra_pool::token::AccessToken,
) {
    entra_testkit::bounded(60, "a moment with no token fetch in flight", async {
        loop {
            let before = tokens.status();
            let entries = read(registry);
            let token = tokens.current();
            let after = tokens.status();
            let quiet = (before.fetches, before.refreshes) == (after.fetches, after.refreshes)
                && after.next_fetch.is_some();
            if let Some(token) = token.filter(|t| quiet && t.generation() == after.refreshes) {
                return (entries, after, token);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits for a refresh of the pool's gauges that began after this call: the second one from now (the
/// first may have read the pool's state before the call).
async fn a_later_gauge_refresh(refreshes: &AtomicU64) {
    let seen = refreshes.load(Ordering::SeqCst);
    entra_testkit::bounded(60, "a refresh of the pool's gauges", async {
        while refreshes.load(Ordering::SeqCst) < seen + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// One checkout, one query, the connection back: what the phases below repeat.
async fn one_query(pool: &entra_pool::postgres::EntraPool, what: &str) {
    let client = pool.get().await.expect(what);
    client.simple_query("SELECT 1").await.expect("a query");
    drop(client);
    tokio::time::sleep(Duration::from_millis(20)).await;
}

// One test in this binary: the recorder is process-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_and_token_metrics_carry_otel_names_and_true_values() {
    let registry = Arc::new(Registry::atomic());
    let refreshes = Arc::new(AtomicU64::new(0));
    metrics::set_global_recorder(Reading {
        registry: registry.clone(),
        refreshes: refreshes.clone(),
    })
    .expect("the only recorder of this binary");

    let emulator: Emulator = entra_testkit::emulator(Duration::from_secs(3)).await;
    let pool = entra_testkit::pool_builder(&emulator)
        .with_config(|c| {
            c
                // The wrong-audience token below arrives at a renewal whose moment the test does not choose; a
                // connection opened within `min_invalidate_interval` of it would be refused without a refetch (by
                // design: a token refused moments after its fetch is usually refused for good), so this test, whose
                // subject is the refetch and its metrics, turns that guard off.
                // A refresh margin of 10 s renews every token below 20 s at half-life: the failure phase
                // below has half a 20 s token's life for its retries, not the 0.5 s between the default
                // margin (1 s) and the expiry margin (0.5 s).
                .refresh_policy(
                    RefreshPolicy::short_lived()
                        .min_invalidate_interval(Duration::ZERO)
                        .refresh_margin(Duration::from_secs(10)),
                )
                .name("orders")
        })
        .max_size(3)
        .max_lifetime(Some(Duration::from_millis(800)))
        .build()
        .await
        .expect("builds");
    let tokens = pool.tokens().expect("token mode").clone();

    // One query at a time, until three tokens were published, four connections signed in (so three were
    // retired and re-created) and more than 50 checkouts were made.
    let mut checkouts = 0;
    entra_testkit::bounded(60, "three tokens, four connections and 50 checkouts", async {
        while tokens.status().refreshes < 3 || emulator.gate().sessions().len() < 4 || checkouts <= 50 {
            one_query(&pool, "a connection").await;
            checkouts += 1;
        }
    })
    .await;
    // The gauges are refreshed every second: wait for a refresh that saw the pool after the last query.
    a_later_gauge_refresh(&refreshes).await;
    let (entries, token, current) = settled_read(&registry, &tokens).await;
    let pool_label = [("db.client.connection.pool.name", "orders")];

    let fetched_ok = counter(&entries, "entra.token.fetches", &[("outcome", "ok")]);
    assert_eq!(fetched_ok, token.refreshes, "one ok fetch per token");
    assert_eq!(
        counter(&entries, "entra.token.rotations", &[]),
        token.refreshes,
        "every published token"
    );
    assert!(token.refreshes >= 3, "{} tokens", token.refreshes);
    assert_eq!(
        gauge(&entries, "entra.token.state", &[("state", "valid")]),
        Some(1.0)
    );
    assert_eq!(
        gauge(&entries, "entra.token.state", &[("state", "stale")]),
        Some(0.0)
    );
    // The expiry of the token the refresher serves, in Unix seconds.
    let expires_at = gauge(&entries, "entra.token.expires_at", &[]).expect("expiry gauge");
    let current_expiry = current
        .expires_on()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(expires_at, current_expiry, "the served token's expiry");

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
    // audience, which the gate refuses; the pool refetches once and carries on. The phase lasts until the
    // gate has refused the token and a query has run after that. The faults meet the renewal of a 20 s
    // token, at half-life: its last 9.5 s or so of service leave room for two retries' backoff and three
    // requests, however busy the machine (with 3 s tokens there would be 1 s). A 3 s token never has
    // more than 3 s left: the one seen with more is one of the new ones.
    emulator.set_token_lifetime(Duration::from_secs(20));
    entra_testkit::until(60, "a 20 s token published", || {
        tokens
            .current()
            .is_some_and(|t| t.expires_in() > Duration::from_secs(10))
    })
    .await;
    let mut claims = Claims::new(emulator.principal().object_id.clone(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emulator.identity().issuer().sign(&claims);
    emulator.identity().push_faults([
        Fault::status(429),
        Fault::status(503),
        Fault::token(&wrong_audience, Duration::from_secs(3600), OSSRDBMS_RESOURCE),
    ]);
    entra_testkit::bounded(60, "the wrong audience refused, and a query after it", async {
        while emulator.gate().rejections().is_empty() {
            one_query(&pool, "a connection, the refused token replaced").await;
        }
        one_query(&pool, "a connection after the refusal").await;
    })
    .await;
    let (entries, _, _) = settled_read(&registry, &tokens).await;
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
