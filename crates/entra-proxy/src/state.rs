//! [`ProxyState`]: where a proxy is in its life (starting, serving, draining), its counters and its
//! metrics: what the sessions record and the health listener reads. It exists from the first moment of
//! [`ProxyBuilder::start`](crate::ProxyBuilder::start), before the first token, so the health listener
//! can answer while the proxy starts.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use entra_token::{TokenHandle, TokenState};
use tokio::sync::watch;

use crate::metrics::ProxyMetrics;
use crate::stats::Counters;

/// Why a proxy is not ready to take new sessions: what `/readiness` answers with its 503, and
/// [`ProxyHandle::readiness`](crate::ProxyHandle::readiness) returns. Names no secret and no role.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// [`start`](crate::ProxyBuilder::start) has not finished: no first token yet, the listeners not
    /// bound, or the connection test not passed.
    Starting,
    /// The proxy is draining ([`ProxyHandle::drain`](crate::ProxyHandle::drain)): it takes no new
    /// sessions.
    Draining,
    /// The loop that accepts clients has stopped, though the proxy was not asked to stop.
    NotAccepting,
    /// The token refresher has stopped.
    TokenStopped,
    /// No token can be handed out (expired, or rejected by the server), and renewing it fails.
    NoUsableToken {
        /// Failed renewals in a row.
        failures: u32,
        /// The identity endpoint's last HTTP status, if it answered one.
        status: Option<u16>,
    },
    /// The token is usable for less than the readiness margin
    /// ([`ProxyBuilder::readiness_margin`](crate::ProxyBuilder::readiness_margin)).
    TokenExpiring {
        /// How long it is still handed out.
        usable_for: Duration,
        /// The readiness margin.
        margin: Duration,
        /// Failed renewals in a row.
        failures: u32,
        /// The identity endpoint's last HTTP status, if it answered one.
        status: Option<u16>,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let renewal =
            |f: &mut fmt::Formatter<'_>, failures: u32, status: Option<u16>| match (failures, status) {
                (0, _) => Ok(()),
                (n, Some(status)) => write!(f, "; renewal failing ({n} attempts, last: HTTP {status})"),
                (n, None) => write!(f, "; renewal failing ({n} attempts)"),
            };
        match self {
            NotReady::Starting => f.write_str("starting: no first token yet, or listeners not bound yet"),
            NotReady::Draining => f.write_str("draining: not accepting new sessions"),
            NotReady::NotAccepting => f.write_str("not accepting connections: the accept loop has stopped"),
            NotReady::TokenStopped => f.write_str("no token: the token refresher has stopped"),
            NotReady::NoUsableToken { failures, status } => {
                f.write_str("no usable token")?;
                renewal(f, *failures, *status)
            }
            NotReady::TokenExpiring {
                usable_for,
                margin,
                failures,
                status,
            } => {
                write!(
                    f,
                    "token usable for {:.1} s only, under the {:.1} s readiness margin",
                    usable_for.as_secs_f64(),
                    margin.as_secs_f64()
                )?;
                renewal(f, *failures, *status)
            }
        }
    }
}

/// A proxy's life, counters and metrics.
pub(crate) struct ProxyState {
    pub(crate) stats: Counters,
    pub(crate) metrics: ProxyMetrics,
    /// `start` has finished: the first token, the listeners, the connection test.
    started: AtomicBool,
    /// The accept loop runs with its listeners open.
    accepting: AtomicBool,
    /// The accept loop ended though nobody asked it to: liveness fails.
    accept_loop_failed: AtomicBool,
    /// Set when the proxy is asked to stop at once, so the accept loop's end is not taken for a failure.
    stopping: AtomicBool,
    /// `true` once draining began; sessions and waiting clients watch it.
    draining: watch::Sender<bool>,
    tokens: OnceLock<TokenHandle>,
    readiness_margin: Duration,
}

impl ProxyState {
    pub(crate) fn new(metrics: ProxyMetrics, readiness_margin: Duration) -> Self {
        ProxyState {
            stats: Counters::default(),
            metrics,
            started: AtomicBool::new(false),
            accepting: AtomicBool::new(false),
            accept_loop_failed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            draining: watch::Sender::new(false),
            tokens: OnceLock::new(),
            readiness_margin,
        }
    }

    /// The token handle sessions sign in with, known once the first token was fetched.
    pub(crate) fn set_tokens(&self, tokens: TokenHandle) {
        let _ = self.tokens.set(tokens);
    }

    pub(crate) fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The accept loop began accepting.
    pub(crate) fn accept_loop_started(&self) {
        self.accepting.store(true, Ordering::Release);
    }

    /// The accept loop closed its listeners (draining).
    pub(crate) fn listeners_closed(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// The accept loop ended: after a drain or a stop that is expected; otherwise (a panic) the proxy
    /// no longer serves, and liveness says so.
    pub(crate) fn accept_loop_ended(&self) {
        self.accepting.store(false, Ordering::Release);
        if !self.is_draining() && !self.stopping.load(Ordering::Acquire) {
            self.accept_loop_failed.store(true, Ordering::Release);
        }
    }

    /// The proxy is being stopped at once.
    pub(crate) fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Draining begins: readiness fails from now on, new clients and waiting clients are refused, the
    /// accept loop closes its listeners.
    pub(crate) fn begin_drain(&self) {
        self.draining.send_replace(true);
    }

    pub(crate) fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// A receiver that sees draining begin.
    pub(crate) fn drain_signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Liveness: the accept loop has not died. While starting, and while draining, the proxy is alive.
    pub(crate) fn liveness(&self) -> Result<(), NotReady> {
        if self.accept_loop_failed.load(Ordering::Acquire) {
            return Err(NotReady::NotAccepting);
        }
        Ok(())
    }

    /// Readiness: started, not draining, accepting, and a token usable for at least the margin.
    pub(crate) fn readiness(&self) -> Result<(), NotReady> {
        if !self.is_started() {
            return Err(NotReady::Starting);
        }
        if self.is_draining() {
            return Err(NotReady::Draining);
        }
        if !self.accepting.load(Ordering::Acquire) {
            return Err(NotReady::NotAccepting);
        }
        let Some(tokens) = self.tokens.get() else {
            return Err(NotReady::Starting);
        };
        let status = tokens.status();
        let failures = status.consecutive_failures;
        let last_status = status
            .last_error
            .as_ref()
            .and_then(entra_token::TokenError::status);
        if status.state == TokenState::Stopped {
            return Err(NotReady::TokenStopped);
        }
        if !status.is_usable() {
            return Err(NotReady::NoUsableToken {
                failures,
                status: last_status,
            });
        }
        let usable_for = status.usable_for().unwrap_or_default();
        if usable_for < self.readiness_margin {
            return Err(NotReady::TokenExpiring {
                usable_for,
                margin: self.readiness_margin,
                failures,
                status: last_status,
            });
        }
        Ok(())
    }

    /// What `/metrics` serves.
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics.render(&self.stats, self.readiness().is_ok())
    }
}

/// Waits until draining begins (or the state is gone, which only happens once nothing waits).
pub(crate) async fn until_draining(signal: &mut watch::Receiver<bool>) {
    // The borrow the wait returns is dropped here, not held across the caller's awaits.
    let _ = signal.wait_for(|draining| *draining).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ProxyState {
        ProxyState::new(ProxyMetrics::new(None), Duration::from_secs(30))
    }

    #[test]
    fn a_proxy_is_alive_but_not_ready_while_it_starts() {
        let state = state();
        assert_eq!(state.readiness(), Err(NotReady::Starting));
        assert_eq!(state.liveness(), Ok(()));
    }

    #[test]
    fn draining_fails_readiness_at_once_and_not_liveness() {
        let state = state();
        state.mark_started();
        state.accept_loop_started();
        state.begin_drain();
        assert_eq!(state.readiness(), Err(NotReady::Draining));
        state.listeners_closed();
        state.accept_loop_ended();
        assert_eq!(state.liveness(), Ok(()), "a drained loop has not failed");
    }

    #[test]
    fn an_accept_loop_that_ends_unasked_fails_liveness() {
        let state = state();
        state.mark_started();
        state.accept_loop_started();
        state.accept_loop_ended();
        assert_eq!(state.liveness(), Err(NotReady::NotAccepting));
        assert_eq!(state.readiness(), Err(NotReady::NotAccepting));
    }

    #[test]
    fn why_not_ready_names_no_secret_and_says_what_fails() {
        let text = NotReady::TokenExpiring {
            usable_for: Duration::from_millis(12_300),
            margin: Duration::from_secs(30),
            failures: 3,
            status: Some(503),
        }
        .to_string();
        assert_eq!(
            text,
            "token usable for 12.3 s only, under the 30.0 s readiness margin; renewal failing (3 attempts, \
             last: HTTP 503)"
        );
    }
}
