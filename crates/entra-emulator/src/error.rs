//! Errors of the emulator's parts: each names what failed and what to do about it.
//!
//! A variant with a cause returns it from `source()` and leaves it out of its own message, so a chain
//! printed layer by layer (anyhow's `{:#}`, `entra_postgres::report`) shows each layer once.

use std::path::PathBuf;

/// Why an emulator part (a throwaway PostgreSQL, the gate, the fake endpoints) could not do its job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("{what}")]
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
    #[error("{what} failed; the server log is at {}", log.display())]
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
    #[error("generating the emulator's TLS certificates failed")]
    Certificate(#[from] rcgen::Error),

    /// Building a TLS configuration failed.
    #[error("building the TLS configuration for {what} failed")]
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

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// Every layer of the chain, as a reporter that walks `source()` prints them.
    fn layers(error: &(dyn Error + 'static)) -> Vec<String> {
        let mut layers = Vec::new();
        let mut current = Some(error);
        while let Some(e) = current {
            layers.push(e.to_string());
            current = e.source();
        }
        layers
    }

    #[test]
    fn a_chain_shows_each_cause_once() {
        let errors = [
            EmulatorError::io(
                "binding the gate to 127.0.0.1:0",
                std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
            ),
            EmulatorError::Tls {
                what: "the gate".into(),
                source: rustls::Error::General("no usable key".into()),
            },
            EmulatorError::Certificate(rcgen::Error::CouldNotParseKeyPair),
        ];
        for error in &errors {
            let layers = layers(error);
            assert!(layers.len() >= 2, "{layers:?}");
            let full = layers.join(": ");
            for layer in &layers[1..] {
                assert_eq!(full.matches(layer.as_str()).count(), 1, "{full}");
            }
        }
    }
}
