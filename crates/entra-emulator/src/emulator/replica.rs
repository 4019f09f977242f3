//! [`Replica`]: a second, read-only server behind a gate of its own, and switching the roles.

use std::sync::Arc;

use crate::error::EmulatorError;
use crate::gate::EntraGate;
use crate::postgres::TestPostgres;

/// A second server behind a gate of its own (same CA, same token issuer, the same principals and
/// database), started read-only: a replica. [`Emulator::switch_over`](super::Emulator::switch_over)
/// swaps the roles, as a promotion does; `target_session_attrs` tells them apart by
/// `transaction_read_only`.
#[derive(Debug)]
pub struct Replica {
    pub(super) postgres: Arc<TestPostgres>,
    pub(super) gate: EntraGate,
}

impl Replica {
    /// Its server.
    pub fn postgres(&self) -> &Arc<TestPostgres> {
        &self.postgres
    }

    /// Its gate (the address clients connect to).
    pub fn gate(&self) -> &EntraGate {
        &self.gate
    }
}

/// Makes `postgres` read-only or writable for every new transaction, sessions already open included
/// (`default_transaction_read_only`, reloaded).
pub(super) async fn set_read_only(postgres: &TestPostgres, read_only: bool) -> Result<(), EmulatorError> {
    let value = if read_only { "on" } else { "off" };
    // Separate statements: ALTER SYSTEM refuses to run inside a multi-statement batch's transaction.
    postgres
        .execute(&format!(
            "ALTER SYSTEM SET default_transaction_read_only = {value}"
        ))
        .await?;
    postgres.execute("SELECT pg_reload_conf()").await
}
