//! deadpool-postgres pools for Azure Database for PostgreSQL that sign in with Microsoft Entra ID tokens
//! and outlive every token.
//!
//! The server checks a token only when a connection starts, and tokens live 1–24 h. So the pool's
//! connector, [`EntraConnect`], asks a [`TokenHandle`](entra_token::TokenHandle) for the current token for
//! every new physical connection, while a refresher task renews it well before expiry. Open connections
//! are unaffected by expiry (as on Azure); new ones always get a valid token.
//!
//! What you get is a plain [`deadpool_postgres::Pool`] (inside [`EntraPool`], which adds the token's
//! status and a health check), so every function that takes a deadpool-postgres pool works unchanged.
//!
//! Every connection is opened by a [`ConnectionPlan`], which decides the security rules once for every
//! path (the pool, and each `entra-pg` command): TLS with full verification (`verify-full`) against
//! Mozilla's roots plus the DigiCert root Azure still uses; `sslmode=require` verifies too (fully with the
//! built-in roots, as `verify-ca` with an `sslrootcert` file) unless
//! [`EntraConfig::danger_accept_unverified_tls`] says otherwise; a token is never sent without TLS to a
//! host that is not loopback; a password in the configuration is an error unless static-password mode is
//! chosen by name.
//!
//! When something fails, [`diagnose`] names the cause and the fix from the error's types, as
//! `entra-pg doctor` prints them. The token is handed to tokio-postgres for each new connection, whose
//! copy of it (in `Config` and in the password message) is not zeroized; see `entra_token`'s crate docs
//! for exactly what is.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // AZURE_POSTGRESQL_HOST, _DATABASE, _USER (and _CLIENTID for a user-assigned identity) from the environment
//! let pool = entra_postgres::PoolBuilder::from_env().build().await?;
//! let client = pool.get().await?;
//! client.execute("INSERT INTO events(kind) VALUES ($1)", &[&"started"]).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod builder;
mod claims;
pub mod config;
mod connect;
mod diagnose;
mod entra_config;
mod error;
mod grant;
mod lifetime;
pub mod metrics;
pub mod multiplex;
pub mod plan;
mod pool;
mod probe;
mod refusal;
mod role_check;
pub mod session;
mod spares;
pub mod sql;
pub mod tls;
mod tunnel;

pub use builder::PoolBuilder;
pub use claims::user_from_token;
pub use config::{parse_connection_string, ConfigError, SessionAttrs, Settings, SslMode};
pub use connect::EntraConnect;
pub use diagnose::{diagnose, diagnose_audience, diagnose_with, Cause, Diagnosis, DiagnosisContext};
pub use entra_config::EntraConfig;
pub use error::{report, BuildError, ConnectError, GetError};
pub use grant::{Grant, GrantStatements, ObjectType};
pub use multiplex::{MultiplexError, MultiplexedPool};
pub use plan::{ConnectionPlan, CredentialKind, PlanOptions, Roots, TlsChoice};
pub use pool::{CheckError, EntraPool, PoolStatus};
pub use probe::{Reach, ReachStep};
pub use refusal::{AzureRefusal, Phase};
pub use session::{CancelTarget, RawSession, SessionError, SessionStream};
pub use spares::ConnectionCounts;

pub use deadpool_postgres;
pub use entra_token;
pub use tokio_postgres;

/// Entry points for the fuzz targets and property tests (`fuzz/`, `tests/proptest_*.rs`, the CLI's
/// tests): not part of the API, and may change at any time.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::config::env::{settings_from_env, LIBPQ_VARS, SERVICE_CONNECTOR_VARS};
}
