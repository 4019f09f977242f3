//! [`ProxyBuilder`]: where the proxy listens, who may connect, its limits; then the upstream side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{CredentialKind, EntraConfig};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::ProxyError;
use crate::stats::Counters;
use crate::{
    cancel, listen, ClientTls, LocalAuth, ProxyHandle, Shared, DEFAULT_MAX_SIZE, DEFAULT_MAX_UNAUTHENTICATED,
    DEFAULT_STARTUP_TIMEOUT,
};

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
