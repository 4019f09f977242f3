//! Who is on the other end of a local connection: the user id of the connecting process.
//!
//! - Unix sockets: the kernel's peer credentials (`SO_PEERCRED`), taken when the client connected.
//! - Loopback TCP (Linux): both ends of the connection are sockets of this machine, so the kernel's
//!   socket table (`/proc/net/tcp`, `/proc/net/tcp6`) names the owner of the client's end: the entry
//!   whose local address is the client's and whose remote address is the proxy's. This is the same
//!   question identd answers, asked of the local kernel instead of a daemon.
//!
//! A connection whose owner cannot be established is refused: the lookup fails closed.

use std::net::SocketAddr;

/// The user id that owns the client's end of an accepted loopback TCP connection.
pub(crate) fn tcp_peer_uid(client: SocketAddr, proxy: SocketAddr) -> Result<u32, String> {
    let tables = match client {
        SocketAddr::V4(_) => [procfs::net::tcp(), procfs::net::tcp6()],
        SocketAddr::V6(_) => [procfs::net::tcp6(), procfs::net::tcp()],
    };
    let mut errors = Vec::new();
    for table in tables {
        match table {
            Ok(entries) => {
                if let Some(entry) = entries
                    .iter()
                    .find(|e| same(e.local_address, client) && same(e.remote_address, proxy))
                {
                    return Ok(entry.uid);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Err(format!(
            "no socket {client} -> {proxy} in this machine's socket table: the client is not on this machine \
             (or in another network namespace)"
        ))
    } else {
        Err(format!("cannot read the socket table: {}", errors.join("; ")))
    }
}

/// Addresses equal, an IPv4 address and its IPv6-mapped form included.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |s: SocketAddr| (s.ip().to_canonical(), s.port());
    canonical(a) == canonical(b)
}

/// The user id of the peer of a unix-socket connection.
pub(crate) fn unix_peer_uid(stream: &tokio::net::UnixStream) -> Result<u32, String> {
    stream
        .peer_cred()
        .map(|c| c.uid())
        .map_err(|e| format!("cannot read the peer's credentials: {e}"))
}

/// The effective user id of this process.
pub(crate) fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loopback_client_is_found_to_be_this_process_owner() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (_accepted, from) = listener.accept().await.unwrap();
        assert_eq!(from, client.local_addr().unwrap());
        assert_eq!(tcp_peer_uid(from, proxy), Ok(own_uid()));
    }

    #[tokio::test]
    async fn an_address_with_no_socket_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = tcp_peer_uid(nobody, proxy).unwrap_err();
        assert!(err.contains("not on this machine"), "{err}");
    }

    #[tokio::test]
    async fn a_unix_peer_is_this_process_owner() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        assert_eq!(unix_peer_uid(&a), Ok(own_uid()));
    }

    #[test]
    fn mapped_addresses_compare_equal() {
        let v4: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert!(same(v4, mapped));
        assert!(!same(v4, "127.0.0.1:6".parse().unwrap()));
    }
}
