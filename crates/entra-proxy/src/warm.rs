//! Warm sessions: upstream sessions signed in ahead of their clients, so that a client that connects
//! does not wait for a sign-in ([`ProxyBuilder::warm`](crate::ProxyBuilder::warm)).
//!
//! - **One client each, never reused.** A warm session is handed to exactly one client and ends with
//!   it, as a fresh one would: nothing a client did can reach another.
//! - **The client's own start.** The client's startup parameters are applied with `set_config` in one
//!   round trip ([`RawSession::apply_parameters`]); what the server reports back is in the greeting the
//!   client gets, then a backend key of the proxy's own and `ReadyForQuery`, as for a fresh session. A
//!   client with `options` (settable only at connection start) gets a fresh session, and so does one
//!   whose parameters the server refuses to set: the server decides, and the fresh session then answers
//!   exactly as a server does at startup.
//! - **Never a dead one.** A warm session is checked for a closed socket while it waits and again when
//!   it is taken, and the round trip that applies the parameters (made even when there are none) proves
//!   it is open before the client is greeted; a session that fails any of these is dropped and the next
//!   one (or a fresh sign-in) is used.
//! - **Renewed ahead.** A warm session is replaced once it is nine tenths of its lifetime old (the new
//!   one is signed in first, as replace-ahead does for the pool) and never handed out past its lifetime.
//! - **Clients first.** Each warm session holds one of the `max_size` upstream slots, taken only when
//!   one is free (a waiting client always gets a freed slot first), and a client that needs a slot when
//!   none is free and cannot use a warm session takes a warm session's slot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{RawSession, SessionError};
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::Counters;
use crate::Shared;

/// How often idle warm sessions are checked for a closed socket between hand-overs.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest wait before warming again after failed sign-ins.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A warm session handed to a client, with the upstream slot it holds.
pub(crate) struct WarmSession {
    pub(crate) session: RawSession,
    pub(crate) slot: OwnedSemaphorePermit,
}

/// An idle warm session.
struct Idle {
    session: RawSession,
    slot: OwnedSemaphorePermit,
    opened: Instant,
}

/// The warm sessions of a proxy.
pub(crate) struct Warm {
    target: usize,
    lifetime: Duration,
    idle: Mutex<VecDeque<Idle>>,
    /// Wakes the warmer when a session was taken.
    taken: Notify,
}

/// Whether a client with these startup parameters can be given a warm session: `options` can only be
/// given at connection start.
pub(crate) fn eligible(parameters: &[(String, String)]) -> bool {
    !parameters.iter().any(|(k, _)| k == "options")
}

impl Warm {
    pub(crate) fn new(target: usize, lifetime: Duration) -> Self {
        Warm {
            target,
            lifetime,
            idle: Mutex::new(VecDeque::new()),
            taken: Notify::new(),
        }
    }

    /// When a session opened at `opened` is due for renewal.
    fn renew_at(&self, opened: Instant) -> Instant {
        opened + self.lifetime.mul_f64(0.9)
    }

    /// The oldest warm session still within its lifetime and open, if any; the others met on the way
    /// are dropped.
    pub(crate) fn take(&self, counters: &Counters) -> Option<WarmSession> {
        if self.target == 0 {
            return None;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock();
        let found = loop {
            let Some(mut next) = idle.pop_front() else {
                break None;
            };
            counters.warm_idle.sub();
            if now >= next.opened + self.lifetime {
                counters.warm_retired.add();
            } else if !next.session.is_open() {
                counters.warm_discarded_closed.add();
            } else {
                break Some(WarmSession {
                    session: next.session,
                    slot: next.slot,
                });
            }
        };
        drop(idle);
        self.taken.notify_one();
        found
    }

    /// Closes an idle warm session and returns its slot, for a client that needs one now.
    pub(crate) fn surrender(&self, counters: &Counters) -> Option<OwnedSemaphorePermit> {
        let idle = self.idle.lock().pop_back()?;
        counters.warm_idle.sub();
        counters.warm_retired.add();
        self.taken.notify_one();
        // Dropped rather than closed politely: the client is waiting for the slot.
        drop(idle.session);
        Some(idle.slot)
    }

    fn push(&self, counters: &Counters, session: RawSession, slot: OwnedSemaphorePermit, opened: Instant) {
        self.idle.lock().push_back(Idle {
            session,
            slot,
            opened,
        });
        counters.warm_idle.add();
    }

    /// Drops idle sessions found closed and those past their lifetime, and retires those due for
    /// renewal once enough younger ones are warm. Returns how many are warm and not due, when the next
    /// one falls due (or lapses), and the retired sessions, to close politely.
    fn sweep(&self, counters: &Counters, now: Instant) -> (usize, Option<Instant>, Vec<RawSession>) {
        let mut idle = self.idle.lock();
        let mut closing = Vec::new();
        let before = idle.len();
        idle.retain_mut(|warm| {
            if now >= warm.opened + self.lifetime {
                counters.warm_retired.add();
                false
            } else if !warm.session.is_open() {
                counters.warm_discarded_closed.add();
                false
            } else {
                true
            }
        });
        let fresh = idle.iter().filter(|w| now < self.renew_at(w.opened)).count();
        // Due ones stay warm (still within their lifetime) until enough replacements are.
        if fresh >= self.target {
            let (keep, due): (VecDeque<Idle>, VecDeque<Idle>) =
                idle.drain(..).partition(|w| now < self.renew_at(w.opened));
            *idle = keep;
            for old in due {
                counters.warm_retired.add();
                closing.push(old.session);
            }
        }
        for _ in idle.len()..before {
            counters.warm_idle.sub();
        }
        let next_due = idle
            .iter()
            .map(|w| {
                let renew = self.renew_at(w.opened);
                if renew > now {
                    renew
                } else {
                    w.opened + self.lifetime
                }
            })
            .min();
        (fresh, next_due, closing)
    }

    /// Takes a due session's slot (closing it), when a replacement finds no free one.
    fn take_due_slot(&self, counters: &Counters, now: Instant) -> Option<(RawSession, OwnedSemaphorePermit)> {
        let mut idle = self.idle.lock();
        let due = idle.front().is_some_and(|w| now >= self.renew_at(w.opened));
        let old = if due { idle.pop_front() } else { None }?;
        counters.warm_idle.sub();
        counters.warm_retired.add();
        Some((old.session, old.slot))
    }

    /// Takes every idle warm session out, to close.
    pub(crate) fn drain_all(&self, counters: &Counters) -> Vec<RawSession> {
        let all: Vec<Idle> = self.idle.lock().drain(..).collect();
        for _ in &all {
            counters.warm_idle.sub();
        }
        all.into_iter().map(|w| w.session).collect()
    }
}

/// Keeps the proxy's warm sessions signed in: as many as asked for, renewed ahead of their lifetime,
/// until the proxy drains or stops. Sign-ins run side by side, each with a slot taken only when free.
pub(crate) async fn keep_warm(shared: Arc<Shared>) {
    let warm = &shared.warm;
    if warm.target == 0 {
        return;
    }
    let counters = &shared.state.stats;
    let mut draining = shared.state.drain_signal();
    let mut opening: JoinSet<(Result<RawSession, SessionError>, OwnedSemaphorePermit, Instant)> =
        JoinSet::new();
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    loop {
        if *draining.borrow_and_update() {
            break;
        }
        let now = Instant::now();
        let (fresh, next_due, closing) = warm.sweep(counters, now);
        close_all(closing).await;
        if retry_at.is_none_or(|at| now >= at) {
            retry_at = None;
            for _ in (fresh + opening.len())..warm.target {
                let slot = match shared.upstream_slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => match warm.take_due_slot(counters, now) {
                        Some((old, slot)) => {
                            old.close().await;
                            slot
                        }
                        None => break,
                    },
                };
                let shared = shared.clone();
                opening.spawn(async move {
                    let started = Instant::now();
                    let opened = shared.connector.open_session(&[]).await;
                    shared.state.metrics.sign_in(started.elapsed(), opened.is_ok());
                    (opened, slot, started)
                });
            }
        }
        let wake_at = [next_due, retry_at, Some(now + CHECK_EVERY)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + CHECK_EVERY);
        tokio::select! {
            Some(done) = opening.join_next(), if !opening.is_empty() => match done {
                Ok((Ok(session), slot, started)) => {
                    failures = 0;
                    counters.warm_opened.add();
                    warm.push(counters, session, slot, started);
                }
                Ok((Err(e), _slot, _)) => {
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100)
                        .saturating_mul(2u32.saturating_pow(failures.min(16)))
                        .min(MAX_BACKOFF);
                    retry_at = Some(Instant::now() + backoff);
                    tracing::warn!(
                        error = %entra_postgres::report(&e),
                        retry_in = ?backoff,
                        "proxy: a warm session could not be opened"
                    );
                }
                Err(_) => {}
            },
            _ = warm.taken.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = crate::state::until_draining(&mut draining) => {}
        }
    }
    opening.shutdown().await;
    close_all(warm.drain_all(counters)).await;
}

/// Closes sessions politely, one after the other.
pub(crate) async fn close_all(sessions: Vec<RawSession>) {
    for session in sessions {
        session.close().await;
    }
}
