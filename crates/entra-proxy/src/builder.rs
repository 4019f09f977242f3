//! [`ProxyBuilder`]: where the proxy listens, who may connect, its limits; then the upstream side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{CredentialKind, EntraConfig, EntraConnect};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::ProxyError;
use crate::metrics::ProxyMetrics;
use crate::state::ProxyState;
use crate::{
    cancel, health, listen, warm, ClientTls, LocalAuth, ProxyHandle, Shared, DEFAULT_MAX_SIZE,
    DEFAULT_MAX_UNAUTHENTICATED, DEFAULT_READINESS_MARGIN, DEFAULT_STARTUP_TIMEOUT, DEFAULT_WARM,
    DEFAULT_WARM_LIFETIME,
};

/// How often recorded histogram samples are moved into their buckets when nobody scrapes `/metrics`.
const METRICS_UPKEEP: Duration = Duration::from_secs(10);

/// Where the health listener is.
#[derive(Debug)]
enum HealthListener {
    /// An address to bind when the proxy starts.
    Address(SocketAddr),
    /// A listener bound already.
    Bound(std::net::TcpListener),
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
    health: Option<HealthListener>,
    readiness_margin: Duration,
    connection_test: bool,
    extra_metrics: Option<PrometheusHandle>,
    warm: usize,
    warm_lifetime: Duration,
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
            health: None,
            readiness_margin: DEFAULT_READINESS_MARGIN,
            connection_test: false,
            extra_metrics: None,
            warm: DEFAULT_WARM,
            warm_lifetime: DEFAULT_WARM_LIFETIME,
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

    /// Serves health checks and metrics over HTTP on this address, apart from the PostgreSQL listeners:
    /// `/startup`, `/liveness`, `/readiness` and `/metrics` (see [`ProxyHandle::readiness`] and
    /// [`crate::metrics`]). It is bound first thing in [`start`](Self::start), so it answers while the
    /// first token is fetched. It reveals no secret, role or database, so it may listen beyond loopback,
    /// as Kubernetes's probes need (they come to the pod's address): it is bound where it is told.
    pub fn health_listen(mut self, address: SocketAddr) -> Self {
        self.health = Some(HealthListener::Address(address));
        self
    }

    /// As [`health_listen`](Self::health_listen), on a listener bound already (port 0 chosen by the
    /// system, a socket handed over by a service manager…), so its address is known before
    /// [`start`](Self::start) returns.
    pub fn health_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.health = Some(HealthListener::Bound(listener));
        self
    }

    /// The proxy is ready (`/readiness` answers 200) only while its token stays usable for at least this
    /// long (default [`DEFAULT_READINESS_MARGIN`]): a proxy whose token is about to lapse during an
    /// identity outage is taken out of service before its new sessions fail. Keep it under the refresh
    /// policy's renewal margin minus its expiry margin, or readiness fails for a moment before each
    /// renewal.
    pub fn readiness_margin(mut self, margin: Duration) -> Self {
        self.readiness_margin = margin;
        self
    }

    /// Signs in upstream once (a raw session opened and closed) during [`start`](Self::start), before the
    /// proxy listens or reports ready; a failure ends the start with [`ProxyError::ConnectionTest`], whose
    /// source `entra_postgres::diagnose` explains. Default off.
    pub fn run_connection_test(mut self, run: bool) -> Self {
        self.connection_test = run;
        self
    }

    /// Also serves this recorder's metrics on `/metrics`, after the proxy's own: typically the global
    /// recorder the application installed, to which entra-token and entra-postgres report the token's
    /// and the connector's metrics (their feature `metrics`). The proxy installs no global recorder
    /// itself.
    pub fn extra_metrics(mut self, recorder: PrometheusHandle) -> Self {
        self.extra_metrics = Some(recorder);
        self
    }

    /// Keeps this many upstream sessions signed in ahead of their clients (default [`DEFAULT_WARM`]; 0
    /// turns them off), so a client that connects gets one at once instead of waiting for a sign-in. A
    /// warm session serves exactly one client and is never reused; each holds one of the
    /// [`max_size`](Self::max_size) slots while it waits, and gives it up to a client that needs a slot
    /// when none is free. See the crate's "Operations" for what a client sees.
    pub fn warm(mut self, sessions: usize) -> Self {
        self.warm = sessions;
        self
    }

    /// How long a warm session may wait for its client (default [`DEFAULT_WARM_LIFETIME`], at least
    /// 1 s): it is replaced from where the pool's replace-ahead starts
    /// ([`REPLACE_AHEAD_FRACTION`](entra_postgres::REPLACE_AHEAD_FRACTION) before its end; the
    /// replacement signed in first), so that no client gets a session older than this, and role settings
    /// changed upstream reach new clients within it.
    pub fn warm_lifetime(mut self, lifetime: Duration) -> Self {
        self.warm_lifetime = lifetime.max(warm::MIN_LIFETIME);
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

    /// Checks the rules (before any token is fetched), starts the health listener if one is configured,
    /// prepares the upstream side from `config` (the plan, the refresher and its first token, the role),
    /// runs the connection test if asked for, binds every listener and starts accepting clients, whose
    /// sessions are opened upstream by `config`'s connector. Returns once the proxy is ready.
    pub async fn start(self, config: &EntraConfig) -> Result<ProxyHandle, ProxyError> {
        self.check()?;
        let state = Arc::new(ProxyState::new(
            ProxyMetrics::new(self.extra_metrics),
            self.readiness_margin,
        ));
        // Tasks that live as long as the proxy; dropped with it, and on any failure below.
        let mut background = JoinSet::new();
        let health_address = match self.health {
            Some(listener) => {
                let listener = bind_health(listener).await?;
                let address = listener.local_addr().ok();
                background.spawn(health::serve(listener, state.clone()));
                address
            }
            None => None,
        };
        let upkeep = state.clone();
        background.spawn(async move {
            loop {
                tokio::time::sleep(METRICS_UPKEEP).await;
                upkeep.metrics.upkeep();
            }
        });

        let connector = config.build_connector().await.map_err(ProxyError::Upstream)?;
        let Some(tokens) = connector.tokens().cloned() else {
            return Err(ProxyError::NotTokenMode);
        };
        if connector.plan().credential() != CredentialKind::EntraToken {
            return Err(ProxyError::NotTokenMode);
        }
        state.set_tokens(tokens);
        let role = connector.plan().role().ok_or(ProxyError::NoRole)?.to_string();
        if self.connection_test {
            connection_test(&connector).await?;
        }
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
            warm: warm::Warm::new(self.warm, self.warm_lifetime),
            state: state.clone(),
        });
        background.spawn(warm::keep_warm(shared.clone()));
        // Accepting from here: the listeners are bound, so clients already queue in the kernel.
        state.accept_loop_started();
        let accept = tokio::spawn(listen::accept_loop(listeners, shared.clone()));
        state.mark_started();
        tracing::info!(
            tcp = ?tcp_addresses,
            socket = ?socket_path,
            health = ?health_address,
            role = shared.role,
            database = shared.dbname,
            auth = ?shared.auth,
            max_unauthenticated = self.max_unauthenticated,
            startup_timeout = ?shared.startup_timeout,
            warm = self.warm,
            "entra proxy listening"
        );
        Ok(ProxyHandle {
            shared,
            accept: Some(accept),
            background,
            tcp_addresses,
            socket_path,
            health_address,
        })
    }
}

/// The health listener, bound (or taken over) for tokio.
async fn bind_health(listener: HealthListener) -> Result<tokio::net::TcpListener, ProxyError> {
    match listener {
        HealthListener::Address(address) => tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| ProxyError::HealthBind { address, source }),
        HealthListener::Bound(listener) => {
            let address = listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let failed = |source| ProxyError::HealthBind { address, source };
            // tokio needs the socket non-blocking; one handed over may not be.
            listener.set_nonblocking(true).map_err(failed)?;
            tokio::net::TcpListener::from_std(listener).map_err(failed)
        }
    }
}

/// Signs in upstream once, as a client's session would, and leaves politely.
async fn connection_test(connector: &EntraConnect) -> Result<(), ProxyError> {
    let session = connector
        .open_session(&[])
        .await
        .map_err(|e| ProxyError::ConnectionTest(Box::new(e)))?;
    session.close().await;
    tracing::info!("proxy: connection test passed: signed in upstream");
    Ok(())
}
