//! The headline: 64 tasks query through nine rotations of tokens that live 3 s (until those events, not
//! for a span of wall clock). No query fails, every new connection uses the token current at its creation
//! (by the order of the refresher's and the connector's events, never by comparing clocks), token
//! requests follow rotations (no storm), and no log line carries a token. One test in this binary: it installs the global log capture.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use entra_emulator::{Emulator, TokenFingerprint};
use entra_testkit::{bounded, pool_builder};
use parking_lot::Mutex;

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
    let pool = pool_builder(&emulator)
        .max_size(16)
        .max_lifetime(Some(Duration::from_secs(1))) // churn connections so many are created
        .reaper_interval(Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    let tokens = pool.tokens().unwrap().clone();

    // Record every token the refresher publishes: its generation and its fingerprint (as the gate
    // computes it).
    let published: Arc<Mutex<BTreeMap<u64, TokenFingerprint>>> = Arc::default();
    let secrets: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = {
        let (published, secrets) = (published.clone(), secrets.clone());
        move |t: entra_token::AccessToken| {
            if let std::collections::btree_map::Entry::Vacant(slot) = published.lock().entry(t.generation()) {
                slot.insert(TokenFingerprint::of(t.secret()));
                secrets.lock().push(t.secret().to_string());
            }
        }
    };
    record(tokens.current().unwrap());
    let watcher = {
        let (tokens, record) = (tokens.clone(), record.clone());
        let mut rx = tokens.watch();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if let Some(t) = tokens.current() {
                    record(t);
                }
            }
        })
    };

    // The load lasts until events have happened (nine rotations, 30 sessions, 1000 queries), not for a
    // span of wall clock: a busy machine only makes it longer, under a bound that catches a hang.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (pool, ok, failed, stop) = (pool.clone(), ok.clone(), failed.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
                    client
                        .query_one("SELECT 1::int4", &[])
                        .await
                        .map_err(|e| entra_postgres::report(&e))
                };
                match tokio::time::timeout(Duration::from_secs(60), result).await {
                    Ok(Ok(row)) if row.get::<_, i32>(0) == 1 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("query failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    bounded(180, "nine rotations, 30 sessions and 1000 queries", async {
        while tokens.generation() < 10
            || emulator.gate().sessions().len() <= 30
            || ok.load(Ordering::Relaxed) <= 1000
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        bounded(120, "a load task", t).await.unwrap();
    }
    watcher.abort();

    let published = published.lock().clone();
    let rotations = tokens.generation() - 1;
    let sessions = emulator.gate().sessions();
    let requests = emulator.identity().token_requests() as u64;
    eprintln!(
        "queries ok={} failed={} rotations={rotations} token requests={requests} sessions={}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        sessions.len()
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no query may fail");
    assert!(ok.load(Ordering::Relaxed) > 1000);
    assert!(
        rotations >= 9,
        "the load spanned at least 9 rotations of 3 s tokens, saw {rotations}"
    );
    assert!(
        requests <= rotations + 2,
        "{requests} token requests for {} tokens: a storm",
        rotations + 1
    );
    assert!(
        sessions.len() > 30,
        "connections were churned: {} sessions",
        sessions.len()
    );

    // Every session signed in with a token the refresher published.
    for s in &sessions {
        assert!(
            published.values().any(|fp| *fp == s.token),
            "session {} used a token the refresher never handed out",
            s.id
        );
    }

    let logs = String::from_utf8_lossy(&capture.0.lock()).into_owned();
    assert!(
        logs.contains("token_fetch"),
        "the capture saw the refresher's spans"
    );
    // Each new connection took the token current when it began: the generation it signed in with is
    // never older than the newest one published before it asked (read in that order by the connector,
    // so no clock is compared).
    let sign_ins: Vec<(u64, u64)> = logs
        .lines()
        .filter(|line| line.contains("signing in with the current token"))
        .map(|line| (field(line, "known_generation"), field(line, "token_generation")))
        .collect();
    assert!(
        sign_ins.len() >= sessions.len(),
        "{} sign-ins logged for {} gate sessions",
        sign_ins.len(),
        sessions.len()
    );
    for (known, used) in &sign_ins {
        assert!(
            used >= known,
            "a connection signed in with token {used} after token {known} was published"
        );
    }
    assert!(
        sign_ins
            .iter()
            .map(|(_, used)| used)
            .collect::<BTreeSet<_>>()
            .len() as u64
            >= rotations,
        "connections followed the rotations"
    );
    for secret in secrets.lock().iter() {
        assert!(!logs.contains(secret.as_str()), "a token appeared in the logs");
        assert!(
            !logs.contains(&secret[secret.len() - 24..]),
            "part of a token appeared in the logs"
        );
    }
}

/// The number a log line gives `name` (`name=42`).
fn field(line: &str, name: &str) -> u64 {
    let start = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        + name.len()
        + 1;
    line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {line:?}"))
}
