//! Exit codes and the error a command ends with.

use std::fmt;
use std::process::ExitCode;

/// What a command's failure means to a script calling `entra-pg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// A check, a query or the demo's load found a failure.
    Failure = 1,
    /// The command line or the configuration is wrong.
    Usage = 2,
    /// No token could be had from the identity endpoint.
    Token = 3,
    /// A needed program or the local emulator could not start (PostgreSQL or psql not installed…).
    Environment = 4,
}

/// A command's failure: the exit code and the message already written for a person (cause and fix).
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    /// A failure whose message was already printed (a doctor report, the demo's table).
    pub(crate) fn silent(exit: Exit) -> Self {
        CliError::new(exit, String::new())
    }

    pub(crate) fn code(&self) -> ExitCode {
        ExitCode::from(self.exit as u8)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl CliError {
    /// A failure told as `what: <every layer of the error>`, then its cause and fix from
    /// `entra_postgres::diagnose`.
    pub(crate) fn explained(
        exit: Exit,
        what: &str,
        error: &(dyn std::error::Error + 'static),
        context: &entra_postgres::DiagnosisContext<'_>,
    ) -> Self {
        let d = entra_postgres::diagnose_with(error, context);
        // A rule of the configuration that only a connection could check is the user's to fix.
        let exit = match d.cause {
            entra_postgres::Cause::Configuration | entra_postgres::Cause::CleartextRefused => Exit::Usage,
            _ => exit,
        };
        CliError::new(
            exit,
            format!(
                "{what}: {}\n  cause: {}\n  fix:   {}",
                entra_postgres::report(error),
                d.summary,
                d.fix
            ),
        )
    }
}

impl From<entra_postgres::ConfigError> for CliError {
    fn from(e: entra_postgres::ConfigError) -> Self {
        CliError::new(Exit::Usage, format!("configuration error: {e}"))
    }
}

impl From<entra_postgres::BuildError> for CliError {
    fn from(e: entra_postgres::BuildError) -> Self {
        let (exit, what) = match &e {
            entra_postgres::BuildError::Token(t) => (crate::source::token_exit(t), "no token"),
            entra_postgres::BuildError::Config(_) => (Exit::Usage, "configuration error"),
            _ => (Exit::Failure, "cannot build the pool"),
        };
        let source: &(dyn std::error::Error + 'static) = match &e {
            entra_postgres::BuildError::Token(t) => t,
            entra_postgres::BuildError::Config(c) => c,
            other => other,
        };
        CliError::explained(exit, what, source, &Default::default())
    }
}

/// The `--help` text's table of exit codes.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  a check, query or grant failed (doctor step, demo errors, server error)
  2  usage or configuration error (bad flag, missing host, password in the configuration)
  3  no token could be had from the identity endpoint
  4  a needed program or the local emulator could not start (PostgreSQL, psql)";
