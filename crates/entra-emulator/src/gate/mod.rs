//! [`EntraGate`]: a PostgreSQL-protocol front that signs clients in the way Azure Database for PostgreSQL
//! does with Entra ID tokens, then relays them to a [`TestPostgres`].
//!
//! A client connects with TLS (the gate's certificate chains to the emulator CA), sends the token as its
//! password, and the gate checks it ([`JwtIssuer::verify`] for the PostgreSQL resource, then the role's
//! object id). A good token opens a session on the real server as that role over its private unix socket
//! (trusted there), and from then on the gate copies bytes. Refusals carry Azure's SQLSTATEs and texts.
//!
//! - `protocol`: the wire messages the gate speaks itself.
//! - `auth`: token checks and the rejections they map to ([`RejectReason`]).
//! - `principals`: the role ↔ object id registry ([`Principal`], [`PrincipalKind`]).
//! - `relay`: one connection from first packet to close.

mod auth;
mod principals;
// Crate-visible only for the fuzzing entry points in `crate::__fuzz`.
pub(crate) mod protocol;
mod relay;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use auth::RejectReason;
pub use principals::{Principal, PrincipalKind};

use crate::error::EmulatorError;
use crate::jwt::{JwtIssuer, OSSRDBMS_RESOURCE};
use crate::postgres::{quote_ident, TestPostgres};

/// Default clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

/// Identifies a token without revealing it: its length and the last 4 hex digits of its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TokenFingerprint {
    /// Length in bytes.
    pub len: usize,
    /// Last 4 hex digits of the SHA-256 of the token.
    pub sha256_suffix: String,
}

impl TokenFingerprint {
    /// The fingerprint of `token`.
    pub fn of(token: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let bytes = digest.as_ref();
        let tail = &bytes[bytes.len().saturating_sub(2)..];
        TokenFingerprint {
            len: token.len(),
            sha256_suffix: tail.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

impl std::fmt::Display for TokenFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "len={} sha256=…{}", self.len, self.sha256_suffix)
    }
}

/// A session the gate let through.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionRecord {
    /// The gate's session number (1, 2, …).
    pub id: u64,
    /// The role signed in.
    pub role: String,
    /// The database asked for.
    pub database: String,
    /// The token's `oid`.
    pub oid: String,
    /// Which token was used.
    pub token: TokenFingerprint,
    /// The upstream backend's process id (from BackendKeyData).
    pub backend_pid: Option<i32>,
    /// When the session opened.
    pub at: SystemTime,
}

/// A connection the gate refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectionRecord {
    /// The startup `user`, when the client got that far.
    pub role: Option<String>,
    /// Why.
    pub reason: RejectReason,
    /// When.
    pub at: SystemTime,
}

/// The gate's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// Sessions let through.
    pub accepted: u64,
    /// Sessions open now: registered when signed in, just before the client is sent ReadyForQuery, until
    /// the relay ends.
    pub active: u64,
    /// Refusals per reason.
    pub rejected: BTreeMap<RejectReason, u64>,
}

impl GateStats {
    /// Refusals for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// Refusals for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// State shared by the accept loop, the connection tasks and the test controls.
pub(crate) struct Shared {
    issuer: JwtIssuer,
    audience: String,
    skew: Duration,
    upstream: Arc<TestPostgres>,
    /// Where sessions and cancel requests go instead of the server's socket (a PgBouncer's).
    relay_socket: Option<PathBuf>,
    tls: tokio_rustls::TlsAcceptor,
    principals: principals::Principals,
    next_id: AtomicU64,
    accepted: AtomicU64,
    rejected: Mutex<BTreeMap<RejectReason, u64>>,
    sessions: Mutex<Vec<SessionRecord>>,
    rejections: Mutex<Vec<RejectionRecord>>,
    active: Mutex<HashMap<u64, (String, oneshot::Sender<()>)>>,
    /// Added to every sign-in after the token checks out, in ms: what Azure's sign-in costs.
    sign_in_delay_ms: AtomicU64,
}

impl Shared {
    pub(crate) fn sign_in_delay(&self) -> Duration {
        Duration::from_millis(self.sign_in_delay_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn upstream_socket(&self) -> PathBuf {
        if let Some(socket) = &self.relay_socket {
            return socket.clone();
        }
        self.upstream
            .socket_dir()
            .join(format!(".s.PGSQL.{}", self.upstream.port()))
    }

    fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn record_session(&self, record: SessionRecord) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().push(record);
    }

    fn record_rejection(&self, role: Option<String>, reason: RejectReason) {
        *self.rejected.lock().entry(reason).or_insert(0) += 1;
        self.rejections.lock().push(RejectionRecord {
            role,
            reason,
            at: SystemTime::now(),
        });
    }

    fn register_active(&self, id: u64, role: String, stop: oneshot::Sender<()>) {
        self.active.lock().insert(id, (role, stop));
    }

    fn unregister_active(&self, id: u64) {
        self.active.lock().remove(&id);
    }
}

/// Builds an [`EntraGate`] with a non-default issuer, audience or skew.
#[derive(Debug)]
pub struct EntraGateBuilder {
    upstream: Arc<TestPostgres>,
    issuer: JwtIssuer,
    audience: String,
    skew: Duration,
    relay_socket: Option<PathBuf>,
}

impl EntraGateBuilder {
    /// Relay sessions and cancel requests to the PostgreSQL-protocol server listening on the unix socket
    /// `dir/.s.PGSQL.<port>` instead of the upstream cluster's own socket, e.g. a
    /// [`TestPgBouncer`](crate::TestPgBouncer)'s, which must trust the startup packet as the cluster's
    /// socket does. Principals are still created on the upstream cluster.
    pub fn upstream_socket(mut self, dir: impl AsRef<Path>, port: u16) -> Self {
        self.relay_socket = Some(dir.as_ref().join(format!(".s.PGSQL.{port}")));
        self
    }

    /// Verify tokens with this issuer (default: the crate's test key).
    pub fn issuer(mut self, issuer: JwtIssuer) -> Self {
        self.issuer = issuer;
        self
    }

    /// The audience tokens must carry (default [`OSSRDBMS_RESOURCE`]; sovereign clouds differ).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Clock skew allowed on `exp`/`nbf` (default [`DEFAULT_SKEW`]).
    pub fn skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Listen on `127.0.0.1:0` and start accepting, on the current tokio runtime.
    pub async fn start(self) -> Result<EntraGate, EmulatorError> {
        let cert = self.upstream.ca().issue_server_cert()?;
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(cert.rustls_server_config()?));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| EmulatorError::io("binding the gate to 127.0.0.1:0", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| EmulatorError::io("reading the gate's address", e))?;
        let shared = Arc::new(Shared {
            issuer: self.issuer,
            audience: self.audience,
            skew: self.skew,
            upstream: self.upstream,
            relay_socket: self.relay_socket,
            tls,
            principals: Default::default(),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(Vec::new()),
            rejections: Mutex::new(Vec::new()),
            active: Mutex::new(HashMap::new()),
            sign_in_delay_ms: AtomicU64::new(0),
        });
        let (pause, paused) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), paused));
        Ok(EntraGate {
            shared,
            addr,
            pause,
            accept_task,
        })
    }
}

/// A PostgreSQL-protocol front that authenticates like Azure Database for PostgreSQL with Entra ID.
///
/// Dropping it stops accepting and closes every session it relays (the upstream cluster lives on while
/// other owners hold it).
#[derive(Debug)]
pub struct EntraGate {
    shared: Arc<Shared>,
    addr: SocketAddr,
    pause: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("audience", &self.audience)
            .field("skew", &self.skew)
            .finish_non_exhaustive()
    }
}

impl EntraGate {
    /// A gate in front of `upstream` with default settings.
    pub async fn start(upstream: Arc<TestPostgres>) -> Result<EntraGate, EmulatorError> {
        Self::builder(upstream).start().await
    }

    /// A builder for non-default settings.
    pub fn builder(upstream: Arc<TestPostgres>) -> EntraGateBuilder {
        EntraGateBuilder {
            upstream,
            issuer: JwtIssuer::new(),
            audience: OSSRDBMS_RESOURCE.to_string(),
            skew: DEFAULT_SKEW,
            relay_socket: None,
        }
    }

    /// The address the gate listens on (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the gate listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host name clients use (the gate's certificate is valid for it and for `127.0.0.1`).
    pub fn host(&self) -> &'static str {
        "localhost"
    }

    /// The CA the gate's certificate chains to, PEM (the emulator CA, shared with the upstream cluster).
    pub fn ca_pem(&self) -> &str {
        self.shared.upstream.ca_pem()
    }

    /// A file holding [`EntraGate::ca_pem`], for `sslrootcert`.
    pub fn ca_path(&self) -> &Path {
        self.shared.upstream.ca_path()
    }

    /// The issuer whose tokens the gate accepts.
    pub fn issuer(&self) -> &JwtIssuer {
        &self.shared.issuer
    }

    /// The real server behind the gate.
    pub fn upstream(&self) -> &Arc<TestPostgres> {
        &self.shared.upstream
    }

    /// A libpq connection string for `role` through the gate (no password: the token is the password).
    pub fn connection_string(&self, role: &str) -> String {
        format!(
            "host={} port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
            self.host(),
            self.port(),
            role,
            self.ca_path().display()
        )
    }

    /// Register `name` for object id `oid` (the emulator's `pgaadauth_create_principal_with_oid`) and
    /// create the role upstream (LOGIN, no password) unless it exists. Re-registering un-revokes.
    pub async fn create_principal(
        &self,
        name: &str,
        oid: &str,
        kind: PrincipalKind,
    ) -> Result<(), EmulatorError> {
        let upstream = &self.shared.upstream;
        let client = upstream.superuser_client().await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
            .await
            .map_err(|source| EmulatorError::Sql {
                what: format!("looking up role {name:?}"),
                log: upstream.log_path().to_path_buf(),
                source,
            })?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE ROLE {} LOGIN", quote_ident(name)?))
                .await
                .map_err(|source| EmulatorError::Sql {
                    what: format!("creating role {name:?}"),
                    log: upstream.log_path().to_path_buf(),
                    source,
                })?;
        }
        self.shared.principals.insert(name, oid, kind);
        Ok(())
    }

    /// Revoke `name`: new sign-ins are refused (open sessions stay). `false` if it was never registered.
    pub fn revoke_principal(&self, name: &str) -> bool {
        self.shared.principals.revoke(name)
    }

    /// Every registered principal.
    pub fn principals(&self) -> Vec<Principal> {
        self.shared.principals.all()
    }

    /// Close every session of `role`: upstream backends are terminated (clients get PostgreSQL's FATAL
    /// 57P01) and the gate's relays for the role are closed. Returns how many relays were open.
    pub async fn terminate_sessions(&self, role: &str) -> Result<usize, EmulatorError> {
        let ids: Vec<u64> = self
            .shared
            .active
            .lock()
            .iter()
            .filter(|(_, (r, _))| r == role)
            .map(|(id, _)| *id)
            .collect();
        let terminated = self.shared.upstream.terminate_backends(role).await;
        // Give relays a moment to pass the server's FATAL on before cutting what is left.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut active = self.shared.active.lock();
        for id in &ids {
            if let Some((_, stop)) = active.remove(id) {
                let _ = stop.send(());
            }
        }
        drop(active);
        terminated?;
        Ok(ids.len())
    }

    /// Restart the upstream server: every relayed session ends, new ones work once it is back.
    pub async fn restart_upstream(&self) -> Result<(), EmulatorError> {
        self.shared.upstream.restart().await
    }

    /// Delays every sign-in by `delay` once the token has been checked, before the session opens: the
    /// price of a real server's Entra sign-in (tens of milliseconds against Azure), for benchmarks that
    /// must see it. Applies to sign-ins from now on.
    pub fn set_sign_in_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .sign_in_delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stop (`true`) or resume (`false`) accepting: while paused, connections wait in the listen queue
    /// and clients time out, like a server that hangs.
    pub fn pause_accepting(&self, paused: bool) {
        self.pause.send_replace(paused);
    }

    /// Sessions let through so far, in order. A session is recorded (and can be terminated) before its
    /// client reads ReadyForQuery, so a client that is signed in always finds its session here.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.shared.sessions.lock().clone()
    }

    /// Refusals so far, in order.
    pub fn rejections(&self) -> Vec<RejectionRecord> {
        self.shared.rejections.lock().clone()
    }

    /// The counters.
    pub fn stats(&self) -> GateStats {
        GateStats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            active: self.shared.active.lock().len() as u64,
            rejected: self.shared.rejected.lock().clone(),
        }
    }
}

impl Drop for EntraGate {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut paused: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        while *paused.borrow_and_update() {
            tokio::select! {
                changed = paused.changed() => if changed.is_err() { return },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(relay::serve(shared.clone(), tcp));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "gate: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = paused.changed() => if changed.is_err() { return },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_length_and_the_last_four_hex_digits_of_the_sha256() {
        // SHA-256("abc") = ba7816bf…f20015ad
        let fp = TokenFingerprint::of("abc");
        assert_eq!(
            fp,
            TokenFingerprint {
                len: 3,
                sha256_suffix: "15ad".into()
            }
        );
        assert_eq!(fp.to_string(), "len=3 sha256=…15ad");
    }
}
