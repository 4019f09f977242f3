//! Replace-ahead: connections signed in in the background, ready before a checkout needs one.
//!
//! When a connection retires (`max_lifetime`, a failover), deadpool opens its replacement inside the next
//! `get()`, and that caller pays TCP, TLS and the Entra sign-in: tens of milliseconds against Azure. With
//! `PoolBuilder::replace_ahead(n)`, a task keeps `n` connections signed in and waiting; the connector hands
//! one over instead of signing in, and the task opens the next. A spare waits at most two `max_lifetime`s
//! (10 minutes without one, two hours at most) before it is closed and replaced, so a connection's whole
//! life stays within three lifetimes; a spare that dies waiting (a failover) is dropped. Why two: with as
//! many spares as connections, each spare waits about one lifetime (the time for every connection to
//! retire once), so a limit of one lifetime would close spares just before they are needed, and the
//! checkout they were made for would sign in itself. Spares are connections to the server beyond
//! the pool's `max_size`: count them against `max_connections`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::EntraConnect;

struct Spare {
    client: Client,
    task: JoinHandle<()>,
    made: Instant,
}

/// The spares of one pool, and how they were used.
pub(crate) struct Spares {
    ready: Mutex<VecDeque<Spare>>,
    target: usize,
    max_age: Duration,
    wanted: Notify,
    taken: AtomicU64,
    opened: AtomicU64,
}

/// How a pool's new connections came about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// Opened inside a `get()`: that caller waited for the sign-in.
    pub opened_in_checkout: u64,
    /// Opened in the background by replace-ahead.
    pub opened_ahead: u64,
    /// Handed to a `get()` from the spares, without waiting for a sign-in.
    pub taken_ahead: u64,
    /// Spares signed in and waiting now.
    pub spares_ready: usize,
}

impl Spares {
    pub(crate) fn new(target: usize, max_lifetime: Option<Duration>) -> Arc<Spares> {
        let max_age = 2 * max_lifetime
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(3600));
        Arc::new(Spares {
            ready: Mutex::new(VecDeque::new()),
            target,
            max_age,
            wanted: Notify::new(),
            taken: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        })
    }

    /// A live spare young enough to hand over, if there is one.
    pub(crate) fn take(&self) -> Option<(Client, JoinHandle<()>)> {
        let mut ready = self.ready.lock();
        while let Some(spare) = ready.pop_front() {
            if !spare.client.is_closed() && spare.made.elapsed() < self.max_age {
                drop(ready);
                self.taken.fetch_add(1, Ordering::Relaxed);
                self.wanted.notify_one();
                return Some((spare.client, spare.task));
            }
        }
        None
    }

    pub(crate) fn counts(&self) -> (u64, u64, usize) {
        (
            self.opened.load(Ordering::Relaxed),
            self.taken.load(Ordering::Relaxed),
            self.ready.lock().len(),
        )
    }

    /// Drops spares that died or waited too long; how many remain.
    fn prune(&self) -> usize {
        let mut ready = self.ready.lock();
        ready.retain(|s| !s.client.is_closed() && s.made.elapsed() < self.max_age);
        ready.len()
    }
}

/// Keeps `spares.target` spares ready until the pool is dropped or closed.
///
/// Spares are opened one at a time. Opening every missing one at once was measured (BENCHMARKS.md,
/// 2026-12-03): it cut the callers that waited for a sign-in from 7 to 4 per run, but it bunched the
/// sign-ins' CPU into the same moments, and p99.9 in sign-in windows rose from 1.10× to 1.6× the rest.
pub(crate) fn spawn_warmer(connect: EntraConnect, spares: Arc<Spares>, pool: deadpool_postgres::WeakPool) {
    tokio::spawn(async move {
        loop {
            match pool.upgrade() {
                Some(p) if !p.is_closed() => {}
                _ => break,
            }
            if spares.prune() >= spares.target {
                // Woken by a hand-over, or every second to prune the aged.
                let _ = tokio::time::timeout(Duration::from_secs(1), spares.wanted.notified()).await;
                continue;
            }
            match connect.open_new().await {
                Ok((client, task)) => {
                    spares.opened.fetch_add(1, Ordering::Relaxed);
                    spares.ready.lock().push_back(Spare {
                        client,
                        task,
                        made: Instant::now(),
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %crate::report(&e), "replace-ahead could not open a spare; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        spares.ready.lock().clear();
        tracing::trace!("replace-ahead stopped");
    });
}
