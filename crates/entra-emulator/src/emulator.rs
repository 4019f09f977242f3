//! [`Emulator`]: the fake identity endpoints, a throwaway PostgreSQL and the gate in front of it, started
//! together and described the way a client finds Azure: connection settings and environment variables.
//!
//! ```no_run
//! # async fn demo() -> Result<(), entra_emulator::EmulatorError> {
//! use std::time::Duration;
//! use entra_emulator::Emulator;
//!
//! let emulator = Emulator::builder()
//!     .token_lifetime(Duration::from_secs(20))
//!     .start()
//!     .await?;
//! // A client configured from these finds the fake IMDS, fetches a token for the system identity
//! // `entra-app` and signs in to `appdb` on the gate with `sslmode=verify-full`.
//! for (name, value) in emulator.env_vars() {
//!     println!("{name}={value}");
//! }
//! # Ok(()) }
//! ```
//!
//! The gate and its upstream server share one CA ([`crate::EmulatorCa`]). The fake identity's HTTPS
//! certificate (with [`EmulatorBuilder::identity_tls`]) comes from a CA of its own, so
//! [`Emulator::ca_pem`] is a bundle of both: trusting it is enough for every endpoint.
//!
//! The gate's and the fake's tasks run on a runtime the emulator owns, so an emulator works under any
//! executor and dropping it ends them all at once, before `drop` returns.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tempfile::TempDir;

use crate::error::EmulatorError;
use crate::gate::{EntraGate, PrincipalKind};
use crate::identity::{FakeIdentity, ManagedIdentity};
use crate::jwt::Claims;
use crate::pgbouncer::{PoolMode, TestPgBouncer};
use crate::postgres::TestPostgres;

/// The default principal: the system-assigned identity the fake's IMDS and App Service endpoints serve.
pub const DEFAULT_PRINCIPAL: &str = "entra-app";
/// The database created for the default principal.
pub const DEFAULT_DATABASE: &str = "appdb";
/// Lifetime of issued tokens unless [`EmulatorBuilder::token_lifetime`] says otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Worker threads of the emulator's own runtime: enough for the gate to relay while a test's runtime is
/// busy, few enough for small CI machines.
const WORKER_THREADS: usize = 2;

/// Configures an [`Emulator`] before it starts.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    token_lifetime: Duration,
    principal: String,
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

    /// Runs on the runtime the tasks will live on: the emulator's own, or the caller's with
    /// [`on_caller_runtime`](Self::on_caller_runtime).
    async fn start_parts(self) -> Result<Parts, EmulatorError> {
        let principal = ManagedIdentity::new(&self.principal);
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
    _runtime: Option<Background>,
    gate: EntraGate,
    replica: Option<Replica>,
    /// Whether the replica is the writer now (after an odd number of switch-overs).
    switched: std::sync::atomic::AtomicBool,
    // Before the server: its pooled sessions end first.
    pgbouncer: Option<TestPgBouncer>,
    identity: FakeIdentity,
    postgres: Arc<TestPostgres>,
    principal: ManagedIdentity,
    dbname: String,
    lifetime: Mutex<Duration>,
    padding: usize,
    ca_pem: String,
    ca_path: PathBuf,
    _ca_dir: TempDir,
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
    /// A builder with the defaults: principal [`DEFAULT_PRINCIPAL`], database [`DEFAULT_DATABASE`],
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
        let mut claims = Claims::new(&identity.object_id, lifetime);
        claims.appid = Some(identity.client_id.clone());
        claims.xms_mirid = Some(identity.resource_id.clone());
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

/// The emulator's own runtime. Dropping it cancels and drops every task on it before returning.
struct Background {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Background {
    fn start() -> Result<Self, EmulatorError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("entra-emulator")
            .enable_all()
            .build()
            .map_err(|e| EmulatorError::io("starting the emulator's runtime", e))?;
        Ok(Background {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the emulator's runtime and waits for it from the caller's executor.
    async fn run<F>(&self, future: F) -> Result<F::Output, EmulatorError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let Some(runtime) = &self.runtime else {
            return Err(shut_down());
        };
        match runtime.spawn(future).await {
            Ok(output) => Ok(output),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(shut_down()),
        }
    }
}

fn shut_down() -> EmulatorError {
    EmulatorError::io(
        "running the emulator's start-up",
        std::io::Error::other("the emulator's runtime shut down"),
    )
}

impl Drop for Background {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // Dropping a runtime blocks until its tasks are dropped, which tokio forbids on an async thread
        // (where emulators are usually dropped): do it on a thread of its own and wait for it.
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("entra-emulator-shutdown".into())
            .spawn(move || {
                if let Ok(runtime) = rx.recv() {
                    drop::<tokio::runtime::Runtime>(runtime);
                }
            });
        match spawned {
            Ok(thread) => {
                let _ = tx.send(runtime);
                let _ = thread.join();
            }
            // No thread to spare: stop without waiting rather than not at all.
            Err(_) => runtime.shutdown_background(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Emulator>();
        shareable::<EmulatorBuilder>();
    }

    #[test]
    fn shell_quoting_survives_quotes_and_expansions() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /) `x` \"y\""), "'$(rm -rf /) `x` \"y\"'");
    }

    #[test]
    fn the_ca_bundle_holds_the_identity_ca_only_when_there_is_one() {
        assert_eq!(ca_bundle("A\n", None), "A\n");
        assert_eq!(ca_bundle("A\n", Some("B\n")), "A\nB\n");
        assert_eq!(ca_bundle("A", Some("B\n")), "A\nB\n");
    }
}

/// A second server behind a gate of its own (same CA, same token issuer, the same principals and
/// database), started read-only: a replica. [`Emulator::switch_over`] swaps the roles, as a promotion
/// does; `target_session_attrs` tells them apart by `transaction_read_only`.
#[derive(Debug)]
pub struct Replica {
    postgres: Arc<TestPostgres>,
    gate: EntraGate,
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
async fn set_read_only(postgres: &TestPostgres, read_only: bool) -> Result<(), EmulatorError> {
    let value = if read_only { "on" } else { "off" };
    // Separate statements: ALTER SYSTEM refuses to run inside a multi-statement batch's transaction.
    postgres
        .execute(&format!(
            "ALTER SYSTEM SET default_transaction_read_only = {value}"
        ))
        .await?;
    postgres.execute("SELECT pg_reload_conf()").await
}
