//! [`ProxyHandle`]: a running proxy, and how it stops: at once ([`ProxyHandle::shutdown`], or dropping
//! it) or gracefully ([`ProxyHandle::drain`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};

use crate::{NotReady, ProxyStats, Shared};

/// A running proxy. Dropping it stops it at once (listeners closed, sessions ended, socket file
/// removed), as [`shutdown`](Self::shutdown) does.
pub struct ProxyHandle {
    pub(crate) shared: Arc<Shared>,
    /// The accept loop, which owns the listeners and every client's task; `None` once it has ended.
    pub(crate) accept: Option<JoinHandle<()>>,
    /// The health listener and the metrics' upkeep.
    pub(crate) background: JoinSet<()>,
    pub(crate) tcp_addresses: Vec<SocketAddr>,
    pub(crate) socket_path: Option<PathBuf>,
    pub(crate) health_address: Option<SocketAddr>,
}

/// How a [`drain`](ProxyHandle::drain) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drained {
    /// Sessions open when the drain began: relayed, or admitted and signing in upstream.
    pub open: u64,
    /// Of those and any admitted since, the sessions still open (relayed or signing in) at the deadline,
    /// which the proxy then closed (0: every session ended on its own).
    pub closed: u64,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("tcp_addresses", &self.tcp_addresses)
            .field("socket_path", &self.socket_path)
            .field("health_address", &self.health_address)
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

    /// The unix socket's path, if any (`None` once a drain has removed it).
    pub fn socket_path(&self) -> Option<&Path> {
        self.socket_path.as_deref()
    }

    /// The health listener's address (with the port chosen for port 0), if one was configured
    /// ([`ProxyBuilder::health_listen`](crate::ProxyBuilder::health_listen)).
    pub fn health_address(&self) -> Option<SocketAddr> {
        self.health_address
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
        self.shared.state.stats.snapshot()
    }

    /// What `/readiness` answers: `Ok` while new sessions can be admitted (not draining, accepting) and
    /// the token is usable for at least the readiness margin; otherwise why not.
    pub fn readiness(&self) -> Result<(), NotReady> {
        self.shared.state.readiness()
    }

    /// What `/metrics` serves: the proxy's metrics ([`crate::metrics`]) in Prometheus's text format, then
    /// those of the [`extra_metrics`](crate::ProxyBuilder::extra_metrics) recorder.
    pub fn metrics_text(&self) -> String {
        self.shared.state.metrics_text()
    }

    /// Stops gracefully: at once, readiness fails, the listeners are closed (new clients are refused by
    /// the kernel; one accepted just before is refused with SQLSTATE 57P03, as are clients waiting for an
    /// upstream slot) and the socket file is removed; open sessions go on until their clients end them,
    /// for up to `grace`; those still open then are closed. The health listener answers throughout (live,
    /// not ready) and stops with the rest. Returns once the proxy has stopped.
    ///
    /// To end the drain early (a second signal), drop this future and call
    /// [`shutdown`](Self::shutdown), or drop the handle: the sessions left are closed at once.
    pub async fn drain(&mut self, grace: Duration) -> Drained {
        let state = self.shared.state.clone();
        let open = state.stats.snapshot().sessions_open();
        state.begin_drain();
        tracing::info!(open, grace = ?grace, "proxy: draining");
        self.remove_socket();
        let mut closed = 0;
        if let Some(accept) = self.accept.as_mut() {
            match tokio::time::timeout(grace, accept).await {
                // The loop ended: every connection it accepted has ended.
                Ok(_) => self.accept = None,
                Err(_) => closed = state.stats.snapshot().sessions_open(),
            }
        }
        self.stop().await;
        if closed > 0 {
            tracing::warn!(closed, grace = ?grace, "proxy: sessions still open at the drain's deadline closed");
        }
        Drained { open, closed }
    }

    /// Stops at once: listeners closed, every session ended, the socket file removed.
    pub async fn shutdown(mut self) {
        self.stop().await;
        self.remove_socket();
    }

    /// Ends the accept loop (and with it every client's task) and the background tasks.
    async fn stop(&mut self) {
        self.shared.state.mark_stopping();
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        self.background.shutdown().await;
        // The warmer has stopped (it closes its sessions when a drain begins; not when it is aborted).
        let warm = self.shared.warm.drain_all(&self.shared.state.stats);
        crate::warm::close_all(warm).await;
    }

    fn remove_socket(&mut self) {
        if let Some(path) = self.socket_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shared.state.mark_stopping();
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        self.background.abort_all();
        self.remove_socket();
    }
}
