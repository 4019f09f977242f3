//! The fault matrix (TESTING.md): every failure of the token endpoint, once while the cached token is
//! still valid (no query may fail) and once after it has expired (a typed error, then recovery once the
//! fault clears; how soon, one backoff cap, is the refresher's and is checked on the paused clock in
//! entra-token's `refresher.rs`); server faults under a write workload (no acknowledged row may be lost); a server
//! certificate replaced by an untrusted one; and no task outliving the pool.
//!
//! Timings are scaled down: tokens live 5 s, the backoff cap is 1 s (support's short policy), and where
//! the timeout is the subject (no response, a slow body) an HTTP request times out after 800 ms; elsewhere
//! requests are bounded only against a hang, so a slow answer on a busy machine is not taken for a
//! timeout. Each test starts its own Emulator so the cases can run in parallel.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use entra_emulator::{Emulator, Fault, PrincipalKind};
use entra_postgres::{ConnectError, EntraPool};
use entra_testkit::{bounded, pool_builder};
use entra_token::{HttpOptions, RefreshPolicy, TokenError};
use parking_lot::Mutex;

/// How long one query may take before it counts as hung: an upper bound that only catches a hang.
const HANG: Duration = Duration::from_secs(60);
/// Lifetime of the tokens in the token-endpoint cases: long enough for a steady-state phase in which
/// the refresher already fails, short enough to expire within the case.
const TOKEN_LIFETIME: Duration = Duration::from_secs(5);
/// One HTTP request to the token endpoint, in the cases whose subject is the timeout (a fault that hangs
/// costs this much).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(800);
/// One HTTP request (and one fetch attempt) to the token endpoint in the other cases: an upper bound
/// that only catches a hang, so that an answer a busy machine delays is classified by what it says,
/// not as a timeout (`Transient { status: None }`).
const REQUEST_HANG: Duration = Duration::from_secs(60);
/// How long a phase may take before the test counts it as hung: an upper bound that only catches a
/// hang, far above what any phase takes on a loaded machine (and above the 60 s bounds of its steps).
const PHASE_HANG: Duration = Duration::from_secs(120);

/// Token requests that time out after `timeout`.
fn http_timing_out_after(timeout: Duration) -> HttpOptions {
    entra_testkit::http().connect_timeout(timeout).timeout(timeout)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Waits for the test runtime's task count to come back to `baseline`, failing if it has not after
/// [`PHASE_HANG`]. The emulator runs on a runtime of its own, so its tasks are not counted here.
async fn assert_no_task_leak(baseline: usize, what: &str) {
    let started = Instant::now();
    loop {
        let alive = alive_tasks();
        if alive <= baseline {
            return;
        }
        assert!(
            started.elapsed() < PHASE_HANG,
            "{what}: {alive} tasks still alive {PHASE_HANG:?} after the pool was dropped (baseline {baseline})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What kind of [`TokenError`] a fault must surface as, inside `Unavailable { last_error }`.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// `Transient` with this HTTP status (`None`: no response at all).
    Transient(Option<u16>),
    /// `Transient` 429 carrying the server's `Retry-After`.
    Throttled(Duration),
    /// `InvalidResponse`.
    Invalid,
    /// `IdentityNotFound`: IMDS says the system identity is not assigned.
    NoIdentity,
}

impl Class {
    fn matches(self, cause: &TokenError) -> bool {
        match (self, cause) {
            (Class::Transient(want), TokenError::Transient { status, .. }) => *status == want,
            (
                Class::Throttled(want),
                TokenError::Transient {
                    status: Some(429),
                    retry_after,
                    ..
                },
            ) => *retry_after == Some(want),
            (Class::Invalid, TokenError::InvalidResponse { .. }) => true,
            (Class::NoIdentity, TokenError::IdentityNotFound { identity: None, .. }) => true,
            _ => false,
        }
    }
}

async fn select_one(pool: &EntraPool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
    let row = client
        .query_one("SELECT 1::int4", &[])
        .await
        .map_err(|e| entra_postgres::report(&e))?;
    match row.get::<_, i32>(0) {
        1 => Ok(()),
        other => Err(format!("SELECT 1 returned {other}")),
    }
}

/// One row of the token-endpoint matrix, in three phases.
///
/// (a) Steady state: the fault is switched on right after the first token was fetched; 8 tasks query
/// through a pool whose connections live 300 ms (so new connections keep being created) until the
/// refresher has failed against the fault at least once. No query may fail while the cached token is
/// usable: a failure counts against the pool unless the refresher said, after it, that the token is no
/// longer usable (a query on a stalled machine may start too late), which is told by events, not by
/// comparing clocks.
/// (b) After expiry, with the fault still on: a new connection fails with
/// `ConnectError::Token(TokenError::Unavailable { last_error: Some(cause) })`, `cause` of `class`, and
/// does not hang.
/// (c) The fault is cleared: the pool serves queries again (how soon is the refresher's backoff, checked
/// on the paused clock in entra-token).
/// (d) Once the pool is dropped, no task it started is left on the test runtime.
async fn token_fault_case(fault: Fault, class: Class) {
    // The short timeout only where it is the subject; elsewhere a bound that catches a hang, for the HTTP
    // request and the fetch attempt around it.
    let timeout_is_the_subject = matches!(fault, Fault::NoResponse | Fault::SlowBody(_));
    // refresh 3 s into a 5 s token: the refresher fails while the token is still good for 1.5 s
    let policy = RefreshPolicy::short_lived().refresh_margin(Duration::from_secs(2));
    let (http, policy) = if timeout_is_the_subject {
        (http_timing_out_after(REQUEST_TIMEOUT), policy)
    } else {
        (
            http_timing_out_after(REQUEST_HANG),
            policy.fetch_timeout(REQUEST_HANG),
        )
    };
    let emulator = Emulator::builder()
        .token_lifetime(TOKEN_LIFETIME)
        .start()
        .await
        .unwrap();
    let baseline = alive_tasks();
    let pool = pool_builder(&emulator)
        .with_config(|c| {
            c.http_options(http)
                .refresh_policy(policy)
                .token_wait(Duration::from_secs(2))
        })
        .max_size(8)
        .max_lifetime(Some(Duration::from_millis(300)))
        .reaper_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let status = pool.status().token.unwrap();
    let usable_until = status.usable_until.unwrap();
    emulator.identity().set_persistent_fault(Some(fault.clone()));
    let sessions_before = emulator.gate().sessions().len();

    // (a) steady state
    let ok = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, ok, failures, stop) = (pool.clone(), ok.clone(), failures.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A generous bound: it catches a real hang, not a slow moment on a loaded 2-core machine.
                match tokio::time::timeout(HANG, select_one(&pool)).await {
                    Ok(Ok(())) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    // Read after the failure: a token the refresher no longer serves explains it.
                    Ok(Err(_)) if !pool.status().token.is_some_and(|t| t.is_usable()) => {}
                    Ok(Err(e)) => failures.lock().push(e),
                    Err(_) => failures.lock().push(format!("a query hung for {HANG:?}")),
                }
            }
        }));
    }
    bounded(
        PHASE_HANG.as_secs(),
        "the refresher's first failed renewal",
        async {
            while pool.status().token.unwrap().consecutive_failures == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        bounded(HANG.as_secs() + 10, "a query task", t).await.unwrap();
    }
    let status = pool.status().token.unwrap();
    let failures = failures.lock().clone();
    assert!(
        failures.is_empty(),
        "{fault:?}: {} queries failed while the cached token was valid: {failures:?}",
        failures.len()
    );
    assert!(
        status.consecutive_failures >= 1,
        "{fault:?}: the refresher never hit the fault while the token was valid: {status:?}"
    );
    let opened = emulator.gate().sessions().len() - sessions_before;
    assert!(
        opened >= 2,
        "{fault:?}: only {opened} connections opened during the fault"
    );
    assert!(ok.load(Ordering::Relaxed) > 0);

    // (b) after expiry: a typed error, not a hang
    let now = Instant::now();
    if usable_until > now {
        tokio::time::sleep(usable_until - now + Duration::from_millis(400)).await;
    }
    let err = bounded(PHASE_HANG.as_secs(), "a get() after expiry that fails", async {
        loop {
            // a connection younger than max_lifetime may still be handed out until it ages out
            match bounded(60, "get after expiry", pool.get()).await {
                Ok(client) => {
                    drop(client);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => break e,
            }
        }
    })
    .await;
    match ConnectError::find(&err) {
        Some(ConnectError::Token(TokenError::Unavailable {
            last_error: Some(cause),
            ..
        })) => assert!(
            class.matches(cause),
            "{fault:?}: expected a cause of class {class:?}, got {cause:?}"
        ),
        other => panic!(
            "{fault:?}: expected ConnectError::Token(Unavailable), got {other:?}: {}",
            entra_postgres::report(&err)
        ),
    }

    // (c) recovery
    emulator.identity().set_persistent_fault(None);
    let cleared = Instant::now();
    bounded(PHASE_HANG.as_secs(), "recovery after the fault cleared", async {
        while bounded(60, "select during recovery", select_one(&pool))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eprintln!(
        "{fault:?}: recovered {:?} after the fault cleared",
        cleared.elapsed()
    );
    drop(pool);
    assert_no_task_leak(baseline, &format!("{fault:?}")).await;
}

fn json_fault(value: serde_json::Value) -> Fault {
    Fault::Json(value)
}

macro_rules! token_fault {
    ($($name:ident: $fault:expr => $class:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            token_fault_case($fault, $class).await;
        }
    )*};
}

token_fault! {
    token_endpoint_timeout: Fault::NoResponse => Class::Transient(None);
    token_endpoint_closes_the_connection: Fault::Close => Class::Transient(None);
    token_endpoint_throttles_with_retry_after: Fault::throttled(1) => Class::Throttled(Duration::from_secs(1));
    token_endpoint_500: Fault::status(500) => Class::Transient(Some(500));
    token_endpoint_503: Fault::status(503) => Class::Transient(Some(503));
    imds_updating_404: Fault::status(404) => Class::Transient(Some(404));
    // Azure documents IMDS answering 410 for up to 70 s while it updates; scaled to this case's ~5 s.
    imds_updating_410: Fault::status(410) => Class::Transient(Some(410));
    token_endpoint_malformed_json: Fault::Malformed => Class::Invalid;
    token_response_missing_access_token: json_fault(serde_json::json!({
        "expires_in": "3600", "token_type": "Bearer"
    })) => Class::Invalid;
    token_response_missing_expiry: json_fault(serde_json::json!({
        "access_token": "eyJhbGciOiJub25lIn0.e30.", "token_type": "Bearer"
    })) => Class::Invalid;
    token_response_wrong_types: json_fault(serde_json::json!({
        "access_token": 42, "expires_in": true
    })) => Class::Invalid;
    token_response_oversized: Fault::Oversized(1024 * 1024) => Class::Invalid;
    token_response_truncated: Fault::Truncated => Class::Invalid;
    // the headers (200) arrived, the body did not within the request timeout (it takes far longer)
    token_response_slow_body: Fault::SlowBody(Duration::from_secs(60)) => Class::Transient(Some(200));
    token_endpoint_html_error_page: Fault::Html => Class::Transient(Some(500));
    identity_not_found: Fault::Status {
        status: 400,
        body: r#"{"error":"invalid_request","error_description":"Identity not found"}"#.into(),
        retry_after: None,
    } => Class::NoIdentity;
}

/// How long one write transaction may take, faults included, before it counts as a hang (asserted never
/// to happen): the pool's own bounds (connect 1 s, create 2 s, wait 3 s) end every attempt well before,
/// and a statement a busy machine delays is far below it.
const ATTEMPT_BOUND: Duration = Duration::from_secs(60);

/// What the writers saw. A (task, seq) is either acknowledged (COMMIT returned Ok) or failed (an error
/// was returned to the caller; the row may or may not have been committed).
#[derive(Default)]
struct Ledger {
    acked: Mutex<BTreeSet<(i32, i32)>>,
    failed: Mutex<BTreeSet<(i32, i32)>>,
    errors: Mutex<Vec<String>>,
    rejected_hints: Mutex<Vec<String>>,
    hangs: AtomicU64,
}

impl Ledger {
    fn acked(&self) -> usize {
        self.acked.lock().len()
    }

    fn errors(&self) -> usize {
        self.errors.lock().len()
    }
}

/// One small write transaction: INSERT … RETURNING id, then COMMIT.
async fn write_row(pool: &EntraPool, task: i32, seq: i32) -> Result<i64, (String, Option<String>)> {
    let mut client = pool.get().await.map_err(|e| {
        let hint = match ConnectError::find(&e) {
            Some(ConnectError::TokenRejected { hint, .. }) => Some(hint.clone()),
            _ => None,
        };
        (entra_postgres::report(&e), hint)
    })?;
    let db = |e: tokio_postgres::Error| (entra_postgres::report(&e), None);
    let tx = client.transaction().await.map_err(db)?;
    let row = tx
        .query_one(
            "INSERT INTO fault_writes (task, seq) VALUES ($1, $2) RETURNING id",
            &[&task, &seq],
        )
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(row.get(0))
}

fn spawn_writer(
    pool: EntraPool,
    task: i32,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq = 0;
        while !stop.load(Ordering::Relaxed) {
            // A failed attempt's seq is never reused: its COMMIT may have reached the server.
            match tokio::time::timeout(ATTEMPT_BOUND, write_row(&pool, task, seq)).await {
                Ok(Ok(_id)) => {
                    ledger.acked.lock().insert((task, seq));
                }
                Ok(Err((report, hint))) => {
                    ledger.failed.lock().insert((task, seq));
                    ledger.errors.lock().push(report);
                    if let Some(hint) = hint {
                        ledger.rejected_hints.lock().push(hint);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    ledger.failed.lock().insert((task, seq));
                    ledger.hangs.fetch_add(1, Ordering::Relaxed);
                }
            }
            seq += 1;
        }
    })
}

/// Waits until the writers have acknowledged `n` more rows, failing after `secs` seconds (a hang: a
/// recovery takes a second or two).
async fn progress(ledger: &Ledger, n: usize, secs: u64, after: &str) {
    let target = ledger.acked() + n;
    let started = Instant::now();
    while ledger.acked() < target {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "no recovery {secs} s after {after}: {} rows acknowledged, last errors: {:?}",
            ledger.acked(),
            ledger.errors.lock().iter().rev().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 8 writers commit small transactions while the server restarts, every session is terminated, the gate
/// stops accepting for 2 s and the principal is revoked then re-created. Every fault may fail
/// transactions, but only as errors returned to the caller and within the pool's bounds; afterwards
/// every acknowledged row is in the table, and every row in it was written by some attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_under_a_write_workload_lose_no_acknowledged_row() {
    let emulator = Emulator::start().await.unwrap();
    let user = emulator.user().to_string();
    let gate = emulator.gate();
    let baseline = alive_tasks();
    let pool = pool_builder(&emulator)
        .with_config(|c| c.connect_timeout(Duration::from_secs(1)))
        .max_size(8)
        .create_timeout(Some(Duration::from_secs(2)))
        .wait_timeout(Some(Duration::from_secs(3)))
        // The reaper notices a dropped pool at its next tick (default: up to 30 s later); tick often so
        // the task count below can come back to the baseline promptly.
        .reaper_interval(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    bounded(60, "create table", async {
        pool.get()
            .await
            .unwrap()
            .batch_execute(
                "CREATE TABLE fault_writes (id bigserial PRIMARY KEY, task int NOT NULL, \
                 seq int NOT NULL, UNIQUE (task, seq))",
            )
            .await
            .unwrap()
    })
    .await;

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|task| spawn_writer(pool.clone(), task, ledger.clone(), stop.clone()))
        .collect();
    progress(&ledger, 40, PHASE_HANG.as_secs(), "start").await;

    bounded(60, "restart_upstream", gate.restart_upstream())
        .await
        .unwrap();
    progress(&ledger, 40, PHASE_HANG.as_secs(), "the server restarted").await;

    let terminated = bounded(60, "terminate", gate.terminate_sessions(&user))
        .await
        .unwrap();
    assert!(terminated >= 1, "no session to terminate");
    progress(
        &ledger,
        40,
        PHASE_HANG.as_secs(),
        "pg_terminate_backend of every session",
    )
    .await;

    // Paused gate: connections wait in the listen queue; the pool's timeouts must end every attempt.
    let errors_before = ledger.errors();
    gate.pause_accepting(true);
    bounded(60, "terminate", gate.terminate_sessions(&user))
        .await
        .unwrap();
    // While paused, attempts end in errors (the pool's timeouts), not hangs: wait for one.
    bounded(
        PHASE_HANG.as_secs(),
        "an attempt failing while the gate is paused",
        async {
            while ledger.errors() == errors_before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    gate.pause_accepting(false);
    assert_eq!(
        ledger.hangs.load(Ordering::Relaxed),
        0,
        "an attempt outlived the pool's timeouts"
    );
    progress(&ledger, 40, PHASE_HANG.as_secs(), "the gate resumed accepting").await;

    // Revoked principal: open sessions stay, new sign-ins are refused with a hint.
    assert!(gate.revoke_principal(&user));
    bounded(60, "terminate", gate.terminate_sessions(&user))
        .await
        .unwrap();
    let started = Instant::now();
    while ledger.rejected_hints.lock().is_empty() {
        assert!(
            started.elapsed() < PHASE_HANG,
            "no TokenRejected {PHASE_HANG:?} after revocation; errors: {:?}",
            ledger.errors.lock().iter().rev().take(3).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for hint in ledger.rejected_hints.lock().iter() {
        assert!(hint.contains("pgaadauth_create_principal"), "{hint}");
    }
    bounded(
        60,
        "create_principal",
        gate.create_principal(&user, &emulator.principal().object_id, PrincipalKind::Service),
    )
    .await
    .unwrap();
    progress(&ledger, 40, PHASE_HANG.as_secs(), "the principal was re-created").await;

    stop.store(true, Ordering::Relaxed);
    // Above ATTEMPT_BOUND, so that an attempt that hung is counted as such before its writer stops.
    for w in writers {
        bounded(ATTEMPT_BOUND.as_secs() + 60, "a writer", w)
            .await
            .unwrap();
    }
    assert_eq!(ledger.hangs.load(Ordering::Relaxed), 0, "an attempt hung");

    let rows: BTreeSet<(i32, i32)> = bounded(60, "read back", async {
        pool.get()
            .await
            .unwrap()
            .query("SELECT task, seq FROM fault_writes", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
    .await;
    let acked = ledger.acked.lock().clone();
    let failed = ledger.failed.lock().clone();
    let lost: Vec<_> = acked.difference(&rows).collect();
    assert!(lost.is_empty(), "acknowledged rows missing: {lost:?}");
    let phantom: Vec<_> = rows
        .iter()
        .filter(|r| !acked.contains(r) && !failed.contains(r))
        .collect();
    assert!(phantom.is_empty(), "rows no attempt wrote: {phantom:?}");
    eprintln!(
        "acknowledged {}, failed attempts {} ({} of them committed anyway), errors seen {}",
        acked.len(),
        failed.len(),
        rows.len() - acked.len(),
        ledger.errors()
    );
    assert!(acked.len() >= 200);

    // The count below can see a leak: the pool's connections, refresher and reaper are alive now.
    assert!(alive_tasks() > baseline, "the task count does not see the pool");
    drop(pool);
    assert_no_task_leak(baseline, "write workload").await;
}

/// A TCP forwarder on 127.0.0.1 whose target port can be switched while it runs: the same address
/// serving first one server, then another, as when a server's certificate is replaced.
async fn switchable_forwarder(target: Arc<AtomicU16>) -> (u16, tokio::task::JoinHandle<()>) {
    let listen = "127.0.0.1:0".parse().unwrap();
    let (address, task) = entra_testkit::relay(listen, move || {
        std::net::SocketAddr::from(([127, 0, 0, 1], target.load(Ordering::Relaxed)))
    })
    .await
    .unwrap();
    (address.port(), task)
}

/// The server's certificate is replaced by one from a CA the client does not trust (emulated: the
/// address the pool connects to starts forwarding to a second emulator, whose CA is not the pool's
/// `sslrootcert`). Open connections keep working; new ones fail promptly with a TLS verification error;
/// once the trusted certificate is back, new connections succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_replaced_by_an_untrusted_one_fails_new_connections_only() {
    let trusted = Emulator::start().await.unwrap();
    let untrusted = Emulator::start().await.unwrap();
    let target = Arc::new(AtomicU16::new(trusted.port()));
    let (port, forwarder) = switchable_forwarder(target.clone()).await;
    let pool = pool_builder(&trusted)
        .with_config(|c| c.port(port).connect_timeout(Duration::from_secs(1)))
        .max_size(2)
        .create_timeout(Some(Duration::from_secs(3)))
        .build()
        .await
        .unwrap();
    let held = bounded(60, "get", pool.get()).await.unwrap();

    target.store(untrusted.port(), Ordering::Relaxed);
    let err = bounded(60, "get with the replaced certificate", pool.get())
        .await
        .unwrap_err();
    let text = entra_postgres::report(&err);
    assert!(text.contains("invalid peer certificate"), "{text}");
    let row = held.query_one("SELECT 7::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7, "an open connection keeps working");
    assert!(
        untrusted.gate().sessions().is_empty(),
        "a session reached the untrusted server: the token was sent to it"
    );

    target.store(trusted.port(), Ordering::Relaxed);
    let second = bounded(60, "get with the trusted certificate back", pool.get())
        .await
        .unwrap();
    second.query_one("SELECT 1", &[]).await.unwrap();
    drop((held, second, pool));
    forwarder.abort();
}
