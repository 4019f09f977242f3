//! Pools for Azure Database for PostgreSQL that sign in with Microsoft Entra ID tokens and outlive every
//! token.
//!
//! The server checks a token only when a connection starts, and tokens live 1–24 h. So every new physical
//! connection asks a [`TokenHandle`](entra_token::TokenHandle) for the current token, while a refresher
//! task renews it well before expiry. Open connections are unaffected by expiry (as on Azure); new ones
//! always get a valid token.
//!
//! # One core, several fronts
//!
//! [`EntraConfig`] is the core: the settings (its calls, a connection string, Service Connector's and
//! libpq's variables), the identity and its token source, the refresh policy and TLS. It gives the
//! [`ConnectionPlan`], the token handle and the connector, [`EntraConnect`]. Each front takes it and adds
//! only its own sizing and behaviour, in one vocabulary (`max_size`, `wait_timeout`; `role()` and
//! `tokens()` on what it builds):
//!
//! - [`PoolBuilder`] → [`EntraPool`]: a plain [`deadpool_postgres::Pool`] (plus the token's status and a
//!   health check), so every function that takes a deadpool-postgres pool works unchanged. Connections
//!   retire after `max_lifetime` (with jitter) and `idle_timeout`; with
//!   [`replace_ahead`](PoolBuilder::replace_ahead) spares sign in ahead, so a `get()` that needs a new
//!   connection takes a ready one instead of waiting for TCP, TLS and the sign-in, and connections opened
//!   together hand over early instead of retiring at once ([`ConnectionCounts`]).
//! - [`MultiplexedPool`] ([`PoolBuilder::build_multiplexed`]): a few connections shared by many tasks,
//!   statements pipelined on each; a replacement signs in before a connection retires.
//! - [`RawSession`] ([`EntraConnect::open_session`]): a session signed in and handed over as a byte stream,
//!   for relays such as `entra-proxy`; the same token rules, target-session checks and TLS.
//! - `entra-sqlx` (a `sqlx::PgPool`) and `entra-proxy` (a local server for any client) take the same
//!   [`EntraConfig`].
//!
//! # Security, decided once
//!
//! Every connection is opened by a [`ConnectionPlan`], whose rules (in `plan/rules.rs`) hold for every path:
//! TLS with full verification (`verify-full`) against Mozilla's roots plus the DigiCert root Azure still
//! uses; `sslmode=require` verifies too (fully with the built-in roots, as `verify-ca` with an `sslrootcert`
//! file) unless [`EntraConfig::danger_accept_unverified_tls`] says otherwise; a token is never sent without
//! TLS to a host that is not loopback, decided by the addresses a name resolves to on every connection; a
//! password in the configuration is an error unless static-password mode is chosen by name.
//!
//! Whether a server's refusal is the token's is decided in one place, [`AzureRefusal::classify`]: by when
//! the server refused and its SQLSTATE, with Azure's texts only telling kinds apart. A client's own
//! parameters can never make a front drop its token.
//!
//! # When something fails
//!
//! [`diagnose`] names the cause and the fix from the error's types, as `entra-pg doctor` prints them;
//! [`ConnectionPlan::reach`] checks the path to the server step by step. With the feature `metrics`, the
//! pools and the refresher report through the `metrics` facade (OpenTelemetry's names: see [`metrics`]).
//!
//! The token is handed to tokio-postgres for each new connection, whose copy of it (in `Config` and in the
//! password message) is not zeroized; see `entra_token`'s crate docs for exactly what is.
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
pub use claims::{token_user, NoTokenUser, TokenUser, TokenUserKind};
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
pub use session::{CancelTarget, RawSession, SessionError, SessionStream, RESERVED_STARTUP_PARAMETERS};
pub use spares::ConnectionCounts;
pub use spares::EARLY_FRACTION as REPLACE_AHEAD_FRACTION;

pub use deadpool_postgres;
pub use entra_token;
pub use tokio_postgres;

/// Entry points for the fuzz targets and property tests (`fuzz/`, `tests/proptest_*.rs`, the CLI's
/// tests): not part of the API, and may change at any time.
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::config::env::{settings_from_env, LIBPQ_VARS, SERVICE_CONNECTOR_VARS};
}
