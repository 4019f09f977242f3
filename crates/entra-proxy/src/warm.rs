//! Warm sessions: upstream sessions signed in ahead of their clients, so that a client that connects
//! does not wait for a sign-in ([`ProxyBuilder::warm`](crate::ProxyBuilder::warm)).
//!
//! - **One client each, never reused.** A warm session is handed to exactly one client and ends with
//!   it, as a fresh one would: nothing a client did can reach another.
//! - **The client's own start.** The client's startup parameters are applied with `set_config` in one
//!   round trip ([`RawSession::apply_parameters`]); what the server reports back is in the greeting the
//!   client gets, then a backend key of the proxy's own and `ReadyForQuery`, as for a fresh session.
//!   Only the parameters a transaction-mode PgBouncer tracks per client ([`TRACKED`]) are applied so:
//!   behind such a pooler (Azure's on port 6432) a parameter set by SQL on a shared server connection
//!   would reach its next client unless the pooler restores it, and it restores exactly these. A client
//!   with any other parameter (`search_path`, `options`…) gets a fresh session, as does one whose
//!   parameters the server refuses to set: the server decides, and the fresh session then answers
//!   exactly as a server does at startup.
//! - **Never a dead one.** A warm session is checked for a closed socket while it waits and again when
//!   it is taken, and the round trip that applies the parameters (made even when there are none) proves
//!   it is open before the client is greeted; a session that fails any of these is dropped and the next
//!   one (or a fresh sign-in) is used.
//! - **Renewed ahead.** A warm session is replaced from the point of its lifetime where the pool's
//!   replace-ahead starts ([`REPLACE_AHEAD_FRACTION`] before its end; the new one is signed in first)
//!   and never handed out past its lifetime.
//! - **Clients first.** Each warm session holds one of the `max_size` upstream slots, taken only when
//!   one is free and no client waits for one (a waiting client always gets a freed slot first). A client
//!   that waits takes the next warm session signed in, or, if it cannot use one, its slot.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{RawSession, SessionError, REPLACE_AHEAD_FRACTION};
use entra_token::RetryPolicy;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::stats::Counters;
use crate::Shared;

/// How often idle warm sessions are checked for a closed socket between hand-overs.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// The shortest lifetime a warm session is given: shorter would have the warmer sign in without pause.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// The startup parameters a warm session takes on for its client: those PgBouncer tracks per client
/// in transaction mode (`client_encoding`, `DateStyle`, `TimeZone`, `standard_conforming_strings`,
/// `application_name`, and `IntervalStyle` in its default `track_extra_parameters`), compared as
/// PostgreSQL compares parameter names, without regard to case.
pub(crate) const TRACKED: [&str; 6] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
];

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
    /// Wakes the warmer when a session was taken or a client's session ended.
    taken: Notify,
    /// Wakes clients waiting for a slot when a warm session is ready.
    pushed: Notify,
}

/// Whether a client with these startup parameters can be given a warm session: every one of them is
/// [`TRACKED`].
pub(crate) fn eligible(parameters: &[(String, String)]) -> bool {
    parameters
        .iter()
        .all(|(k, _)| TRACKED.iter().any(|t| t.eq_ignore_ascii_case(k)))
}

impl Warm {
    pub(crate) fn new(target: usize, lifetime: Duration) -> Self {
        Warm {
            target,
            lifetime,
            idle: Mutex::new(VecDeque::new()),
            taken: Notify::new(),
            pushed: Notify::new(),
        }
    }

    /// When a session opened at `opened` is due for renewal.
    fn renew_at(&self, opened: Instant) -> Instant {
        opened + self.lifetime.mul_f64(1.0 - REPLACE_AHEAD_FRACTION)
    }

    /// Whether a session opened at `opened` is past its lifetime at `now`: never handed out.
    fn lapsed(&self, opened: Instant, now: Instant) -> bool {
        now >= opened + self.lifetime
    }

    /// Wakes the warmer: a slot may be free.
    pub(crate) fn wake(&self) {
        self.taken.notify_one();
    }

    /// Resolves once a warm session is ready after this call; enable it before looking, so none is
    /// missed.
    pub(crate) fn pushed(&self) -> tokio::sync::futures::Notified<'_> {
        self.pushed.notified()
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
            if self.lapsed(next.opened, now) {
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
        let idle = {
            let mut idle = self.idle.lock();
            let oldest = idle.pop_front()?;
            counters.warm_idle.sub();
            oldest
        };
        counters.warm_retired.add();
        self.taken.notify_one();
        // Dropped rather than closed politely: the client is waiting for the slot.
        drop(idle.session);
        Some(idle.slot)
    }

    fn push(&self, counters: &Counters, session: RawSession, slot: OwnedSemaphorePermit, opened: Instant) {
        let mut idle = self.idle.lock();
        idle.push_back(Idle {
            session,
            slot,
            opened,
        });
        // Counted while the lock is held, so a take cannot count it out first.
        counters.warm_idle.add();
        drop(idle);
        self.pushed.notify_waiters();
    }

    /// Drops idle sessions found closed and those past their lifetime, and retires those due for
    /// renewal once enough younger ones are warm. Returns how many are warm and not due, when the next
    /// one falls due (or lapses), the retired sessions (to close politely) and how many were found
    /// closed.
    fn sweep(&self, counters: &Counters, now: Instant) -> Sweep {
        let mut idle = self.idle.lock();
        let mut closing = Vec::new();
        let before = idle.len();
        let closed_before = counters.warm_discarded_closed.get();
        idle.retain_mut(|warm| {
            if self.lapsed(warm.opened, now) {
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
        Sweep {
            fresh,
            next_due,
            closing,
            found_closed: counters.warm_discarded_closed.get() > closed_before,
        }
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

    /// Takes every idle warm session out, to close (counted as retired).
    pub(crate) fn drain_all(&self, counters: &Counters) -> Vec<RawSession> {
        let all: Vec<Idle> = {
            let mut idle = self.idle.lock();
            let all: Vec<Idle> = idle.drain(..).collect();
            for _ in &all {
                counters.warm_idle.sub();
                counters.warm_retired.add();
            }
            all
        };
        all.into_iter().map(|w| w.session).collect()
    }
}

/// What a sweep found.
struct Sweep {
    /// Warm sessions not due for renewal.
    fresh: usize,
    /// When the next one falls due, or lapses.
    next_due: Option<Instant>,
    /// Sessions retired, to close politely.
    closing: Vec<RawSession>,
    /// Whether a session was found closed by its server.
    found_closed: bool,
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
    // Failures in a row: failed sign-ins, sessions that arrive due or are found closed (a server that
    // ends idle sessions), each backing the warmer off by the token's retry rule.
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let backoff = RetryPolicy::default();
    let failed = |failures: &mut u32, why: &str| {
        *failures = failures.saturating_add(1);
        let wait = backoff.backoff_ceiling(*failures);
        tracing::warn!(retry_in = ?wait, "proxy: {why}; warming again later");
        Instant::now() + wait
    };
    loop {
        if *draining.borrow_and_update() {
            break;
        }
        let now = Instant::now();
        let sweep = warm.sweep(counters, now);
        close_all(sweep.closing).await;
        if sweep.found_closed {
            retry_at = Some(failed(&mut failures, "a warm session was ended by its server"));
        }
        // Clients waiting for a slot come first: no slot is taken for warming while one waits.
        let clients_wait = counters.waiting.get() > 0;
        if !clients_wait && retry_at.is_none_or(|at| now >= at) {
            retry_at = None;
            for _ in (sweep.fresh + opening.len())..warm.target {
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
        let wake_at = [sweep.next_due, retry_at, Some(now + CHECK_EVERY)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + CHECK_EVERY);
        tokio::select! {
            Some(done) = opening.join_next(), if !opening.is_empty() => match done {
                Ok((Ok(session), slot, started)) => {
                    counters.warm_opened.add();
                    if Instant::now() >= warm.renew_at(started) {
                        // Due on arrival: the sign-in took most of the lifetime. Kept while it lasts,
                        // but renewing at this pace would sign in without pause.
                        retry_at = Some(failed(&mut failures, "a warm session's sign-in took most of --warm-lifetime"));
                    } else {
                        failures = 0;
                    }
                    warm.push(counters, session, slot, started);
                }
                Ok((Err(e), _slot, _)) => {
                    tracing::warn!(
                        error = %entra_postgres::report(&e),
                        "proxy: a warm session could not be opened"
                    );
                    retry_at = Some(failed(&mut failures, "a warm session's sign-in failed"));
                }
                Err(_) => retry_at = Some(failed(&mut failures, "a warm session's sign-in task ended")),
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
