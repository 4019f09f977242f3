//! [`Emulator`]: the running parts, what points a client at them, and the controls a test turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tempfile::TempDir;

use super::replica::{set_read_only, Replica};
use super::runtime::Background;
use super::EmulatorBuilder;
use crate::error::EmulatorError;
use crate::gate::{EntraGate, PrincipalKind};
use crate::identity::{FakeIdentity, ManagedIdentity};
use crate::jwt::Claims;
use crate::pgbouncer::TestPgBouncer;
use crate::postgres::TestPostgres;

/// Azure Database for PostgreSQL with Entra ID sign-in, on loopback: [`FakeIdentity`] serves tokens for
/// the principals, [`EntraGate`] checks them like Azure and relays to a [`TestPostgres`].
///
/// Dropping it stops the gate and the fake (every relayed session ends), stops the server and deletes
/// every directory it made, before `drop` returns (with
/// [`on_caller_runtime`](EmulatorBuilder::on_caller_runtime): once the caller's runtime has dropped the
/// aborted tasks). Clones of [`identity`](Self::identity) or
/// [`postgres`](Self::postgres) taken by the caller keep their part's files until they are dropped too.
pub struct Emulator {
    // Field order is drop order: the runtime first, which ends every gate and fake task, so the handles
    // below are the last owners of what they hold and release it synchronously. `None` with
    // `on_caller_runtime`: the tasks end when the caller's runtime drops them.
    pub(super) _runtime: Option<Background>,
    pub(super) gate: EntraGate,
    pub(super) replica: Option<Replica>,
    /// Whether the replica is the writer now (after an odd number of switch-overs).
    pub(super) switched: std::sync::atomic::AtomicBool,
    // Before the server: its pooled sessions end first.
    pub(super) pgbouncer: Option<TestPgBouncer>,
    pub(super) identity: FakeIdentity,
    pub(super) postgres: Arc<TestPostgres>,
    pub(super) principal: ManagedIdentity,
    pub(super) dbname: String,
    pub(super) lifetime: Mutex<Duration>,
    pub(super) padding: usize,
    pub(super) ca_pem: String,
    pub(super) ca_path: PathBuf,
    pub(super) _ca_dir: TempDir,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("host", &self.host())
            .field("port", &self.port())
            .field("dbname", &self.dbname)
            .field("user", &self.user())
            .field("identity", &self.identity)
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder with the defaults: principal [`DEFAULT_PRINCIPAL`](super::DEFAULT_PRINCIPAL), database
    /// [`DEFAULT_DATABASE`](super::DEFAULT_DATABASE),
    /// one-hour tokens, plain HTTP identity endpoints.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// Starts an emulator with the defaults (`builder().start()`).
    pub async fn start() -> Result<Emulator, EmulatorError> {
        Self::builder().start().await
    }

    /// The fake token endpoints (test controls: faults, request log, lifetime).
    pub fn identity(&self) -> &FakeIdentity {
        &self.identity
    }

    /// The gate (test controls: revoke, terminate sessions, restart the upstream, pause).
    pub fn gate(&self) -> &EntraGate {
        &self.gate
    }

    /// The PgBouncer between the gate and the server, when [`EmulatorBuilder::pgbouncer`] asked for one.
    pub fn pgbouncer(&self) -> Option<&TestPgBouncer> {
        self.pgbouncer.as_ref()
    }

    /// The real server behind the gate.
    pub fn postgres(&self) -> &Arc<TestPostgres> {
        &self.postgres
    }

    /// The default principal: the fake's system-assigned identity.
    pub fn principal(&self) -> &ManagedIdentity {
        &self.principal
    }

    /// The host name to connect to: `localhost`, which the gate's certificate is valid for, so
    /// `sslmode=verify-full` works.
    pub fn host(&self) -> &str {
        self.gate.host()
    }

    /// The gate's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.gate.port()
    }

    /// The database created for the default principal.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The role to sign in as: the default principal's name.
    pub fn user(&self) -> &str {
        &self.principal.name
    }

    /// A file holding [`ca_pem`](Self::ca_pem), for `sslrootcert` / `PGSSLROOTCERT`.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The CA certificates to trust, PEM: the emulator CA (gate and server) and, with
    /// [`EmulatorBuilder::identity_tls`], the fake identity's CA.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Environment variables that point a client at the emulator through IMDS
    /// (`AZURE_POD_IDENTITY_AUTHORITY_HOST`), plus libpq's `PG*` and Service Connector's
    /// `AZURE_POSTGRESQL_*` settings for the gate with `verify-full` against [`ca_path`](Self::ca_path).
    ///
    /// With [`EmulatorBuilder::identity_tls`] the token source must also trust [`ca_pem`](Self::ca_pem);
    /// no variable here says so.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![var(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            self.identity.imds_authority(),
        )];
        vars.extend(self.connection_vars());
        vars
    }

    /// Like [`env_vars`](Self::env_vars), but for App Service's identity endpoint: `IDENTITY_ENDPOINT`
    /// and the current `IDENTITY_HEADER` instead of `AZURE_POD_IDENTITY_AUTHORITY_HOST`.
    pub fn app_service_env_vars(&self) -> Vec<(String, String)> {
        let mut vars = vec![
            var("IDENTITY_ENDPOINT", self.identity.app_service_endpoint()),
            var("IDENTITY_HEADER", self.identity.identity_header()),
        ];
        vars.extend(self.connection_vars());
        vars
    }

    /// [`env_vars`](Self::env_vars) as `export NAME='value'` lines for a POSIX shell (`eval` them).
    pub fn shell_exports(&self) -> String {
        self.env_vars()
            .iter()
            .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
            .collect()
    }

    fn connection_vars(&self) -> Vec<(String, String)> {
        let port = self.port().to_string();
        let ca = self.ca_path.display().to_string();
        vec![
            var("PGHOST", self.host()),
            var("PGPORT", &port),
            var("PGDATABASE", self.dbname()),
            var("PGUSER", self.user()),
            var("PGSSLMODE", "verify-full"),
            var("PGSSLROOTCERT", &ca),
            var("AZURE_POSTGRESQL_HOST", self.host()),
            var("AZURE_POSTGRESQL_PORT", &port),
            var("AZURE_POSTGRESQL_DATABASE", self.dbname()),
            var("AZURE_POSTGRESQL_USER", self.user()),
            var("AZURE_POSTGRESQL_SSL", "true"),
        ]
    }

    /// The replica, when started with [`EmulatorBuilder::replica`].
    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// Swaps the roles of the primary and the replica: the writer becomes read-only and the other
    /// writable, for every transaction from now on (open sessions included), as after a promotion.
    /// Fails with [`EmulatorError::NoReplica`] when started without one.
    pub async fn switch_over(&self) -> Result<(), EmulatorError> {
        let Some(replica) = &self.replica else {
            return Err(EmulatorError::NoReplica);
        };
        let to_replica = !self.switched.load(std::sync::atomic::Ordering::SeqCst);
        // Both read-only for a moment, never both writable.
        let (old, new) = if to_replica {
            (&self.postgres, &replica.postgres)
        } else {
            (&replica.postgres, &self.postgres)
        };
        set_read_only(old, true).await?;
        set_read_only(new, false).await?;
        self.switched
            .store(to_replica, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// A connection string naming the primary's gate and then the replica's (`host=localhost,localhost
    /// port=P,R`), with `target_session_attrs=attrs`: how a service lists writer and reader endpoints.
    pub fn replica_set_connection_string(&self, attrs: &str) -> String {
        let ports = match &self.replica {
            Some(r) => format!("{},{}", self.port(), r.gate.port()),
            None => self.port().to_string(),
        };
        let hosts = match &self.replica {
            Some(_) => format!("{0},{0}", self.host()),
            None => self.host().to_string(),
        };
        format!(
            "host={hosts} port={ports} dbname={} user={} sslmode=verify-full sslrootcert={} \
             target_session_attrs={attrs}",
            self.dbname(),
            self.user(),
            self.ca_path.display()
        )
    }

    /// Adds an identity while running: assigned to the fake as user-assigned and registered in the gate
    /// under its name (its role is created unless it exists).
    pub async fn add_principal(&self, identity: ManagedIdentity) -> Result<(), EmulatorError> {
        self.gate
            .create_principal(&identity.name, &identity.object_id, PrincipalKind::Service)
            .await?;
        self.identity.add_identity(identity);
        Ok(())
    }

    /// Sets the lifetime of tokens issued from now on, by the fake and by [`token_for`](Self::token_for).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *self.lifetime.lock() = lifetime;
        self.identity.set_token_lifetime(lifetime);
    }

    /// A token for `identity` as the fake would issue it (issuer key, PostgreSQL audience, the lifetime of
    /// [`set_token_lifetime`](Self::set_token_lifetime) or the builder, the builder's padding), without
    /// HTTP. Whether the gate accepts it depends on `identity` being registered.
    pub fn token_for(&self, identity: &ManagedIdentity) -> String {
        self.token_for_lifetime(identity, *self.lifetime.lock())
    }

    /// [`token_for`](Self::token_for) with its own lifetime: a password for a client that fetches once
    /// (a plain pool in a benchmark, a script).
    pub fn token_for_lifetime(&self, identity: &ManagedIdentity, lifetime: Duration) -> String {
        let mut claims = Claims::managed_identity(identity, lifetime);
        if self.padding > 0 {
            claims = claims.padded_to(self.padding);
        }
        self.identity.issuer().sign(&claims)
    }
}

fn var(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// `value` in single quotes for a POSIX shell; an inner `'` becomes `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_expansions() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /) `x` \"y\""), "'$(rm -rf /) `x` \"y\"'");
    }
}
