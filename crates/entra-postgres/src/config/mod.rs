//! Configuration: connection strings, Service Connector's and libpq's variables, and their precedence.
//!
//! Precedence, highest first: [`PoolBuilder`](crate::PoolBuilder) calls > the connection string (given to
//! the builder, else `AZURE_POSTGRESQL_CONNECTIONSTRING`) > Service Connector's variables
//! (`AZURE_POSTGRESQL_HOST`…) > libpq's (`PGHOST`…).

mod conn_string;
mod env;
mod settings;

use std::fmt;

pub use env::{LIBPQ_VARS, SERVICE_CONNECTOR_VARS};
pub use settings::{Settings, Sourced, SslMode};

use entra_token::Env;

/// A configuration value that cannot be used: names the variable or key, shows the value (never a
/// secret's) and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable, key or builder call the value came from.
    pub origin: String,
    /// The value as given (`<redacted>` for secrets).
    pub value: String,
    /// What is wrong and what to do.
    pub problem: String,
}

impl ConfigError {
    /// An error about `value` found in `origin`.
    pub fn new(origin: impl Into<String>, value: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.into(),
            value: value.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}: {}", self.origin, self.value, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a connection string (`host=… dbname=…`, `postgres://…` or `Server=…;Database=…`) into a layer.
///
/// ```
/// let s = entra_postgres::parse_connection_string("host=db.example.com port=5433 user='app id' sslmode=verify-full").unwrap();
/// assert_eq!(s.hosts.unwrap().value, ["db.example.com"]);
/// assert_eq!(s.port.unwrap().value, 5433);
/// assert_eq!(s.user.unwrap().value, "app id");
/// ```
pub fn parse_connection_string(text: &str) -> Result<Settings, ConfigError> {
    conn_string::parse(text, "connection string")
}

/// The layers below the builder, merged: libpq < Service Connector < connection string (`explicit`, else
/// `AZURE_POSTGRESQL_CONNECTIONSTRING`).
pub fn settings_from_env(env: &Env, explicit: Option<&str>) -> Result<Settings, ConfigError> {
    let mut merged = env::libpq(env)?.overlaid_with(env::service_connector(env)?);
    let string_layer = match explicit {
        Some(text) => Some(conn_string::parse(text, "connection string")?),
        None => env::service_connector_string(env)?,
    };
    if let Some(layer) = string_layer {
        merged = merged.overlaid_with(layer);
    }
    Ok(merged)
}
