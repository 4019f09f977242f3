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
    /// The managed-identity endpoint answered that the identity asked for is not assigned to this
    /// resource (HTTP 400 "Identity not found"). For the system-assigned identity (`identity: None`) a
    /// chain moves on, as for an unavailable source; for a user-assigned one it stops.
    #[error("{source_name}: identity not found ({message}): {}", identity_text(.identity.as_deref()))]
    IdentityNotFound {
        /// The source's name.
        source_name: String,
        /// The user-assigned identity asked for (`client id …`, `object id …`, `resource id …`), or
        /// `None` for the system-assigned identity.
        identity: Option<String>,
        /// The endpoint's message, passed through.
        message: String,
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
    /// [`fetch_with_retry`](crate::fetch_with_retry) spent its budget on transient failures. `last` (the
    /// error's source) is the last cause.
    #[error(
        "{source_name}: gave up after {attempts} attempt{} in {:.1} s (retry budget {} s): {}",
        if *.attempts == 1 { "" } else { "s" },
        .elapsed.as_secs_f64(),
        .budget.as_secs(),
        .outcomes.join(", ")
    )]
    RetriesExhausted {
        /// The source's name.
        source_name: String,
        /// How many requests were made.
        attempts: u32,
        /// What each attempt got, in order: `HTTP 429`, `timeout`, `connection failed`…
        outcomes: Vec<String>,
        /// How long the attempts took.
        elapsed: Duration,
        /// The budget that was spent.
        budget: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<TokenError>,
    },
    /// The [`Refresher`](crate::Refresher) has no usable token: the cached one has expired (or is about to)
    /// and fetching a new one keeps failing. `last_error` is the most recent cause.
    #[error("the refresher has no usable token: {reason}")]
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

fn identity_text(identity: Option<&str>) -> String {
    match identity {
        Some(id) => format!(
            "the user-assigned identity with {id} is not assigned to this resource; assign it, or fix the id"
        ),
        None => "no system-assigned managed identity is assigned to this resource; enable one, or configure \
                 a user-assigned identity"
            .to_string(),
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
            TokenError::RetriesExhausted { .. } => true,
            TokenError::ChainFailed(errors) => errors.last().is_some_and(TokenError::is_retryable),
            _ => false,
        }
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TokenError::Transient { retry_after, .. } => *retry_after,
            TokenError::ChainFailed(errors) => errors.last().and_then(TokenError::retry_after),
            _ => None,
        }
    }

    /// The HTTP status of the answer behind this error, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            TokenError::Transient { status, .. } | TokenError::AuthenticationFailed { status, .. } => *status,
            TokenError::IdentityNotFound { .. } => Some(400),
            TokenError::ChainFailed(errors) => errors.last().and_then(TokenError::status),
            TokenError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// A few words on what one attempt got, for [`TokenError::RetriesExhausted`]: `HTTP 429`,
    /// `timeout or connection failure`, `invalid response`…
    pub(crate) fn outcome(&self) -> String {
        match self {
            TokenError::ChainFailed(errors) => errors.last().map_or_else(|| "failed".into(), Self::outcome),
            _ => match (self.status(), self) {
                (Some(status), _) => format!("HTTP {status}"),
                (None, TokenError::Transient { .. }) => "no answer (timeout or connection failure)".into(),
                (None, TokenError::InvalidResponse { .. }) => "invalid response".into(),
                (None, _) => "failed".into(),
            },
        }
    }

    /// Whether a chain should move on to its next source.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            TokenError::CredentialUnavailable { .. } | TokenError::IdentityNotFound { identity: None, .. }
        )
    }

    /// Every single-source error inside this one: the members of a chain's failure, the cause behind
    /// [`Unavailable`](Self::Unavailable) and [`RetriesExhausted`](Self::RetriesExhausted), or this
    /// error itself. For diagnosis, which wants the most telling of them.
    pub fn leaves(&self) -> Vec<&TokenError> {
        match self {
            TokenError::ChainFailed(all) => all.iter().flat_map(TokenError::leaves).collect(),
            TokenError::Unavailable {
                last_error: Some(inner),
                ..
            } => inner.leaves(),
            TokenError::RetriesExhausted { last, .. } => last.leaves(),
            other => vec![other],
        }
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
