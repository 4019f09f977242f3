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
    #[error("{0}")]
    Token(#[source] TokenError),
    /// The server refused a freshly fetched token too. `hint` says what to check.
    #[error("the server refused the Entra token for role {role:?} twice ({code}: {message}). {hint}")]
    TokenRejected {
        /// The role (user) that tried to sign in.
        role: String,
        /// The SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
        /// What to check.
        hint: String,
    },
    /// A token would have been sent without TLS to a host that is not this machine.
    #[error(
        "refusing to send an Entra token without TLS to {host:?}: sslmode=disable is allowed only for \
         loopback hosts and unix sockets; use sslmode=verify-full"
    )]
    PlaintextToken {
        /// The remote host.
        host: String,
    },
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
    #[error("configuration error: {0}")]
    Config(#[from] ConfigError),
    /// The first token could not be fetched (with the fail-fast start mode).
    #[error("could not get an Entra token: {0}")]
    Token(#[from] TokenError),
    /// deadpool refused the pool settings.
    #[error("invalid pool settings: {0}")]
    Pool(String),
}
