//! A local PostgreSQL proxy that signs any client, in any language, in to Azure Database for PostgreSQL
//! with the current Microsoft Entra ID token, without a code change: `psql`, `pgbench`, a Python or Java
//! service, a migration tool or a BI tool connects to the proxy as to a local server, and the proxy
//! opens its upstream session through the same [`ConnectionPlan`](entra_postgres::ConnectionPlan) and
//! token refresher as the pools (`verify-full` TLS, the current token, the configured role), then relays
//! bytes both ways. Cancel requests are forwarded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Where and for whom it listens is checked before any token is fetched.
//! let proxy = entra_proxy::ProxyBuilder::new().listen("127.0.0.1:6543".parse()?);
//! proxy.check()?;
//! // AZURE_POSTGRESQL_HOST, _DATABASE, _USER (and _CLIENTID) from the environment, as for the pools.
//! let proxy = proxy.start(&entra_postgres::EntraConfig::from_env()).await?;
//! // psql "host=127.0.0.1 port=6543 dbname=… user=…" now signs in with the current token.
//! # proxy.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Security
//! The proxy holds an identity's power, so who may use it is decided before anything goes upstream, and
//! nothing a client or another local user sends changes what it trusts:
//! - **Where it listens.** Loopback addresses and unix sockets only. A non-loopback address is refused
//!   unless [`ProxyBuilder::allow_non_loopback`] is given, and then clients must use TLS
//!   ([`ProxyBuilder::client_tls`]) and the local secret ([`LocalAuth::Secret`]). These rules are
//!   checked by [`ProxyBuilder::check`], before a token is fetched.
//! - **Who may connect** ([`LocalAuth`]). By default, processes of the proxy's own user id: on a unix
//!   socket by the kernel's peer credentials, on loopback TCP by the kernel's own lookup of the client's
//!   end of the connection (netlink `sock_diag` with the exact address pair, as `ss` asks; the socket
//!   table in `/proc/net/tcp*` only where netlink is unavailable), so the user id is known as soon as a
//!   connection is accepted and another user's connection is refused and closed at once. Or, with
//!   [`LocalAuth::Secret`], whoever knows a generated local secret, sent as the password.
//! - **Authentication first.** Until a client has authenticated it is told nothing about the proxy:
//!   its refusals say only "peer authentication failed" (SQLSTATE 28000) or "password authentication
//!   failed" (28P01), never the role, the database or the user ids allowed.
//! - **Connections that have not authenticated** are bounded in number
//!   ([`ProxyBuilder::max_unauthenticated`], default [`DEFAULT_MAX_UNAUTHENTICATED`]) and in time
//!   ([`ProxyBuilder::startup_timeout`], default [`DEFAULT_STARTUP_TIMEOUT`]); beyond the number, new
//!   connections wait in the kernel's listen queue, holding no file of the proxy's.
//! - **What a client can reach.** The role an authenticated client asks for must be the proxy's role
//!   (configured, or the name the token gives) and the database must be the configured one; anything
//!   else is refused with a message that says what to connect with. Hosts come from the configuration
//!   only: a client cannot name another. `replication` connections are refused.
//! - **Passwords.** A password a client sends (the local secret) is compared and dropped; no client
//!   password is ever sent upstream. The upstream password is the current token, over the plan's TLS.
//! - **Cancel keys.** Each session gets a random backend key of the proxy's own; the upstream's key never
//!   reaches a client.
//! - **Logs.** Text a client chose (role, database, `application_name`…) is escaped in every log line,
//!   so it cannot forge one.
//! - **Sockets.** Accepted TCP sockets get keepalive and `TCP_USER_TIMEOUT`, so a client that vanished
//!   without closing (a crashed machine, a dropped link) does not hold its upstream session for ever.
//!
//! Tokens and secrets never appear in logs or errors. What is zeroized of the local secret a client
//! sends: the buffer its password message is read into (the whole allocation, taken back from pgwire's
//! decoding, which splits the message off it, and overwritten) and the password decoded from it. What
//! is not: copies outside the proxy's own buffers, namely the kernel's socket buffers and, for TLS
//! clients, rustls's buffers of decrypted bytes. The proxy's own copy of the secret is a
//! [`SecretString`], zeroized when dropped. The token's path is the pool's (see `entra_postgres`).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod admission;
mod cancel;
mod error;
mod listen;
mod peer;
mod session;
mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{CredentialKind, EntraConfig, EntraConnect};
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use error::ProxyError;

/// The port `entra-pg proxy` listens on by default.
pub const DEFAULT_PORT: u16 = 6543;
/// How many upstream sessions may be open at once by default ([`ProxyBuilder::max_size`]).
pub const DEFAULT_MAX_SIZE: usize = 100;
/// How many accepted connections may be still authenticating at once by default.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 64;
/// How long a client has by default from connecting to having authenticated: enough for TLS, the
/// startup message and a password from a program; a person typing a password is asked by the client
/// program before it connects again.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How local clients prove who they are.
#[derive(Clone)]
#[non_exhaustive]
pub enum LocalAuth {
    /// Processes running as one of these user ids (by default the proxy's own): unix-socket peer
    /// credentials, and on loopback TCP the owner of the client's socket in the kernel's table. No
    /// password is asked for.
    Peer {
        /// The user ids allowed.
        uids: Vec<u32>,
    },
    /// Whoever sends this secret as the password (over TLS beyond loopback).
    Secret(SecretString),
}

impl LocalAuth {
    /// Peer authentication for the proxy's own user id.
    pub fn own_user() -> Self {
        LocalAuth::Peer {
            uids: vec![peer::own_uid()],
        }
    }

    /// A new random local secret (32 bytes, URL-safe base64): give it to clients out of band, for example
    /// in a file only they can read.
    pub fn generate_secret() -> SecretString {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut bytes[..]);
        SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]))
    }
}

impl std::fmt::Debug for LocalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalAuth::Peer { uids } => f.debug_struct("Peer").field("uids", uids).finish(),
            LocalAuth::Secret(_) => f.write_str("Secret(…)"),
        }
    }
}

/// TLS for clients, required when the proxy listens beyond loopback.
#[derive(Clone)]
pub struct ClientTls(tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(…)")
    }
}

impl ClientTls {
    /// From a PEM certificate chain and its PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, ProxyError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| ProxyError::ClientTls(format!("reading {}: {e}", path.display())))
        };
        let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| ProxyError::ClientTls(format!("{}: {e}", cert.display())))?;
        if certs.is_empty() {
            return Err(ProxyError::ClientTls(format!(
                "{} holds no certificate",
                cert.display()
            )));
        }
        let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(|e| ProxyError::ClientTls(format!("{}: {e}", key.display())))?
            .ok_or_else(|| ProxyError::ClientTls(format!("{} holds no private key", key.display())))?;
        Self::new(certs, key)
    }

    /// From a certificate chain and its private key.
    pub fn new(
        certs: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Self, ProxyError> {
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ProxyError::ClientTls(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(|e| ProxyError::ClientTls(e.to_string()))?;
        Ok(ClientTls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}

/// Configures and starts a proxy: where it listens, who may connect and its limits. The upstream side,
/// the [`EntraConfig`] every front shares (the connection plan, the identity and its refresher, the role),
/// comes last, in [`start`](Self::start), so that [`check`](Self::check) can refuse a configuration before
/// any token is fetched.
#[derive(Debug)]
pub struct ProxyBuilder {
    tcp: Vec<SocketAddr>,
    socket_dir: Option<PathBuf>,
    socket_port: Option<u16>,
    max_upstream: usize,
    upstream_wait: Option<Duration>,
    max_unauthenticated: usize,
    startup_timeout: Duration,
    auth: LocalAuth,
    remote_allowed: bool,
    client_tls: Option<ClientTls>,
}

impl Default for ProxyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyBuilder {
    /// A proxy listening nowhere yet, for the proxy's own user id, with the default limits.
    pub fn new() -> Self {
        ProxyBuilder {
            tcp: Vec::new(),
            socket_dir: None,
            socket_port: None,
            max_upstream: DEFAULT_MAX_SIZE,
            upstream_wait: Some(Duration::from_secs(30)),
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            auth: LocalAuth::own_user(),
            remote_allowed: false,
            client_tls: None,
        }
    }

    /// Listens on this TCP address (loopback, unless [`allow_non_loopback`](Self::allow_non_loopback)).
    /// Port 0 picks a free port ([`ProxyHandle::tcp_addresses`]).
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.tcp.push(address);
        self
    }

    /// Listens on a unix socket in `dir`, named as libpq expects (`.s.PGSQL.<port>`, the port being
    /// [`socket_port`](Self::socket_port), else the first TCP port, else 5432), so
    /// `psql "host=<dir> port=<port>"` finds it. A directory the proxy creates is made `0700`.
    pub fn unix_socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }

    /// The port in the unix socket's name.
    pub fn socket_port(mut self, port: u16) -> Self {
        self.socket_port = Some(port);
        self
    }

    /// At most this many upstream sessions at once (default [`DEFAULT_MAX_SIZE`]), as every front calls
    /// its size; a client beyond waits up to [`wait_timeout`](Self::wait_timeout) for one to close, then
    /// is refused with SQLSTATE 53300. At most as many clients wait at once; one more is refused with
    /// 53300 at once.
    pub fn max_size(mut self, sessions: usize) -> Self {
        self.max_upstream = sessions.max(1);
        self
    }

    /// How long a client waits for a free upstream slot (default 30 s; `None`: as long as it takes), as
    /// every front calls its wait.
    pub fn wait_timeout(mut self, wait: Option<Duration>) -> Self {
        self.upstream_wait = wait;
        self
    }

    /// At most this many accepted connections that have not authenticated yet (default
    /// [`DEFAULT_MAX_UNAUTHENTICATED`], at least 1). Beyond it the proxy accepts no more connections
    /// until one authenticates, is refused or reaches the [`startup_timeout`](Self::startup_timeout): new
    /// ones wait in the kernel's listen queue, holding none of the proxy's files. With peer
    /// authentication another user's connection holds a place only while the kernel is asked whose it
    /// is, then is refused.
    pub fn max_unauthenticated(mut self, connections: usize) -> Self {
        self.max_unauthenticated = connections.max(1);
        self
    }

    /// How long a client has from connecting to having authenticated and sent its startup message
    /// (default [`DEFAULT_STARTUP_TIMEOUT`]); then the connection is closed.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How clients prove who they are (default: the proxy's own user id, [`LocalAuth::own_user`]).
    pub fn local_auth(mut self, auth: LocalAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Allows TCP addresses beyond loopback. Such a proxy lets other machines sign in as this identity,
    /// so it also requires [`client_tls`](Self::client_tls) and [`LocalAuth::Secret`].
    pub fn allow_non_loopback(mut self, allow: bool) -> Self {
        self.remote_allowed = allow;
        self
    }

    /// TLS for clients (then every TCP client must use it).
    pub fn client_tls(mut self, tls: ClientTls) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Checks where and for whom the proxy would listen against the rules ([`ProxyError::NoListener`],
    /// [`ProxyError::NonLoopback`], [`ProxyError::RemoteNeedsTls`], [`ProxyError::RemoteNeedsSecret`]),
    /// binding nothing. Needs no connector, so a refused configuration costs no token;
    /// [`start`](Self::start) checks the same again.
    pub fn check(&self) -> Result<(), ProxyError> {
        if self.tcp.is_empty() && self.socket_dir.is_none() {
            return Err(ProxyError::NoListener);
        }
        listen::check_binds(
            &self.tcp,
            self.remote_allowed,
            self.client_tls.is_some(),
            matches!(self.auth, LocalAuth::Secret(_)),
        )
    }

    /// Checks the rules (before any token is fetched), prepares the upstream side from `config` (the
    /// plan, the refresher and its first token, the role), binds every listener and starts accepting
    /// clients, whose sessions are opened upstream by `config`'s connector.
    pub async fn start(self, config: &EntraConfig) -> Result<ProxyHandle, ProxyError> {
        self.check()?;
        let connector = config.build_connector().await.map_err(ProxyError::Upstream)?;
        if connector.plan().credential() != CredentialKind::EntraToken || connector.tokens().is_none() {
            return Err(ProxyError::NotTokenMode);
        }
        let role = connector.plan().role().ok_or(ProxyError::NoRole)?.to_string();
        let mut listeners = Vec::new();
        for address in &self.tcp {
            listeners.push(listen::Listener::Tcp(listen::bind_tcp(*address).await?));
        }
        let tcp_addresses: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(listen::Listener::tcp_address)
            .collect();
        let socket_path = match &self.socket_dir {
            Some(dir) => {
                let port = self
                    .socket_port
                    .or_else(|| tcp_addresses.first().map(SocketAddr::port))
                    .unwrap_or(5432);
                let path = listen::socket_path(dir, port);
                listeners.push(listen::Listener::Unix(listen::bind_unix(&path).await?));
                Some(path)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            dbname: connector.plan().dbname().to_string(),
            connector,
            role,
            auth: self.auth,
            client_tls: self.client_tls.map(|t| t.0),
            upstream_slots: Arc::new(Semaphore::new(self.max_upstream)),
            waiting_slots: Arc::new(Semaphore::new(self.max_upstream)),
            max_upstream: self.max_upstream,
            upstream_wait: self.upstream_wait,
            unauthenticated_slots: Arc::new(Semaphore::new(self.max_unauthenticated)),
            startup_timeout: self.startup_timeout,
            cancel_keys: cancel::CancelKeys::default(),
            stats: Counters::default(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(listen::accept_loop(listeners, shared.clone()));
        tracing::info!(
            tcp = ?tcp_addresses,
            socket = ?socket_path,
            role = shared.role,
            database = shared.dbname,
            auth = ?shared.auth,
            max_unauthenticated = self.max_unauthenticated,
            startup_timeout = ?shared.startup_timeout,
            "entra proxy listening"
        );
        Ok(ProxyHandle {
            shared,
            tasks,
            tcp_addresses,
            socket_path,
        })
    }
}

/// What every session shares.
pub(crate) struct Shared {
    connector: EntraConnect,
    role: String,
    dbname: String,
    auth: LocalAuth,
    client_tls: Option<tokio_rustls::TlsAcceptor>,
    upstream_slots: Arc<Semaphore>,
    /// A place for each authenticated client waiting for an upstream slot: as many as the slots, so
    /// the clients of an allowed user cannot pile up (each holds a file) while the slots are taken.
    waiting_slots: Arc<Semaphore>,
    max_upstream: usize,
    upstream_wait: Option<Duration>,
    /// A place for each accepted connection until it has authenticated.
    unauthenticated_slots: Arc<Semaphore>,
    startup_timeout: Duration,
    cancel_keys: cancel::CancelKeys,
    stats: Counters,
}

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn sub(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Counters {
    accepted: Counter,
    relayed: Counter,
    active: Counter,
    unauthenticated: Counter,
    waiting: Counter,
    refused: Counter,
    refused_local_auth: Counter,
    refused_timeout: Counter,
    refused_role: Counter,
    refused_database: Counter,
    refused_full: Counter,
    refused_upstream: Counter,
    cancels: Counter,
}

/// What a proxy has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Connections accepted (cancel requests included).
    pub accepted: u64,
    /// Sessions signed in upstream and relayed.
    pub relayed: u64,
    /// Sessions being relayed now.
    pub active: u64,
    /// Connections accepted that have not authenticated yet, now (at most
    /// [`ProxyBuilder::max_unauthenticated`]).
    pub unauthenticated: u64,
    /// Authenticated clients waiting for an upstream slot, now (at most [`ProxyBuilder::max_size`]).
    pub waiting: u64,
    /// Connections refused by the proxy itself, for any reason.
    pub refused: u64,
    /// … of which failed local authentication.
    pub refused_local_auth: u64,
    /// … of which had not authenticated within the [`ProxyBuilder::startup_timeout`].
    pub refused_timeout: u64,
    /// … of which asked for another role.
    pub refused_role: u64,
    /// … of which asked for another database.
    pub refused_database: u64,
    /// … of which found every upstream slot taken.
    pub refused_full: u64,
    /// Sessions whose upstream could not be opened (no token, server refusal, network).
    pub refused_upstream: u64,
    /// Cancel requests forwarded upstream.
    pub cancels: u64,
}

/// A running proxy. Dropping it stops it (listeners closed, sessions ended, socket file removed), as
/// [`shutdown`](Self::shutdown) does.
pub struct ProxyHandle {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    tcp_addresses: Vec<SocketAddr>,
    socket_path: Option<PathBuf>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("tcp_addresses", &self.tcp_addresses)
            .field("socket_path", &self.socket_path)
            .field("role", &self.shared.role)
            .field("database", &self.shared.dbname)
            .finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// The TCP addresses listened on (with the ports chosen for port 0).
    pub fn tcp_addresses(&self) -> &[SocketAddr] {
        &self.tcp_addresses
    }

    /// The unix socket's path, if any.
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// The role every session signs in as.
    pub fn role(&self) -> &str {
        &self.shared.role
    }

    /// The database every session uses.
    pub fn database(&self) -> &str {
        &self.shared.dbname
    }

    /// The token handle sessions sign in with.
    pub fn tokens(&self) -> Option<&entra_token::TokenHandle> {
        self.shared.connector.tokens()
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.stats;
        ProxyStats {
            accepted: c.accepted.get(),
            relayed: c.relayed.get(),
            active: c.active.get(),
            unauthenticated: c.unauthenticated.get(),
            waiting: c.waiting.get(),
            refused: c.refused.get(),
            refused_local_auth: c.refused_local_auth.get(),
            refused_timeout: c.refused_timeout.get(),
            refused_role: c.refused_role.get(),
            refused_database: c.refused_database.get(),
            refused_full: c.refused_full.get(),
            refused_upstream: c.refused_upstream.get(),
            cancels: c.cancels.get(),
        }
    }

    /// Stops listening, ends every session and removes the socket file.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        self.remove_socket();
    }

    fn remove_socket(&mut self) {
        if let Some(path) = self.socket_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.tasks.abort_all();
        self.remove_socket();
    }
}
