//! Token metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`; without it
//! every function here is empty and compiles away). The names, documented in the crate docs:
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `entra.token.fetches` | counter | `source`, `outcome` (`ok`, `error`) | token requests made |
//! | `entra.token.failures` | counter | `source`, `kind` | failed requests, by [`TokenError`] kind |
//! | `entra.token.rotations` | counter | `source` | tokens published (the first one and each renewal) |
//! | `entra.token.expires_at` | gauge | `source` | the cached token's expiry, Unix seconds (0: none) |
//! | `entra.token.usable_seconds` | gauge | `source` | seconds the cached token was usable for when last published or expired |
//! | `entra.token.state` | gauge | `source`, `state` | 1 for the refresher's current state, 0 for the others |

use crate::{TokenError, TokenState};

/// The kind of a fetch failure, for the `kind` label.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn failure_kind(e: &TokenError) -> &'static str {
    match e {
        TokenError::CredentialUnavailable { .. } => "unavailable",
        TokenError::IdentityNotFound { .. } => "identity_not_found",
        TokenError::AuthenticationFailed { .. } => "auth_failed",
        TokenError::Transient {
            status: Some(429), ..
        } => "throttled",
        TokenError::Transient { .. } => "transient",
        TokenError::InvalidResponse { .. } => "invalid_response",
        TokenError::ChainFailed(all) => all.last().map_or("chain", failure_kind),
        TokenError::RetriesExhausted { last, .. } => failure_kind(last),
        TokenError::Unavailable { .. } => "unavailable",
        TokenError::Shutdown => "shutdown",
        e if e.is_config() => "config",
        // Unreachable while `is_config` classifies every other variant.
        _ => "error",
    }
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const STATES: [(TokenState, &str); 5] = [
    (TokenState::Starting, "starting"),
    (TokenState::Valid, "valid"),
    (TokenState::Stale, "stale"),
    (TokenState::Unavailable, "unavailable"),
    (TokenState::Stopped, "stopped"),
];

#[cfg(feature = "metrics")]
mod emit {
    use std::time::UNIX_EPOCH;

    use super::{failure_kind, STATES};
    use crate::{AccessToken, TokenError, TokenState};

    pub(crate) fn fetched(source: &str, result: &Result<AccessToken, TokenError>) {
        let source = source.to_string();
        match result {
            Ok(_) => {
                metrics::counter!("entra.token.fetches", "source" => source, "outcome" => "ok").increment(1)
            }
            Err(e) => {
                metrics::counter!("entra.token.fetches", "source" => source.clone(), "outcome" => "error")
                    .increment(1);
                metrics::counter!("entra.token.failures", "source" => source, "kind" => failure_kind(e))
                    .increment(1);
            }
        }
    }

    pub(crate) fn published(source: &str, token: &AccessToken, usable_for: std::time::Duration) {
        let source = source.to_string();
        metrics::counter!("entra.token.rotations", "source" => source.clone()).increment(1);
        let at = token
            .expires_on()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("entra.token.expires_at", "source" => source.clone()).set(at);
        metrics::gauge!("entra.token.usable_seconds", "source" => source).set(usable_for.as_secs_f64());
    }

    pub(crate) fn expired(source: &str) {
        let source = source.to_string();
        metrics::gauge!("entra.token.expires_at", "source" => source.clone()).set(0.0);
        metrics::gauge!("entra.token.usable_seconds", "source" => source).set(0.0);
    }

    pub(crate) fn state(source: &str, state: TokenState) {
        for (s, name) in STATES {
            let value = if s == state { 1.0 } else { 0.0 };
            metrics::gauge!("entra.token.state", "source" => source.to_string(), "state" => name).set(value);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod emit {
    use crate::{AccessToken, TokenError, TokenState};

    pub(crate) fn fetched(_: &str, _: &Result<AccessToken, TokenError>) {}
    pub(crate) fn published(_: &str, _: &AccessToken, _: std::time::Duration) {}
    pub(crate) fn expired(_: &str) {}
    pub(crate) fn state(_: &str, _: TokenState) {}
}

pub(crate) use emit::{expired, fetched, published, state};
