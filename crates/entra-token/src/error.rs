//! [`TokenError`]: why a token could not be had, and what a caller should do about it.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::UserAssignedId;

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
    /// A setting the source cannot do without was not given. [`is_config`](Self::is_config), like
    /// every variant down to [`EmptyChain`](Self::EmptyChain).
    #[error("{source_name} needs {setting}: set it with {set_by}")]
    MissingSetting {
        /// The source's name.
        source_name: String,
        /// What is missing: `a tenant id`, `a non-empty secret`…
        setting: &'static str,
        /// Where it is given: the builder method and the environment variable.
        set_by: &'static str,
    },
    /// An endpoint or authority is not a URL.
    #[error("{setting} is not a valid URL: {value:?}")]
    MalformedUrl {
        /// Where the value came from: a variable (`AZURE_AUTHORITY_HOST`) or a builder setting (`the IMDS
        /// endpoint`).
        setting: &'static str,
        /// The value as given.
        value: String,
        /// Why it does not parse.
        #[source]
        error: url::ParseError,
    },
    /// An endpoint or authority is a URL the source refuses: not http(s), without a host, or plain http
    /// where a secret would be sent.
    #[error("{setting} must be {required}, not {value:?}")]
    UrlNotAllowed {
        /// Where the value came from: a variable or a builder setting.
        setting: &'static str,
        /// The value as given.
        value: String,
        /// What the URL must be.
        required: &'static str,
    },
    /// A tenant id holds a character no tenant id has; it would change the token URL's path.
    #[error("AZURE_TENANT_ID (the tenant id) may contain only letters, digits, '.' and '-', not {tenant:?}")]
    InvalidTenantId {
        /// The value as given, cut to 100 characters.
        tenant: String,
    },
    /// The source serves one identity of its own (Azure Arc: the machine's system-assigned identity;
    /// Cloud Shell: the signed-in user's) and cannot be asked for a user-assigned one.
    #[error(
        "{source_name} serves only {serves}; remove the user-assigned identity ({identity}) from the \
         configuration"
    )]
    UserAssignedUnsupported {
        /// The source's name.
        source_name: String,
        /// The one identity it serves.
        serves: &'static str,
        /// The identity asked for.
        identity: UserAssignedId,
    },
    /// The source selects a user-assigned identity only by its client id (workload identity, the
    /// legacy App Service API).
    #[error(
        "{source_name} selects a user-assigned identity only by client id, not by {identity}; name the \
         identity by its client id"
    )]
    ClientIdRequired {
        /// The source's name.
        source_name: String,
        /// The identity asked for.
        identity: UserAssignedId,
    },
    /// The federated token file cannot be read (workload identity reads it on every fetch, since the
    /// kubelet rotates it).
    #[error(
        "cannot read the federated token file {} (AZURE_FEDERATED_TOKEN_FILE); check the path and that \
         the pod's service-account token is projected there",
        path.display()
    )]
    FederatedTokenUnreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        error: Arc<io::Error>,
    },
    /// The federated token file holds nothing but white space.
    #[error("the federated token file {} (AZURE_FEDERATED_TOKEN_FILE) is empty", path.display())]
    FederatedTokenEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The key file the Azure Arc agent named cannot be read.
    #[error(
        "cannot read the Arc key file {}; the process must run as root or in the himds group",
        path.display()
    )]
    ArcKeyUnreadable {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        error: Arc<io::Error>,
    },
    /// The key file the Azure Arc agent named is not UTF-8 text.
    #[error("the Arc key file {} is not text", path.display())]
    ArcKeyNotText {
        /// The file.
        path: PathBuf,
    },
    /// A CA bundle given to [`HttpOptions::with_ca_pem`](crate::HttpOptions::with_ca_pem) holds no
    /// certificate.
    #[error("the CA PEM holds no certificate (expected -----BEGIN CERTIFICATE-----)")]
    CaPemEmpty,
    /// A CA bundle given to [`HttpOptions::with_ca_pem`](crate::HttpOptions::with_ca_pem) holds a
    /// certificate that cannot be read.
    #[error("the CA PEM holds a malformed certificate")]
    CaPemMalformed {
        /// The PEM reader's error.
        #[source]
        error: Arc<io::Error>,
    },
    /// The HTTP client for token requests cannot be set up with these [`HttpOptions`](crate::HttpOptions).
    #[error("cannot set up the HTTP client for token requests: {problem}")]
    HttpClientSetup {
        /// What failed, and what to change.
        problem: &'static str,
        /// The TLS or HTTP library's error.
        #[source]
        error: Arc<dyn StdError + Send + Sync>,
    },
    /// A token request cannot be built from the source's settings: the HTTP library refuses a URL or a
    /// header value (an `IDENTITY_HEADER` with a line break…).
    #[error("{source_name}: the token request could not be built; check the endpoint and header values it is configured with")]
    RequestNotBuilt {
        /// The source's name.
        source_name: String,
        /// The HTTP library's error.
        #[source]
        error: Arc<dyn StdError + Send + Sync>,
    },
    /// A [`ChainSource`](crate::ChainSource) with no source in it was asked for a token.
    #[error("the token source chain is empty: add a source with ChainSource::with")]
    EmptyChain,
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

/// One line per error, each with its causes: this error's own `source` is `None`, so a member's
/// cause (the I/O error behind an unreadable file) would otherwise be lost.
fn list_errors(errors: &[TokenError]) -> String {
    let mut out = String::new();
    for e in errors {
        let mut line = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        out.push_str("\n  - ");
        out.push_str(&line);
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

    /// Whether the configuration or the environment is wrong ([`MissingSetting`](Self::MissingSetting)
    /// down to [`EmptyChain`](Self::EmptyChain)): retrying will not help until it is fixed, and the
    /// message names the variable or setting. Looks at this error only, not at a chain's members (see
    /// [`leaves`](Self::leaves)).
    pub fn is_config(&self) -> bool {
        // Exhaustive, so that a new variant must be classified here.
        match self {
            TokenError::MissingSetting { .. }
            | TokenError::MalformedUrl { .. }
            | TokenError::UrlNotAllowed { .. }
            | TokenError::InvalidTenantId { .. }
            | TokenError::UserAssignedUnsupported { .. }
            | TokenError::ClientIdRequired { .. }
            | TokenError::FederatedTokenUnreadable { .. }
            | TokenError::FederatedTokenEmpty { .. }
            | TokenError::ArcKeyUnreadable { .. }
            | TokenError::ArcKeyNotText { .. }
            | TokenError::CaPemEmpty
            | TokenError::CaPemMalformed { .. }
            | TokenError::HttpClientSetup { .. }
            | TokenError::RequestNotBuilt { .. }
            | TokenError::EmptyChain => true,
            TokenError::CredentialUnavailable { .. }
            | TokenError::AuthenticationFailed { .. }
            | TokenError::IdentityNotFound { .. }
            | TokenError::Transient { .. }
            | TokenError::InvalidResponse { .. }
            | TokenError::ChainFailed(_)
            | TokenError::RetriesExhausted { .. }
            | TokenError::Unavailable { .. }
            | TokenError::Shutdown => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn unreadable_file() -> TokenError {
        TokenError::FederatedTokenUnreadable {
            path: PathBuf::from("/var/run/secrets/token"),
            error: Arc::new(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    #[test]
    fn configuration_errors_are_neither_retried_nor_skipped_by_a_chain() {
        let errors = [
            unreadable_file(),
            TokenError::InvalidTenantId { tenant: "a/b".into() },
            TokenError::EmptyChain,
        ];
        for e in &errors {
            assert!(e.is_config(), "{e}");
            assert!(!e.is_retryable(), "{e}");
            assert!(!e.is_unavailable(), "{e}");
        }
        assert!(!TokenError::transient("imds", "timeout").is_config());
    }

    #[test]
    fn a_cause_is_the_source_and_not_repeated_in_the_message() {
        let e = unreadable_file();
        let text = e.to_string();
        assert!(text.contains("/var/run/secrets/token"), "{text}");
        assert!(!text.contains("no such file"), "{text}");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("no such file")
        );
    }

    #[test]
    fn a_chain_lists_each_members_causes() {
        let e = TokenError::ChainFailed(vec![
            TokenError::unavailable("imds", "nothing listening"),
            unreadable_file(),
        ]);
        let text = e.to_string();
        assert_eq!(text.matches("no such file").count(), 1, "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
