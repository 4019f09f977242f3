//! The headline: 64 tasks query for 30 s while tokens live 3 s. No query fails, every new connection
//! uses the token current at its creation, token requests follow rotations (no storm), and no log line
//! carries a token. One test in this binary: it installs the global log capture.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use entra_emulator::{Emulator, TokenFingerprint};
use parking_lot::Mutex;
use support::{bounded, builder};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_outlives_many_tokens_under_load() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .unwrap();

    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(3))
        .gate_skew(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let pool = builder(&emulator)
        .max_size(16)
        .max_lifetime(Some(Duration::from_secs(1))) // churn connections so many are created
        .reaper_interval(Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    let tokens = pool.tokens().unwrap().clone();

    // Record every rotation: when it happened and the token's fingerprint (as the gate computes it).
    let rotations: Arc<Mutex<Vec<(SystemTime, TokenFingerprint)>>> = Arc::default();
    let secrets: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let first = tokens.current().unwrap();
        rotations.lock().push((
            SystemTime::now() - Duration::from_millis(100),
            TokenFingerprint::of(first.secret()),
        ));
        secrets.lock().push(first.secret().to_string());
    }
    let watcher = {
        let (rotations, secrets, tokens) = (rotations.clone(), secrets.clone(), tokens.clone());
        let mut rx = tokens.watch();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if let Some(t) = tokens.current() {
                    let fp = TokenFingerprint::of(t.secret());
                    let mut r = rotations.lock();
                    if r.last().map(|(_, last)| last != &fp).unwrap_or(true) {
                        r.push((SystemTime::now(), fp));
                        secrets.lock().push(t.secret().to_string());
                    }
                }
            }
        })
    };

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (pool, ok, failed) = (pool.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let result = async {
                    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
                    client
                        .query_one("SELECT 1::int4", &[])
                        .await
                        .map_err(|e| entra_postgres::report(&e))
                };
                match tokio::time::timeout(Duration::from_secs(10), result).await {
                    Ok(Ok(row)) if row.get::<_, i32>(0) == 1 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("query failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        bounded(60, "a load task", t).await.unwrap();
    }
    watcher.abort();

    let rotations = rotations.lock().clone();
    let sessions = emulator.gate().sessions();
    let requests = emulator.identity().token_requests();
    eprintln!(
        "queries ok={} failed={} rotations={} token requests={} sessions={}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        rotations.len() - 1,
        requests,
        sessions.len()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no query may fail");
    assert!(ok.load(Ordering::Relaxed) > 1000);
    assert!(
        rotations.len() > 9,
        "at least 9 rotations in 30 s of 3 s tokens, saw {}",
        rotations.len() - 1
    );
    assert!(
        requests <= rotations.len() + 1,
        "{requests} token requests for {} tokens: a storm",
        rotations.len()
    );
    assert!(
        sessions.len() > 30,
        "connections were churned: {} sessions",
        sessions.len()
    );

    // Each connection used the token that was current when it was created.
    let slack = Duration::from_millis(200);
    for s in &sessions {
        let k = rotations
            .iter()
            .position(|(_, fp)| *fp == s.token)
            .unwrap_or_else(|| panic!("session {} used a token the refresher never handed out", s.id));
        assert!(
            s.at + slack >= rotations[k].0,
            "session {} predates its token",
            s.id
        );
        if let Some((next_at, _)) = rotations.get(k + 1) {
            assert!(
                s.at <= *next_at + slack,
                "session {} used a stale token after a rotation",
                s.id
            );
        }
    }

    let logs = String::from_utf8_lossy(&capture.0.lock()).into_owned();
    assert!(
        logs.contains("token_fetch"),
        "the capture saw the refresher's spans"
    );
    for secret in secrets.lock().iter() {
        assert!(!logs.contains(secret.as_str()), "a token appeared in the logs");
        assert!(
            !logs.contains(&secret[secret.len() - 24..]),
            "part of a token appeared in the logs"
        );
    }
}
