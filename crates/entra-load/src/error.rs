//! [`LoadError`]: why a run, its set-up or its results could not be had.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use entra_emulator::EmulatorError;

/// Why a run of the load engine failed.
///
/// `Display` is this layer alone and `source()` leads to the cause, so a chain printer
/// (`entra_postgres::report`, anyhow's `{:#}`) shows each layer once. Failed operations of a load are not
/// errors of the run: they are counted in its results, with their first messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration asks for something that cannot run; the reason says what to change.
    #[error("{reason}")]
    InvalidConfig {
        /// What is wrong and what it must be.
        reason: String,
    },

    /// The local emulator (PostgreSQL, the fake identity endpoint, the gate) could not start.
    #[error("the local emulator could not start")]
    EmulatorStart(#[source] EmulatorError),

    /// The emulator could not do what the run asked of it.
    #[error("the emulator could not {action}")]
    Emulator {
        /// What was asked (`restart the server for the failover drill`…).
        action: &'static str,
        /// The emulator's error.
        #[source]
        source: EmulatorError,
    },

    /// A pool the run drives could not be built.
    #[error("cannot build the {pool} pool")]
    PoolBuild {
        /// Which pool (`gate`, `direct`, `demo`, `proxy's upstream`).
        pool: &'static str,
        /// entra-postgres's error: configuration, token or connection.
        #[source]
        source: entra_postgres::BuildError,
    },

    /// The plain deadpool-postgres pool (the comparison without entra-pool) could not be built.
    #[error("cannot build plain deadpool-postgres's pool")]
    PlainPool(#[source] deadpool_postgres::BuildError),

    /// The proxy under test could not start.
    #[error("the proxy could not start")]
    ProxyStart(#[source] entra_proxy::ProxyError),

    /// No token for the emulator's principal.
    #[error("no token from the emulator's identity endpoint")]
    Token(#[source] entra_token::TokenError),

    /// A connector built for a static password, where the run signs in with tokens.
    #[error("the connector has no token handle: build it for Entra tokens, not a static password")]
    NoTokenHandle,

    /// A superuser session on the test server could not be opened.
    #[error("connecting as superuser to {database:?}")]
    Superuser {
        /// The database.
        database: String,
        /// tokio-postgres's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A statement of the set-up or of the end-of-run check failed.
    #[error("{what}")]
    Query {
        /// What the statement was for (`creating the benchmark tables`, `checking the ledger`…).
        what: String,
        /// tokio-postgres's error, the server's message below it.
        #[source]
        source: tokio_postgres::Error,
    },

    /// pgbench is not installed.
    #[error("pgbench is not installed (Debian: postgresql-contrib)")]
    PgbenchMissing,

    /// pgbench is there but could not be run.
    #[error("running pgbench")]
    PgbenchSpawn(#[source] std::io::Error),

    /// pgbench ran and failed.
    #[error("pgbench failed ({status}): {stderr}")]
    PgbenchFailed {
        /// How it ended.
        status: ExitStatus,
        /// What it said.
        stderr: String,
    },

    /// pgbench succeeded but its output held no throughput (or, for a `-C` run, no latency).
    #[error("pgbench's output holds no figures this benchmark reads (tps, latency average):\n{stdout}")]
    PgbenchOutput {
        /// What it printed.
        stdout: String,
    },

    /// A session of the bystander control failed.
    #[error("a bystander session failed: {first_error}")]
    Bystander {
        /// The first failure, every layer of it.
        first_error: String,
    },

    /// The reference relay of the proxy benchmark could not listen on loopback.
    #[error("cannot bind the reference relay")]
    Relay(#[source] std::io::Error),

    /// The connect benchmark's idle sockets could not be held (the open-file limit, or no port left).
    #[error("cannot hold the idle loopback sockets")]
    IdleSockets(#[source] std::io::Error),

    /// The failover drill: the pool did not serve again in time after the gate came back.
    #[error("the pool did not serve again within {} s of the gate's return", within.as_secs())]
    NotServedAgain {
        /// How long the drill waited.
        within: Duration,
    },

    /// A results file or its directory could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The results could not be encoded as JSON.
    #[error("encoding the results as JSON")]
    Json(#[source] serde_json::Error),

    /// The timestamp in the results' file names could not be formatted.
    #[error("formatting the results' timestamp")]
    Timestamp(#[source] time::error::Format),

    /// The plot could not be drawn.
    #[error("drawing {}", path.display())]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// plotters' error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl LoadError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        LoadError::InvalidConfig {
            reason: reason.into(),
        }
    }

    pub(crate) fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let what = what.into();
        move |source| LoadError::Query { what, source }
    }
}
