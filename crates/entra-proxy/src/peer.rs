//! Who is on the other end of a local connection: the user id of the connecting process, known as soon
//! as the connection is accepted.
//!
//! - Unix sockets: the kernel's peer credentials (`SO_PEERCRED`), taken when the client connected.
//! - Loopback TCP (Linux): both ends of the connection are sockets of this machine, so the kernel names
//!   the owner of the client's end: the socket whose local address is the client's and whose remote
//!   address is the proxy's. This is the same question identd answers, asked of the local kernel
//!   instead of a daemon. It is asked through netlink `sock_diag` with the exact address pair (the
//!   kernel's own lookup of one socket, as `ss` does); only where netlink cannot answer (no `inet_diag`
//!   in the kernel, a sandbox that forbids netlink) is the socket table in `/proc/net/tcp*` read
//!   instead, which costs a read of every TCP socket of the machine. Both are blocking system calls, so
//!   they run on tokio's blocking threads, never on a runtime worker.
//!
//! Only a connected socket (`ESTABLISHED`) counts. A socket its owner has closed lingers in the kernel a
//! while (`FIN_WAIT`, `TIME_WAIT`) and is then listed with user id 0: taking that for its owner would let
//! a client that connects, sends and closes at once pass for root.
//!
//! A connection whose owner cannot be established is refused: the lookup fails closed. (The one
//! exception, in `admission`: a client that has already closed its end may still send a cancel request,
//! which its random key authenticates.)

use std::net::{IpAddr, SocketAddr};

/// `TCP_ESTABLISHED`, in the kernel's numbering of TCP states.
const ESTABLISHED: u8 = 1;

/// Why the owner of a connection is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PeerError {
    /// No socket of this machine (in this network namespace) has the client's end of the connection.
    #[error(
        "no socket {client} -> {proxy} on this machine: the client is not on this machine (or in another \
         network namespace)"
    )]
    NoSocket { client: SocketAddr, proxy: SocketAddr },
    /// The client's socket is no longer connected (closed, or closing), so its owner is not told.
    #[error("the client's socket {client} -> {proxy} is no longer connected (TCP state {state})")]
    NotConnected {
        client: SocketAddr,
        proxy: SocketAddr,
        state: u8,
    },
    /// Neither netlink nor the socket table could be read.
    #[error("cannot look the socket up: {0}")]
    Lookup(String),
    /// The unix socket's peer credentials could not be read.
    #[error("cannot read the peer's credentials: {0}")]
    Credentials(String),
}

/// What the kernel says of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    uid: u32,
    state: u8,
    inode: u64,
}

impl Owner {
    fn uid(self, client: SocketAddr, proxy: SocketAddr) -> Result<u32, PeerError> {
        // An inode of 0 is a socket no process holds any more.
        if self.state == ESTABLISHED && self.inode != 0 {
            Ok(self.uid)
        } else {
            Err(PeerError::NotConnected {
                client,
                proxy,
                state: self.state,
            })
        }
    }
}

/// The user id that owns the client's end of an accepted loopback TCP connection, looked up on a
/// blocking thread.
pub(crate) async fn tcp_peer_uid_off_runtime(
    client: SocketAddr,
    proxy: SocketAddr,
) -> Result<u32, PeerError> {
    tokio::task::spawn_blocking(move || tcp_peer_uid(client, proxy))
        .await
        .unwrap_or_else(|e| Err(PeerError::Lookup(e.to_string())))
}

/// The user id that owns the client's end of an accepted loopback TCP connection (blocking).
pub(crate) fn tcp_peer_uid(client: SocketAddr, proxy: SocketAddr) -> Result<u32, PeerError> {
    match netlink::owner(client, proxy) {
        Ok(Some(owner)) => owner.uid(client, proxy),
        Ok(None) => Err(PeerError::NoSocket { client, proxy }),
        Err(e) => {
            tracing::debug!(error = %e, "proxy: netlink sock_diag unavailable, reading /proc/net/tcp instead");
            match procfs_owner(client, proxy)? {
                Some(owner) => owner.uid(client, proxy),
                None => Err(PeerError::NoSocket { client, proxy }),
            }
        }
    }
}

/// The owner from `/proc/net/tcp` and `/proc/net/tcp6`: every TCP socket of the machine, read and
/// searched. The fallback where netlink is unavailable.
fn procfs_owner(client: SocketAddr, proxy: SocketAddr) -> Result<Option<Owner>, PeerError> {
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
                    return Ok(Some(Owner {
                        uid: entry.uid,
                        state: entry.state.to_u8(),
                        inode: entry.inode,
                    }));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(PeerError::Lookup(format!(
            "netlink is unavailable and the socket table cannot be read: {}",
            errors.join("; ")
        )))
    }
}

/// Addresses equal, an IPv4 address and its IPv6-mapped form included.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |s: SocketAddr| (s.ip().to_canonical(), s.port());
    canonical(a) == canonical(b)
}

/// The kernel's exact lookup of one TCP socket by its address pair: `SOCK_DIAG_BY_FAMILY` without
/// `NLM_F_DUMP`, as `ss` asks for one socket.
mod netlink {
    use std::net::{IpAddr, SocketAddr};

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
    use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
    use netlink_packet_sock_diag::SockDiagMessage;
    use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

    use super::{canonical_pair, Owner};

    /// "No such socket" (and, alas, also "no sock_diag handler for this family").
    const ENOENT: i32 = 2;
    /// A cookie the kernel ignores (`INET_DIAG_NOCOOKIE`).
    const NO_COOKIE: [u8; 8] = [0xff; 8];

    /// The owner of the socket whose local address is `local` and whose remote address is `remote`;
    /// `None` when the kernel has no such socket. An error when netlink cannot answer at all.
    pub(super) fn owner(client: SocketAddr, proxy: SocketAddr) -> std::io::Result<Option<Owner>> {
        let socket = open()?;
        match lookup(&socket, client, proxy)? {
            Some(owner) => Ok(Some(owner)),
            // The kernel says ENOENT both for a socket it does not have and for a family it has no
            // handler for. The proxy's own end of the connection exists for sure: if it is not found
            // either, netlink cannot see TCP sockets here, and the caller falls back.
            None => match lookup(&socket, proxy, client)? {
                Some(_) => Ok(None),
                None => Err(std::io::Error::other(
                    "sock_diag does not find the proxy's own socket (no inet_diag in this kernel?)",
                )),
            },
        }
    }

    fn open() -> std::io::Result<Socket> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(socket)
    }

    fn lookup(socket: &Socket, local: SocketAddr, remote: SocketAddr) -> std::io::Result<Option<Owner>> {
        let (family, local_ip, remote_ip) = match canonical_pair(local.ip(), remote.ip()) {
            (a @ IpAddr::V4(_), b @ IpAddr::V4(_)) => (AF_INET, a, b),
            (a, b) => (AF_INET6, a, b),
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: SocketId {
                    source_port: local.port(),
                    destination_port: remote.port(),
                    source_address: local_ip,
                    destination_address: remote_ip,
                    interface_id: 0,
                    cookie: NO_COOKIE,
                },
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0)?;
        // The kernel answers a sock_diag request while it is being sent: the answer is queued by now,
        // and a missing one is an error rather than a wait.
        let mut answer = Vec::with_capacity(8192);
        socket.recv(&mut answer, libc::MSG_DONTWAIT)?;
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&answer)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        match message.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => Ok(Some(Owner {
                uid: response.header.uid,
                state: response.header.state,
                inode: u64::from(response.header.inode),
            })),
            NetlinkPayload::Error(e) if e.raw_code() == -ENOENT => Ok(None),
            NetlinkPayload::Error(e) => Err(e.to_io()),
            other => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected sock_diag answer of type {}", other.message_type()),
            )),
        }
    }
}

/// Both addresses as IPv4 when both are IPv4 or IPv4-mapped, else both as IPv6: the family the kernel
/// keeps such a connection under.
fn canonical_pair(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    match (a.to_canonical(), b.to_canonical()) {
        (a @ IpAddr::V4(_), b @ IpAddr::V4(_)) => (a, b),
        _ => (IpAddr::V6(v6(a)), IpAddr::V6(v6(b))),
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The user id of the peer of a unix-socket connection.
pub(crate) fn unix_peer_uid(stream: &tokio::net::UnixStream) -> Result<u32, PeerError> {
    stream
        .peer_cred()
        .map(|c| c.uid())
        .map_err(|e| PeerError::Credentials(e.to_string()))
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
        assert_eq!(tcp_peer_uid_off_runtime(from, proxy).await, Ok(own_uid()));
    }

    /// The fallback reads what netlink answers: the same socket, owner and state.
    #[tokio::test]
    async fn netlink_and_the_socket_table_find_the_same_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (_accepted, from) = listener.accept().await.unwrap();
        let by_netlink = netlink::owner(from, proxy).expect("netlink sock_diag answers on this machine");
        let by_table = procfs_owner(from, proxy).unwrap();
        assert_eq!(by_netlink, by_table);
        assert_eq!(
            by_netlink.map(|o| (o.uid, o.state)),
            Some((own_uid(), ESTABLISHED))
        );
    }

    /// A closed client socket is kept by the kernel a while (FIN_WAIT, TIME_WAIT) and shown with user id
    /// 0: taking that for its owner would let any user pass for root. Only a connected socket counts.
    #[tokio::test]
    async fn a_client_socket_closed_before_the_lookup_is_refused() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut accepted, from) = listener.accept().await.unwrap();
        drop(client);
        // The client's FIN has arrived: its socket is no longer connected.
        assert_eq!(accepted.read(&mut [0u8; 8]).await.unwrap(), 0);
        let found = tcp_peer_uid(from, proxy);
        assert!(found.is_err(), "{found:?}");
    }

    #[tokio::test]
    async fn an_address_with_no_socket_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = tcp_peer_uid(nobody, proxy).unwrap_err();
        assert!(matches!(err, PeerError::NoSocket { .. }), "{err}");
        assert!(err.to_string().contains("not on this machine"), "{err}");
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
