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
//!
//! **Early hand-over.** Connections opened together (a pool filling at start-up, a burst after a
//! failover) retire together, more of them at once than there are spares, and the checkouts past the last
//! spare would sign in themselves. So a connection in the last [`EARLY_FRACTION`] of its lifetime retires at
//! its next checkout when a spare can take its place: while at least two spares are ready (one stays for a
//! connection that reaches its lifetime), and no sooner after the previous early retirement than the last
//! spare took to open, so early retirements run at the pace the spares are replaced. A burst of
//! retirements is thereby spread over the lead before it; the price is lifetimes up to that fraction
//! shorter, so up to 18 % more sign-ins (one every 51 minutes instead of every hour with the default
//! lifetime).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::EntraConnect;

/// The share of a connection's lifetime, at its end, in which it may hand its place to a spare early
/// (replace-ahead); the proxy's warm sessions are renewed from the same point of their lifetime.
pub const EARLY_FRACTION: f64 = 0.15;

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
    pace: Mutex<Pace>,
}

/// When the last early retirement was, and how long the last spare took to open.
#[derive(Default)]
struct Pace {
    last_early: Option<Instant>,
    open_took: Duration,
    early: u64,
}

impl Pace {
    /// One early retirement, if `ready` spares allow it now; counted when allowed.
    fn allows(&mut self, ready: usize, now: Instant) -> bool {
        // One spare stays for a connection that reaches its lifetime before an early hand-over.
        if ready < 2 {
            return false;
        }
        if self
            .last_early
            .is_some_and(|last| now.saturating_duration_since(last) < self.open_took)
        {
            return false;
        }
        self.last_early = Some(now);
        self.early += 1;
        true
    }
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
    /// Connections retired early, near the end of their lifetime, because a spare could take their place
    /// (see [`PoolBuilder::replace_ahead`](crate::PoolBuilder::replace_ahead)).
    pub retired_early: u64,
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
            pace: Mutex::new(Pace::default()),
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

    /// Whether a connection near the end of its lifetime may retire now, a spare taking its place: two or
    /// more spares ready, and the last early retirement at least one spare's opening time ago. Counted
    /// when it answers yes.
    pub(crate) fn retire_early(&self, now: Instant) -> bool {
        let ready = self.ready.lock().len();
        self.pace.lock().allows(ready, now)
    }

    /// The spares' part of the counts (`opened_in_checkout` is the connector's).
    pub(crate) fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            opened_in_checkout: 0,
            opened_ahead: self.opened.load(Ordering::Relaxed),
            taken_ahead: self.taken.load(Ordering::Relaxed),
            retired_early: self.pace.lock().early,
            spares_ready: self.ready.lock().len(),
        }
    }

    fn opened_one(&self, spare: Spare, took: Duration) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.pace.lock().open_took = took;
        self.ready.lock().push_back(spare);
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
            let started = Instant::now();
            match connect.open_new().await {
                Ok((client, task)) => {
                    let made = Instant::now();
                    spares.opened_one(Spare { client, task, made }, made - started);
                }
                Err(e) => {
                    tracing::debug!(error = ?crate::report(&e), "replace-ahead could not open a spare; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        spares.ready.lock().clear();
        tracing::trace!("replace-ahead stopped");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_retirements_keep_one_spare_back() {
        let mut pace = Pace::default();
        let now = Instant::now();
        assert!(!pace.allows(0, now));
        assert!(
            !pace.allows(1, now),
            "the last spare is kept for a connection at its lifetime"
        );
        assert!(pace.allows(2, now));
        assert_eq!(pace.early, 1);
    }

    #[test]
    fn early_retirements_run_at_the_pace_spares_open() {
        let mut pace = Pace {
            open_took: Duration::from_millis(60),
            ..Pace::default()
        };
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(pace.allows(4, at(0)));
        assert!(!pace.allows(4, at(59)), "sooner than a spare takes to open");
        assert!(pace.allows(4, at(60)));
        assert!(!pace.allows(4, at(100)));
        assert!(pace.allows(4, at(125)));
        assert_eq!(pace.early, 3);
    }
}
