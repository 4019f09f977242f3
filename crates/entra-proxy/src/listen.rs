//! Where the proxy listens, and the rule on where it may: loopback and unix sockets only, unless a
//! named option allows more, and then only with TLS for clients and the local secret.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::error::ProxyError;
use crate::Shared;

/// A listener the proxy takes clients from: TCP or a unix socket.
pub(crate) trait Listener: Send + 'static {
    type Stream: Send + 'static;
    fn next_client(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn next_client(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    async fn next_client(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts clients for as long as the proxy runs, each served by `serve` in a task of its own; the
/// sessions end when this task is aborted (the proxy's shutdown).
pub(crate) async fn accept_loop<L, F, Fut>(listener: L, shared: Arc<Shared>, serve: F)
where
    L: Listener,
    F: Fn(Arc<Shared>, L::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.next_client() => match accepted {
                Ok(stream) => {
                    shared.stats.accepted.add();
                    sessions.spawn(serve(shared.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// Checks every TCP address against the bind rule. The one place it is decided.
pub(crate) fn check_binds(
    addresses: &[SocketAddr],
    remote_allowed: bool,
    has_client_tls: bool,
    uses_secret: bool,
) -> Result<(), ProxyError> {
    if let Some(remote) = addresses.iter().find(|a| !a.ip().is_loopback()) {
        if !remote_allowed {
            return Err(ProxyError::NonLoopback { address: *remote });
        }
        if !has_client_tls {
            return Err(ProxyError::RemoteNeedsTls { address: *remote });
        }
        if !uses_secret {
            return Err(ProxyError::RemoteNeedsSecret { address: *remote });
        }
    }
    Ok(())
}

/// Binds a TCP listener.
pub(crate) async fn bind_tcp(address: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ProxyError::Bind { address, source })
}

/// The socket file libpq looks for in `dir` for `port` (`host=/dir port=P` → `/dir/.s.PGSQL.P`).
pub(crate) fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// Binds the unix socket, replacing a stale file that nothing listens on; refuses a live one.
pub(crate) async fn bind_unix(path: &Path) -> Result<UnixListener, ProxyError> {
    let failed = |source: std::io::Error| ProxyError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(failed)?;
            // A directory the proxy creates is its owner's alone.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
            }
        }
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another server listens on this socket",
            )));
        }
        std::fs::remove_file(path).map_err(failed)?;
    }
    UnixListener::bind(path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn loopback_addresses_need_nothing_more() {
        assert!(check_binds(&addrs(&["127.0.0.1:6543", "[::1]:6543"]), false, false, false).is_ok());
    }

    #[test]
    fn a_non_loopback_address_is_refused_unless_allowed_by_name() {
        let err = check_binds(&addrs(&["0.0.0.0:6543"]), false, false, false).unwrap_err();
        assert!(matches!(err, ProxyError::NonLoopback { .. }), "{err}");
        assert!(err.to_string().contains("allow_non_loopback"), "{err}");
    }

    #[test]
    fn an_allowed_non_loopback_address_needs_client_tls_and_the_secret() {
        let a = addrs(&["10.0.0.5:6543"]);
        assert!(matches!(
            check_binds(&a, true, false, true),
            Err(ProxyError::RemoteNeedsTls { .. })
        ));
        assert!(matches!(
            check_binds(&a, true, true, false),
            Err(ProxyError::RemoteNeedsSecret { .. })
        ));
        assert!(check_binds(&a, true, true, true).is_ok());
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path(), 6543);
        let first = bind_unix(&path).await.unwrap();
        let err = entra_postgres::report(&bind_unix(&path).await.unwrap_err());
        assert!(err.contains("another server"), "{err}");
        drop(first);
        assert!(path.exists(), "dropping a listener leaves its file");
        bind_unix(&path).await.unwrap();
    }
}
