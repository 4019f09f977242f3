//! Errors of the connector and the pool builder.

use entra_token::TokenError;

use crate::config::ConfigError;

/// Why [`EntraConnect`](crate::EntraConnect) could not open a connection, when the reason is ours rather
/// than the server's or the network's.
///
/// deadpool's connector must return a `tokio_postgres::Error`, which cannot be built outside that crate,
/// so this error travels inside one (as the cause of its I/O error). [`ConnectError::find`] gets it back
/// from any error of the pool:
///
/// ```
/// # fn check(e: &deadpool_postgres::PoolError) {
/// if let Some(entra_postgres::ConnectError::Token(token_error)) = entra_postgres::ConnectError::find(e) {
///     eprintln!("identity endpoint failing: {token_error}");
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No usable token: the identity endpoint is failing and the cached token expired (or none was ever
    /// fetched).
    #[error("a new connection needs an Entra token")]
    Token(#[source] TokenError),
    /// The server refused a freshly fetched token too. `hint` says what to check.
    #[error("the server refused the Entra token for role {role:?} twice ({code}: {message}). {hint}")]
    TokenRejected {
        /// The role (user) that tried to sign in.
        role: String,
        /// What the refusal means ([`AzureRefusal::is_token_problem`](crate::AzureRefusal) holds).
        kind: crate::AzureRefusal,
        /// The SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
        /// What to check.
        hint: String,
    },
    /// The connection plan refused to connect: a rule only a connection can check failed (a host name
    /// carrying a token without TLS resolved to an address that is not loopback). Nothing was sent.
    #[error("the connection plan refused to connect")]
    Refused(#[source] ConfigError),
}

impl ConnectError {
    /// Finds a `ConnectError` anywhere in an error's source chain (a `deadpool_postgres::PoolError`, a
    /// `tokio_postgres::Error`, a boxed error…).
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<ConnectError>() {
                return Some(found);
            }
            // io::Error hides its payload from `source()`; look inside explicitly.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if let Some(found) = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<ConnectError>())
                {
                    return Some(found);
                }
            }
            current = e.source();
        }
        None
    }

    /// The token error, when this is one.
    pub fn token_error(&self) -> Option<&TokenError> {
        match self {
            ConnectError::Token(e) => Some(e),
            _ => None,
        }
    }
}

/// One line with every cause of an error, outermost first (`a: b: c`).
///
/// tokio-postgres prints only its own kind ("db error", "error communicating with the server") and keeps
/// the server's message and ours in the source chain; this shows them all. `io::Error`s are looked into,
/// which `source()` alone skips.
///
/// ```
/// let e = std::io::Error::other("the server refused the token");
/// assert_eq!(entra_postgres::report(&e), "the server refused the token");
/// ```
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        current = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => match inner.source() {
                // the io::Error's Display already showed `inner`; continue below it
                next @ Some(_) => next,
                None => None,
            },
            None => e.source(),
        };
    }
    parts.join(": ")
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A configuration value is wrong (names the variable or key).
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The first token could not be fetched (with the fail-fast start mode, after retrying transient
    /// failures within the retry budget).
    #[error("could not get an Entra token")]
    Token(#[from] TokenError),
    /// deadpool refused the pool settings (its error says which: for example a `max_size` of 0, or timeouts
    /// without a runtime).
    #[error("deadpool refused the pool settings")]
    Pool(#[source] deadpool_postgres::BuildError),
    /// A pool that opens its connections at once (multiplexed) could not open one.
    #[error("could not open the first connections")]
    Connect(#[source] tokio_postgres::Error),
}

/// Why [`EntraPool::get`](crate::EntraPool::get) returned no connection.
///
/// Its `Display` is this layer alone and `source()` leads to the rest (tokio-postgres's error, then ours
/// or the server's), so a chain printer (`report`, anyhow's `{:#}`) shows each layer once. deadpool's own
/// error is at hand with [`as_pool_error`](Self::as_pool_error).
#[derive(Debug)]
pub struct GetError(deadpool_postgres::PoolError);

impl GetError {
    /// deadpool's error.
    pub fn as_pool_error(&self) -> &deadpool_postgres::PoolError {
        &self.0
    }

    /// deadpool's error, owned.
    pub fn into_pool_error(self) -> deadpool_postgres::PoolError {
        self.0
    }
}

impl From<deadpool_postgres::PoolError> for GetError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        GetError(e)
    }
}

impl From<GetError> for deadpool_postgres::PoolError {
    fn from(e: GetError) -> Self {
        e.0
    }
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use deadpool_postgres::{PoolError, TimeoutType};
        match &self.0 {
            PoolError::Timeout(TimeoutType::Wait) => {
                f.write_str("no connection became free within the wait timeout")
            }
            PoolError::Timeout(TimeoutType::Create) => {
                f.write_str("opening a connection took longer than the create timeout")
            }
            PoolError::Timeout(TimeoutType::Recycle) => {
                f.write_str("checking a pooled connection took longer than the recycle timeout")
            }
            PoolError::Backend(_) => f.write_str("could not open a connection"),
            PoolError::Closed => f.write_str("the pool is closed"),
            PoolError::NoRuntimeSpecified => f.write_str("the pool has no runtime for its timeouts"),
            PoolError::PostCreateHook(_) => f.write_str("a post_create hook refused the new connection"),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        use deadpool_postgres::PoolError;
        match &self.0 {
            PoolError::Backend(e) => Some(e),
            PoolError::PostCreateHook(e) => Some(e),
            _ => None,
        }
    }
}
