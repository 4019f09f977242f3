//! [`TokenStatus`]: what a refresher knows, for health endpoints, metrics and diagnostics.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{Fingerprint, TokenError};

/// Whether a refresher can hand out a token right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenState {
    /// The first fetch has not finished yet.
    Starting,
    /// A token is cached and its renewal has not failed.
    Valid,
    /// A token is cached and still usable, but renewing it has failed (see `last_error`); retrying.
    Stale,
    /// No usable token: never fetched, expired, or rejected by a server; retrying.
    Unavailable,
    /// The refresher has stopped.
    Stopped,
}

/// A snapshot of a refresher's state. Holds no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenStatus {
    /// The source's name.
    pub source: String,
    /// Whether a token can be handed out.
    pub state: TokenState,
    /// The cached token's fingerprint.
    pub fingerprint: Option<Fingerprint>,
    /// When the cached token stops being handed out (its expiry minus the safety margin).
    pub usable_until: Option<Instant>,
    /// When the next fetch is planned.
    pub next_fetch: Option<Instant>,
    /// Wall-clock time of the last successful fetch.
    pub last_refresh: Option<SystemTime>,
    /// Failed fetches since the last success.
    pub consecutive_failures: u32,
    /// The most recent fetch error, cleared by a success.
    pub last_error: Option<TokenError>,
    /// Fetches attempted since start.
    pub fetches: u64,
    /// Successful fetches since start (the first one and every rotation).
    pub refreshes: u64,
}

impl TokenStatus {
    pub(crate) fn new(source: String) -> Self {
        TokenStatus {
            source,
            state: TokenState::Starting,
            fingerprint: None,
            usable_until: None,
            next_fetch: None,
            last_refresh: None,
            consecutive_failures: 0,
            last_error: None,
            fetches: 0,
            refreshes: 0,
        }
    }

    /// How long the cached token will still be handed out.
    pub fn usable_for(&self) -> Option<Duration> {
        self.usable_until
            .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Whether a token can be handed out now.
    pub fn is_usable(&self) -> bool {
        matches!(self.state, TokenState::Valid | TokenState::Stale)
    }
}
