//! [`ProxyHandle`]: a running proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::{ProxyStats, Shared};

/// A running proxy. Dropping it stops it (listeners closed, sessions ended, socket file removed), as
/// [`shutdown`](Self::shutdown) does.
pub struct ProxyHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tasks: JoinSet<()>,
    pub(crate) tcp_addresses: Vec<SocketAddr>,
    pub(crate) socket_path: Option<PathBuf>,
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
