//! [`TokenError`]: why a token could not be had, and what a caller should do about it.

use std::fmt;
use std::time::Duration;

/// Why a token could not be had.
///
/// The variant tells a caller what to do: a [`ChainSource`](crate::ChainSource) moves past
/// [`CredentialUnavailable`](Self::CredentialUnavailable) and stops at
/// [`AuthenticationFailed`](Self::AuthenticationFailed); the [`Refresher`](crate::Refresher) retries
/// [`is_retryable`](Self::is_retryable) errors with backoff. No variant ever carries a token's secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// This source cannot work here: its endpoint, configuration or tool is absent. A chain moves on to
    /// the next source.
    #[error("{source_name}: unavailable: {reason}")]
    CredentialUnavailable {
        /// The source's name.
        source_name: String,
        /// What is missing, and how to provide it.
        reason: String,
    },
    /// The endpoint answered and refused (unknown identity, bad secret, wrong scope…). Retrying will not
    /// help until the configuration changes; a chain stops here.
    #[error("{source_name}: authentication failed{}: {reason}", status_suffix(*.status, .error_code.as_deref()))]
    AuthenticationFailed {
        /// The source's name.
        source_name: String,
        /// The endpoint's description of the refusal, and what to check.
        reason: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// Azure's error code (`invalid_request`, `AADSTS700213`…), when there was one.
        error_code: Option<String>,
    },
    /// A failure worth retrying: timeout, refused connection, throttling (429), server errors, IMDS
    /// updating (404/410).
    #[error("{source_name}: temporary failure{}: {reason}", status_suffix(*.status, None))]
    Transient {
        /// The source's name.
        source_name: String,
        /// What failed.
        reason: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The endpoint answered with something that is not a token response (malformed, truncated,
    /// oversized or missing fields). Retried by the refresher; the message never quotes a secret.
    #[error("{source_name}: invalid response: {reason}")]
    InvalidResponse {
        /// The source's name.
        source_name: String,
        /// What is wrong with the response.
        reason: String,
    },
    /// The configuration or environment is wrong: names the variable or setting and the problem.
    #[error("configuration error: {0}")]
    Config(String),
    /// Every source of a chain failed; lists each one's reason.
    #[error("no token source succeeded:{}", list_errors(.0))]
    ChainFailed(Vec<TokenError>),
    /// The [`Refresher`](crate::Refresher) has no usable token: the cached one has expired (or is about to)
    /// and fetching a new one keeps failing. `last_error` is the most recent cause.
    #[error("no usable token: {reason}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Unavailable {
        /// What the refresher knows.
        reason: String,
        /// The most recent fetch error.
        #[source]
        last_error: Option<Box<TokenError>>,
    },
    /// The refresher was shut down.
    #[error("the token refresher has shut down")]
    Shutdown,
}

fn status_suffix(status: Option<u16>, code: Option<&str>) -> String {
    match (status, code) {
        (Some(s), Some(c)) => format!(" (HTTP {s}, {c})"),
        (Some(s), None) => format!(" (HTTP {s})"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

fn list_errors(errors: &[TokenError]) -> String {
    let mut out = String::new();
    for e in errors {
        out.push_str("\n  - ");
        out.push_str(&e.to_string());
    }
    out
}

impl TokenError {
    /// Whether fetching again later may succeed (the refresher backs off and retries these).
    pub fn is_retryable(&self) -> bool {
        match self {
            TokenError::Transient { .. } | TokenError::InvalidResponse { .. } => true,
            TokenError::ChainFailed(errors) => errors.iter().any(TokenError::is_retryable),
            _ => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Transient { retry_after, .. } => *retry_after,
            TokenError::ChainFailed(errors) => errors.iter().find_map(TokenError::retry_after),
            _ => None,
        }
    }

    /// Whether a chain should move on to its next source.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TokenError::CredentialUnavailable { .. })
    }

    /// Shorthand for [`TokenError::CredentialUnavailable`].
    pub fn unavailable(source_name: impl fmt::Display, reason: impl Into<String>) -> Self {
        TokenError::CredentialUnavailable {
            source_name: source_name.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`TokenError::InvalidResponse`].
    pub fn invalid_response(source_name: impl fmt::Display, reason: impl Into<String>) -> Self {
        TokenError::InvalidResponse {
            source_name: source_name.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`TokenError::Transient`] without an HTTP status.
    pub fn transient(source_name: impl fmt::Display, reason: impl Into<String>) -> Self {
        TokenError::Transient {
            source_name: source_name.to_string(),
            reason: reason.into(),
            status: None,
            retry_after: None,
        }
    }

    /// Shorthand for [`TokenError::AuthenticationFailed`] without HTTP details.
    pub fn auth_failed(source_name: impl fmt::Display, reason: impl Into<String>) -> Self {
        TokenError::AuthenticationFailed {
            source_name: source_name.to_string(),
            reason: reason.into(),
            status: None,
            error_code: None,
        }
    }
}
