//! Configuration: connection strings, Service Connector's and libpq's variables, and their precedence.
//!
//! Precedence, highest first: [`PoolBuilder`](crate::PoolBuilder) calls > the connection string (given to
//! the builder, else `AZURE_POSTGRESQL_CONNECTIONSTRING`) > Service Connector's variables
//! (`AZURE_POSTGRESQL_HOST`…) > libpq's (`PGHOST`…).

mod conn_string;
pub(crate) mod env;
mod settings;

pub(crate) use env::settings_from_env;
pub use settings::{SessionAttrs, Settings, Sourced, SslMode};

/// A configuration that cannot be used. Every variant names the variable, key or builder call at fault
/// and says what to do; none shows a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that cannot be used.
    #[error("{origin} = {value:?}: {problem}")]
    Invalid {
        /// The variable, key or builder call the value came from.
        origin: String,
        /// The value as given (`<redacted>` or `(not shown)` where it may be a secret).
        value: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// A key that no connection-string form knows. Its value is never shown: a misspelt `pasword=`
    /// must not print the password.
    #[error("{origin}: unknown key {key:?}; supported: {supported}")]
    UnknownKey {
        /// Where the key was found.
        origin: String,
        /// The key as written.
        key: String,
        /// The keys that are understood.
        supported: &'static str,
    },
    /// A required setting is set nowhere.
    #[error("no {setting}: set {how}")]
    Missing {
        /// The setting (`host`, `user`…).
        setting: &'static str,
        /// Where it can be set.
        how: &'static str,
    },
    /// No user is configured, and the token names no role (a guest, an application, or no name claim):
    /// the source says why and what to set.
    #[error(
        "no user is configured (EntraConfig::user, user= in the connection string, AZURE_POSTGRESQL_USER or \
         PGUSER), and the token names none"
    )]
    UserNotInToken(#[source] crate::claims::NoTokenUser),
    /// A password is configured, but entra-pool signs in with Entra ID tokens.
    #[error(
        "{origin} = \"<redacted>\": a password is set, but entra-pool signs in with Entra ID tokens: remove \
         it, or choose static-password mode by name with EntraConfig::static_password"
    )]
    PasswordNotAllowed {
        /// Where the password was found.
        origin: String,
    },
    /// `sslmode=disable` with a host that is not this machine: the token would travel in cleartext.
    #[error(
        "{origin} = \"disable\": an Entra token may not travel without TLS to {host:?}; sslmode=disable is \
         allowed only for loopback hosts and unix sockets. Use verify-full"
    )]
    CleartextToken {
        /// Where `sslmode=disable` came from.
        origin: String,
        /// The first host that is not loopback.
        host: String,
    },
}

impl ConfigError {
    /// An error about `value` found in `origin`.
    pub(crate) fn invalid(
        origin: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            origin: origin.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }

    /// The variable, key or builder call at fault (`PGSSLMODE`, `connection string key "host"`,
    /// `EntraConfig::ssl_mode`…), or the setting that is missing.
    pub fn origin(&self) -> &str {
        match self {
            ConfigError::Invalid { origin, .. }
            | ConfigError::UnknownKey { origin, .. }
            | ConfigError::PasswordNotAllowed { origin }
            | ConfigError::CleartextToken { origin, .. } => origin,
            ConfigError::Missing { setting, .. } => setting,
            ConfigError::UserNotInToken(_) => "user",
        }
    }
}

/// Parses a connection string (`host=… dbname=…`, `postgres://…` or `Server=…;Database=…`) into a layer.
///
/// ```
/// let s = entra_postgres::parse_connection_string("host=db.example.com port=5433 user='app id' sslmode=verify-full").unwrap();
/// assert_eq!(s.hosts.unwrap().value, ["db.example.com"]);
/// assert_eq!(s.ports.unwrap().value, [5433]);
/// assert_eq!(s.user.unwrap().value, "app id");
/// ```
pub fn parse_connection_string(text: &str) -> Result<Settings, ConfigError> {
    conn_string::parse(text, "connection string")
}
