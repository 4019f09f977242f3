//! [`EmulatorBuilder`]: what an [`Emulator`] is made of, and starting it.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::replica::set_read_only;
use super::runtime::Background;
use super::{Emulator, Replica, DEFAULT_DATABASE, DEFAULT_PRINCIPAL, DEFAULT_TOKEN_LIFETIME};
use crate::error::EmulatorError;
use crate::gate::{EntraGate, PrincipalKind};
use crate::identity::{FakeIdentity, ManagedIdentity};
use crate::pgbouncer::{PoolMode, TestPgBouncer};
use crate::postgres::TestPostgres;

/// Configures an [`Emulator`] before it starts.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    token_lifetime: Duration,
    principal: String,
    principal_identity: Option<ManagedIdentity>,
    extra: Vec<ManagedIdentity>,
    identity_tls: bool,
    token_padding: usize,
    database: String,
    gate_skew: Option<Duration>,
    settings: Vec<(String, String)>,
    pgbouncer: Option<PoolMode>,
    on_caller_runtime: bool,
    replica: bool,
    sign_in_delay: Duration,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            principal: DEFAULT_PRINCIPAL.to_string(),
            principal_identity: None,
            extra: Vec::new(),
            identity_tls: false,
            token_padding: 0,
            database: DEFAULT_DATABASE.to_string(),
            gate_skew: None,
            settings: Vec::new(),
            pgbouncer: None,
            on_caller_runtime: false,
            replica: false,
            sign_in_delay: Duration::ZERO,
        }
    }
}

impl EmulatorBuilder {
    /// Lifetime of the tokens the fake issues (default [`DEFAULT_TOKEN_LIFETIME`]).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// The name of the default principal (default [`DEFAULT_PRINCIPAL`]): the fake's system-assigned
    /// identity (`ManagedIdentity::new(name)`), registered in the gate as a service principal, and the
    /// owner of the database.
    pub fn principal_name(mut self, name: &str) -> Self {
        self.principal = name.to_string();
        self.principal_identity = None;
        self
    }

    /// The default principal as a whole (instead of [`principal_name`](Self::principal_name)'s
    /// `ManagedIdentity::new(name)`): the fake's system-assigned identity, say a web app's
    /// ([`ManagedIdentity::system_assigned`]), whose tokens carry its resource's id.
    pub fn principal(mut self, identity: ManagedIdentity) -> Self {
        self.principal = identity.name.clone();
        self.principal_identity = Some(identity);
        self
    }

    /// Another identity (repeatable): assigned to the fake as user-assigned (requests select it by
    /// `client_id`, `object_id` or resource id) and registered in the gate under its name.
    pub fn extra_principal(mut self, identity: ManagedIdentity) -> Self {
        self.extra.push(identity);
        self
    }

    /// Serve the fake identity endpoints over HTTPS (default: plain HTTP, as IMDS does). Clients must then
    /// trust [`Emulator::ca_pem`] for the token endpoint too.
    pub fn identity_tls(mut self, on: bool) -> Self {
        self.identity_tls = on;
        self
    }

    /// Make issued tokens at least this many bytes long (default 0: no padding), like tokens with many
    /// group claims.
    pub fn token_padding(mut self, bytes: usize) -> Self {
        self.token_padding = bytes;
        self
    }

    /// The database to create, owned by the default principal's role (default [`DEFAULT_DATABASE`]).
    /// A database that already exists (`postgres`) is used as it is.
    pub fn database(mut self, name: &str) -> Self {
        self.database = name.to_string();
        self
    }

    /// Clock skew the gate allows on `exp`/`nbf` (default: [`crate::gate::DEFAULT_SKEW`]).
    pub fn gate_skew(mut self, skew: Duration) -> Self {
        self.gate_skew = Some(skew);
        self
    }

    /// A `postgresql.conf` setting for the server, written as given (quote strings: `"'on'"`).
    pub fn postgres_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Run the gate and the fake endpoints on the caller's Tokio runtime instead of one the emulator owns
    /// (default: its own). Benchmarks want this: relaying then costs no wake-ups across runtimes (one
    /// connection: about 0.9× the round trips of a direct connection instead of 0.6×). The price: dropping
    /// the emulator aborts its tasks, and the server stops and its files go once the caller's runtime has
    /// dropped those tasks (at its next turn, at the latest when it shuts down), not inside `drop`.
    pub fn on_caller_runtime(mut self, on: bool) -> Self {
        self.on_caller_runtime = on;
        self
    }

    /// Put a [`TestPgBouncer`] in `mode` between the gate and the server, as Azure's built-in PgBouncer
    /// (default: none, the gate relays to the server). Needs `pgbouncer` installed.
    pub fn pgbouncer(mut self, mode: PoolMode) -> Self {
        self.pgbouncer = Some(mode);
        self
    }

    /// Delays every sign-in at the gate(s) by this much ([`EntraGate::set_sign_in_delay`]).
    pub fn sign_in_delay(mut self, delay: Duration) -> Self {
        self.sign_in_delay = delay;
        self
    }

    /// Also starts a [`Replica`]: a second server, read-only, behind its own gate, with the same CA,
    /// token issuer, principals and database ([`Emulator::replica`], [`Emulator::switch_over`]).
    pub fn replica(mut self, on: bool) -> Self {
        self.replica = on;
        self
    }

    /// Starts the fake identity endpoints, the server and the gate; registers the principals and creates
    /// the database.
    ///
    /// Fails when PostgreSQL is not installed or cannot start, a port cannot be bound, or a name cannot be
    /// used as a role or database; whatever was started by then is torn down.
    pub async fn start(self) -> Result<Emulator, EmulatorError> {
        let database = self.database.clone();
        let lifetime = self.token_lifetime;
        let padding = self.token_padding;
        let (background, parts) = if self.on_caller_runtime {
            (None, self.start_parts().await?)
        } else {
            let background = Background::start()?;
            let parts = background.run(self.start_parts()).await??;
            (Some(background), parts)
        };
        let ca_pem = ca_bundle(parts.postgres.ca_pem(), parts.identity.ca_pem().as_deref());
        let ca_dir = tempfile::Builder::new()
            .prefix("entra-emulator-ca-")
            .tempdir()
            .map_err(|e| EmulatorError::io("creating a temporary directory for the CA file", e))?;
        let ca_path = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca_pem)
            .map_err(|e| EmulatorError::io(format!("writing {}", ca_path.display()), e))?;
        Ok(Emulator {
            _runtime: background,
            gate: parts.gate,
            replica: parts.replica,
            switched: std::sync::atomic::AtomicBool::new(false),
            pgbouncer: parts.pgbouncer,
            identity: parts.identity,
            postgres: parts.postgres,
            principal: parts.principal,
            dbname: database,
            lifetime: Mutex::new(lifetime),
            padding,
            ca_pem,
            ca_path,
            _ca_dir: ca_dir,
        })
    }

    /// Runs on the runtime the tasks will live on: the emulator's own, or the caller's with
    /// [`on_caller_runtime`](Self::on_caller_runtime).
    async fn start_parts(self) -> Result<Parts, EmulatorError> {
        let principal = self
            .principal_identity
            .clone()
            .unwrap_or_else(|| ManagedIdentity::new(&self.principal));
        let mut fake = FakeIdentity::builder()
            .token_lifetime(self.token_lifetime)
            .token_padding(self.token_padding)
            .tls(self.identity_tls)
            .system_identity(principal.clone());
        for identity in &self.extra {
            fake = fake.identity(identity.clone());
        }
        let identity = fake
            .start()
            .await
            .map_err(|e| EmulatorError::io("starting the fake identity endpoints on 127.0.0.1", e))?;

        let mut server = TestPostgres::builder();
        for (name, value) in &self.settings {
            server = server.setting(name.clone(), value.clone());
        }
        let postgres = Arc::new(server.start().await?);

        let pgbouncer = match self.pgbouncer {
            Some(mode) => Some(TestPgBouncer::start(&postgres, mode).await?),
            None => None,
        };
        let mut gate = EntraGate::builder(postgres.clone()).issuer(identity.issuer().clone());
        if let Some(bouncer) = &pgbouncer {
            gate = gate.upstream_socket(bouncer.socket_dir(), bouncer.port());
        }
        if let Some(skew) = self.gate_skew {
            gate = gate.skew(skew);
        }
        let gate = gate.start().await?;
        gate.set_sign_in_delay(self.sign_in_delay);
        for id in std::iter::once(&principal).chain(&self.extra) {
            gate.create_principal(&id.name, &id.object_id, PrincipalKind::Service)
                .await?;
        }
        ensure_database(&postgres, &self.database, &principal.name).await?;
        let replica = if self.replica {
            let mut server = TestPostgres::builder().ca(postgres.ca().clone());
            for (name, value) in &self.settings {
                server = server.setting(name.clone(), value.clone());
            }
            let replica_pg = Arc::new(server.start().await?);
            let mut replica_gate = EntraGate::builder(replica_pg.clone()).issuer(identity.issuer().clone());
            if let Some(skew) = self.gate_skew {
                replica_gate = replica_gate.skew(skew);
            }
            let replica_gate = replica_gate.start().await?;
            replica_gate.set_sign_in_delay(self.sign_in_delay);
            for id in std::iter::once(&principal).chain(&self.extra) {
                replica_gate
                    .create_principal(&id.name, &id.object_id, PrincipalKind::Service)
                    .await?;
            }
            ensure_database(&replica_pg, &self.database, &principal.name).await?;
            set_read_only(&replica_pg, true).await?;
            Some(Replica {
                postgres: replica_pg,
                gate: replica_gate,
            })
        } else {
            None
        };
        Ok(Parts {
            identity,
            postgres,
            gate,
            pgbouncer,
            principal,
            replica,
        })
    }
}

/// What [`EmulatorBuilder::start_parts`] hands back to the caller's runtime.
struct Parts {
    identity: FakeIdentity,
    postgres: Arc<TestPostgres>,
    gate: EntraGate,
    pgbouncer: Option<TestPgBouncer>,
    principal: ManagedIdentity,
    replica: Option<Replica>,
}

/// The PEM bundle clients trust: the emulator CA, then the fake identity's CA when it has one.
fn ca_bundle(emulator_ca: &str, identity_ca: Option<&str>) -> String {
    let mut bundle = emulator_ca.to_string();
    if let Some(identity_ca) = identity_ca {
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(identity_ca);
    }
    bundle
}

/// Creates `name` owned by `owner` unless a database of that name exists.
async fn ensure_database(postgres: &TestPostgres, name: &str, owner: &str) -> Result<(), EmulatorError> {
    let client = postgres.superuser_client().await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|source| EmulatorError::Sql {
            what: format!("looking up database {name:?}"),
            log: postgres.log_path().to_path_buf(),
            source,
        })?
        .is_some();
    if exists {
        return Ok(());
    }
    postgres.create_database(name, owner).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_holds_the_identity_ca_only_when_there_is_one() {
        assert_eq!(ca_bundle("A\n", None), "A\n");
        assert_eq!(ca_bundle("A\n", Some("B\n")), "A\nB\n");
        assert_eq!(ca_bundle("A", Some("B\n")), "A\nB\n");
    }
}
