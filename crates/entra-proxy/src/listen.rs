//! Where the proxy listens, and the rule on where it may: loopback and unix sockets only, unless a
//! named option allows more, and then only with TLS for clients and the local secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::error::ProxyError;
use crate::Shared;

/// How long a client may be silent before the kernel probes it, the probes' interval and count: a
/// client that vanished without closing is found out in about two minutes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 6;
/// How long data sent to a client may stay unacknowledged before the kernel gives the connection up;
/// it also bounds the probing above.
const USER_TIMEOUT: Duration = Duration::from_secs(120);

/// A listener the proxy takes clients from.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection.
pub(crate) enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub(crate) fn tcp_address(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<Accepted>> {
        match self {
            Listener::Tcp(listener) => listener.poll_accept(cx).map_ok(|(s, _)| Accepted::Tcp(s)),
            Listener::Unix(listener) => listener.poll_accept(cx).map_ok(|(s, _)| Accepted::Unix(s)),
        }
    }
}

/// The next connection on any of `listeners`, starting each time after the one that gave the last, so
/// a busy listener does not starve the others.
async fn next_connection(listeners: &[Listener], turn: &mut usize) -> std::io::Result<Accepted> {
    std::future::poll_fn(|cx| {
        for step in 0..listeners.len() {
            let index = (*turn + step) % listeners.len();
            if let Poll::Ready(accepted) = listeners[index].poll_accept(cx) {
                *turn = index + 1;
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
    .await
}

/// Takes a place among the connections that have not authenticated, then accepts the next connection
/// into it. While every place is taken nothing is accepted: new connections wait in the kernel's listen
/// queue rather than in the proxy's files.
async fn next_client(
    listeners: &[Listener],
    shared: &Shared,
    turn: &mut usize,
) -> (tokio::sync::OwnedSemaphorePermit, std::io::Result<Accepted>) {
    // The semaphore is never closed: the proxy owns it for its whole life.
    let place = loop {
        if let Ok(place) = shared.unauthenticated_slots.clone().acquire_owned().await {
            break place;
        }
    };
    (place, next_connection(listeners, turn).await)
}

/// Accepts clients on every listener, each served in a task of its own, until a drain begins; then
/// closes the listeners and waits for the connections it accepted to end. Sessions end early when this
/// task is aborted (the proxy's shutdown, or a drain's deadline).
pub(crate) async fn accept_loop(mut listeners: Vec<Listener>, shared: Arc<Shared>) {
    // Tells the proxy's state when this loop ends, however it ends (a panic, an abort, a drain).
    struct Ended<'a>(&'a crate::ProxyState);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.accept_loop_ended();
        }
    }
    let _ended = Ended(&shared.state);
    let mut draining = shared.state.drain_signal();
    let mut sessions = JoinSet::new();
    let mut turn = 0;
    loop {
        let listening = !listeners.is_empty();
        tokio::select! {
            (place, accepted) = next_client(&listeners, &shared, &mut turn), if listening => match accepted {
                Ok(connection) => {
                    shared.state.stats.accepted.add();
                    if let Accepted::Tcp(tcp) = &connection {
                        configure_client_socket(tcp);
                    }
                    sessions.spawn(crate::admission::serve(shared.clone(), connection, place));
                }
                Err(e) => {
                    drop(place);
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = crate::state::until_draining(&mut draining), if listening => {
                // Closed, not just left unpolled: new clients are refused by the kernel at once rather
                // than queued for a proxy that will never accept them.
                listeners.clear();
                shared.state.listeners_closed();
                tracing::info!(open = sessions.len(), "proxy: draining; listeners closed");
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            else => break,
        }
    }
    tracing::info!("proxy: drained");
}

/// Keepalive and a user timeout on an accepted TCP socket, so a client that vanished without closing
/// does not keep its session (and its upstream session) for ever. Best effort: a socket that refuses an
/// option is served all the same.
pub(crate) fn configure_client_socket(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "proxy: cannot set TCP keepalive on a client socket");
    }
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    if let Err(e) = socket.set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!(error = %e, "proxy: cannot set TCP_USER_TIMEOUT on a client socket");
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
    async fn an_accepted_client_socket_gets_keepalive_and_a_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        configure_client_socket(&accepted);
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(socket.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
        assert!(accepted.nodelay().unwrap());
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
