//! Errors of the emulator's parts: each names what failed and what to do about it.

use std::path::PathBuf;

/// Why an emulator part (a throwaway PostgreSQL, the gate, the fake endpoints) could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// [`Emulator::switch_over`](crate::Emulator::switch_over) on an emulator started without a replica.
    #[error("this emulator has no replica to switch over to: start it with EmulatorBuilder::replica(true)")]
    NoReplica,

    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; searched: {searched}. \
         Install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
         macOS: `brew install postgresql`) or point the builder at a bin directory"
    )]
    PostgresNotInstalled {
        /// The places that were searched, for the message.
        searched: String,
    },

    /// The `pgbouncer` program was not found.
    #[error(
        "PgBouncer not found; searched: {searched}. Install it (Debian/Ubuntu: `apt-get install pgbouncer`; \
         Fedora: `dnf install pgbouncer`; macOS: `brew install pgbouncer`)"
    )]
    PgBouncerNotInstalled {
        /// The places that were searched, for the message.
        searched: String,
    },

    /// PgBouncer did not start or stopped accepting; its log says why.
    #[error("PgBouncer did not start: {reason}; read its log at {}", log.display())]
    PgBouncerStartFailed {
        /// A short reason.
        reason: String,
        /// PgBouncer's log.
        log: PathBuf,
    },

    /// Running as root, but the unprivileged user PostgreSQL must run as does not exist.
    #[error(
        "running as root and PostgreSQL refuses to run as root, but user {user:?} does not exist; \
         create it (`useradd --system {user}`; Debian's `postgresql` package does this) or run the tests \
         as an unprivileged user"
    )]
    NoUnprivilegedUser {
        /// The user that was looked up.
        user: String,
    },

    /// A file-system or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or address involved.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A PostgreSQL program exited with an error.
    #[error("`{command}` failed ({status}): {output}{hint}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed (trimmed).
        output: String,
        /// Where to look next, e.g. the server log.
        hint: String,
    },

    /// The server did not start; its log says why.
    #[error("PostgreSQL did not start: {reason}; read the server log at {}", log.display())]
    StartFailed {
        /// A short reason.
        reason: String,
        /// The server log.
        log: PathBuf,
    },

    /// A SQL statement run by the harness failed.
    #[error("{what} failed: {source}; the server log is at {}", log.display())]
    Sql {
        /// What was being done.
        what: String,
        /// The server log, which often has the detail.
        log: PathBuf,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// Generating the emulator's CA or a certificate failed.
    #[error("generating the emulator's TLS certificates failed: {0}")]
    Certificate(#[from] rcgen::Error),

    /// Building a TLS configuration failed.
    #[error("building the TLS configuration for {what} failed: {source}")]
    Tls {
        /// Which side (gate, cluster).
        what: String,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },

    /// A name given to the harness cannot be used (empty, or contains a NUL byte).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What the name is for (role, database, setting).
        what: &'static str,
        /// The offending value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
}

impl EmulatorError {
    /// An [`EmulatorError::Io`] with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        EmulatorError::Io {
            what: what.into(),
            source,
        }
    }
}
