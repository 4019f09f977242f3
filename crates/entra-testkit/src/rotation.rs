//! Token rotations under load, for any front: tasks run a query through it while the emulator's short
//! tokens rotate, until what the assertions need has happened (events, however slow the machine); the
//! caller asserts on what [`RotationLoad`] saw.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entra_emulator::{Emulator, SessionRecord, TokenFingerprint};
use entra_token::{TokenHandle, TokenStatus};

use crate::{bounded, settled, until};

/// What a [`rotations_under_load`] run saw.
#[derive(Debug)]
pub struct RotationLoad {
    /// Queries answered with the right value.
    pub queries: u64,
    /// Queries that failed or answered wrongly (each printed as it happened).
    pub failed: u64,
    /// Token requests the identity endpoint served, read settled with `status`.
    pub requests: u64,
    /// The refresher's status at that moment.
    pub status: TokenStatus,
    /// Every session the gate signed in.
    pub sessions: Vec<SessionRecord>,
    /// Every token the refresher published during the run, as the gate fingerprints tokens.
    pub published: HashSet<TokenFingerprint>,
}

impl RotationLoad {
    /// The distinct tokens the gate's sessions signed in with.
    pub fn tokens_used(&self) -> HashSet<TokenFingerprint> {
        self.sessions.iter().map(|s| s.token.clone()).collect()
    }
}

/// `tasks` tasks each run `query(v)`, which must answer `v * 2`, for at least `at_least`, and then until
/// the gate's sessions signed in with `tokens` distinct tokens and `queries` queries were answered; the
/// hang bound is 180 s. Every token the refresher publishes meanwhile is recorded.
pub async fn rotations_under_load<F, Fut>(
    emulator: &Emulator,
    handle: &TokenHandle,
    tasks: i64,
    at_least: Duration,
    tokens: usize,
    queries: u64,
    query: F,
) -> RotationLoad
where
    F: Fn(i64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<i64, String>> + Send,
{
    let published: Arc<Mutex<HashSet<TokenFingerprint>>> = Arc::default();
    let record = {
        let published = published.clone();
        move |handle: &TokenHandle| {
            if let Some(token) = handle.current() {
                published
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(TokenFingerprint::of(token.secret()));
            }
        }
    };
    // Subscribed before the first record: a token published in between is then a change, not missed.
    let mut changes = handle.watch();
    record(handle);
    let watcher = {
        let (handle, record) = (handle.clone(), record.clone());
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                record(&handle);
            }
        })
    };

    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (answered, failed, stop, query) = (answered.clone(), failed.clone(), stop.clone(), query.clone());
        running.spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let v = task * 1_000_000 + n;
                match bounded(60, "a query", query(v)).await {
                    Ok(doubled) if doubled == v * 2 => answered.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("query {n} of task {task} failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                n += 1;
            }
        });
    }
    let started = Instant::now();
    until(
        180,
        "the load's least time, sessions signed in with the tokens asked for, and the queries",
        || {
            let used: HashSet<_> = emulator.gate().sessions().into_iter().map(|s| s.token).collect();
            started.elapsed() >= at_least
                && used.len() >= tokens
                && answered.load(Ordering::Relaxed) > queries
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = bounded(60, "the load to stop", running.join_next()).await {
        joined.expect("no task panicked");
    }
    watcher.abort();
    // A token published after the last reading above is recorded before the counts are settled.
    record(handle);
    let (requests, status) = settled(emulator, handle).await;
    let published = published.lock().unwrap_or_else(|e| e.into_inner()).clone();
    RotationLoad {
        queries: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        requests,
        status,
        sessions: emulator.gate().sessions(),
        published,
    }
}
