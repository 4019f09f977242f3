//! A throwaway PostgreSQL server for tests: [`TestPostgres`].
//!
//! - [`binaries`]: finding `initdb`, `pg_ctl` and `postgres`.
//! - [`certs`]: the emulator's CA and server certificates (shared with the gate).
//! - [`cluster`]: creating, starting, restarting and removing a cluster.
//! - `template`: a cluster's data directory, copied from an `initdb` template that every test process
//!   shares through the temporary directory and that is never removed.
//! - [`orphans`]: stopping and removing the clusters of test processes that were killed.

pub mod binaries;
pub mod certs;
pub mod cluster;
pub mod orphans;
mod template;

pub use binaries::PgBinaries;
pub use certs::{EmulatorCa, ServerCert};
pub use cluster::{TestPostgres, TestPostgresBuilder};
pub use orphans::{reap_orphans, Reaped};

use crate::error::EmulatorError;

/// `name` as a SQL identifier (`"…"`, inner quotes doubled). Fails on an empty name or a NUL byte.
pub fn quote_ident(name: &str) -> Result<String, EmulatorError> {
    check("identifier", name)?;
    if name.is_empty() {
        return Err(EmulatorError::InvalidName {
            what: "identifier",
            value: name.to_string(),
            reason: "it is empty",
        });
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `value` as a SQL string literal (`'…'`, inner quotes doubled, `E''` syntax when it holds a backslash).
pub fn quote_literal(value: &str) -> Result<String, EmulatorError> {
    check("literal", value)?;
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        Ok(format!("E'{}'", quoted.replace('\\', "\\\\")))
    } else {
        Ok(format!("'{quoted}'"))
    }
}

fn check(what: &'static str, value: &str) -> Result<(), EmulatorError> {
    if value.contains('\0') {
        // Never echo a value that may be a password.
        return Err(EmulatorError::InvalidName {
            what,
            value: "<redacted>".to_string(),
            reason: "it contains a NUL byte, which PostgreSQL cannot store",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted_against_injection() {
        assert_eq!(quote_ident("app\"; DROP").unwrap(), "\"app\"\"; DROP\"");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal("a\\b").unwrap(), "E'a\\\\b'");
        assert!(quote_ident("").is_err());
        assert!(quote_literal("a\0b").is_err());
    }
}
