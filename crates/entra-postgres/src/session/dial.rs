//! Where a session goes and how it gets there: the plan's addresses (its `hostaddr`, its unix socket,
//! the loopback addresses checked for a name carrying a token without TLS, or DNS now), the socket with
//! the plan's keepalives, PostgreSQL's TLS request and the plan's handshake; and cancel requests, which
//! go the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::stream::{Inner, SessionStream};
use super::SessionError;
use crate::error::ConnectError;
use crate::plan::{ConnectionPlan, Transport};

/// How long a cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a cancel request goes: the session's server and its backend key.
#[derive(Clone)]
pub struct CancelTarget {
    pub(super) address: Address,
    pub(super) host: String,
    pub(super) transport: Transport,
    pub(super) process_id: i32,
    pub(super) secret_key: i32,
}

impl std::fmt::Debug for CancelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelTarget")
            .field("host", &self.host)
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

impl CancelTarget {
    /// The server's backend process id.
    pub fn process_id(&self) -> i32 {
        self.process_id
    }

    /// Asks the server to cancel the session's running statement, over the same transport (TLS verified
    /// when the session used TLS), and waits for the server to close the request's connection.
    pub async fn cancel(&self) -> Result<(), SessionError> {
        let send = async {
            let socket = connect_to(&self.address, &self.host, None).await?;
            let mut stream = secure(socket, &self.host, &self.transport).await?;
            let mut buf = BytesMut::new();
            frontend::cancel_request(self.process_id, self.secret_key, &mut buf);
            stream.write_all(&buf).await.map_err(|e| self.broken(e))?;
            stream.flush().await.map_err(|e| self.broken(e))?;
            // PostgreSQL answers nothing and closes: wait for that, so the cancel has been taken.
            let mut sink = [0u8; 64];
            let _ = stream.read(&mut sink).await;
            Ok(())
        };
        match tokio::time::timeout(CANCEL_TIMEOUT, send).await {
            Ok(result) => result,
            Err(_) => Err(self.broken(std::io::ErrorKind::TimedOut.into())),
        }
    }

    fn broken(&self, e: std::io::Error) -> SessionError {
        SessionError::Protocol {
            host: self.host.clone(),
            what: format!("cancel request failed: {e}"),
        }
    }
}

/// A resolved place to connect to.
#[derive(Debug, Clone)]
pub(crate) enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A connected socket before TLS.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl ConnectionPlan {
    /// Where host `i` is connected to: its `hostaddr`, its unix socket, the loopback addresses checked
    /// for a name carrying a token without TLS, or what DNS says now.
    pub(crate) async fn addresses(
        &self,
        i: usize,
        host: &str,
        port: u16,
    ) -> Result<Vec<Address>, SessionError> {
        // As libpq and tokio-postgres: a hostaddr is where to connect, the host only the name to check.
        if let Some(addr) = self.hostaddrs().get(i) {
            return Ok(vec![Address::Tcp(SocketAddr::new(*addr, port))]);
        }
        if host.starts_with('/') {
            return Ok(vec![Address::Unix(
                PathBuf::from(host).join(format!(".s.PGSQL.{port}")),
            )]);
        }
        if self.checks_addresses(i, host) {
            let checked = self
                .loopback_addresses(host, port)
                .await
                .map_err(|e| SessionError::Token(ConnectError::Refused(e)))?;
            return Ok(checked.into_iter().map(Address::Tcp).collect());
        }
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let resolved =
            tokio::net::lookup_host((name, port))
                .await
                .map_err(|source| SessionError::Resolve {
                    host: host.to_string(),
                    source,
                })?;
        Ok(resolved.map(Address::Tcp).collect())
    }
}

/// Connects a socket to `address`, with the plan's keepalives and `tcp_user_timeout` when given.
pub(crate) async fn connect_to(
    address: &Address,
    host: &str,
    config: Option<&tokio_postgres::Config>,
) -> Result<Socket, SessionError> {
    let failed = |source: std::io::Error, port: u16| SessionError::Connect {
        host: host.to_string(),
        port,
        source,
    };
    match address {
        Address::Unix(path) => UnixStream::connect(path)
            .await
            .map(Socket::Unix)
            .map_err(|e| failed(e, 0)),
        Address::Tcp(addr) => {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| failed(e, addr.port()))?;
            stream.set_nodelay(true).map_err(|e| failed(e, addr.port()))?;
            if let Some(config) = config {
                let socket = socket2::SockRef::from(&stream);
                if config.get_keepalives() {
                    let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
                    if let Some(interval) = config.get_keepalives_interval() {
                        keepalive = keepalive.with_interval(interval);
                    }
                    if let Some(retries) = config.get_keepalives_retries() {
                        keepalive = keepalive.with_retries(retries);
                    }
                    socket
                        .set_tcp_keepalive(&keepalive)
                        .map_err(|e| failed(e, addr.port()))?;
                }
                #[cfg(target_os = "linux")]
                if let Some(timeout) = config.get_tcp_user_timeout() {
                    socket
                        .set_tcp_user_timeout(Some(*timeout))
                        .map_err(|e| failed(e, addr.port()))?;
                }
            }
            Ok(Socket::Tcp(stream))
        }
    }
}

/// TLS over `socket` when the plan says TLS (SSLRequest, then the plan's rustls handshake for `host`);
/// the socket as it is otherwise.
pub(super) async fn secure(
    socket: Socket,
    host: &str,
    transport: &Transport,
) -> Result<SessionStream, SessionError> {
    let (mut tcp, make) = match (socket, transport) {
        (Socket::Unix(unix), _) => return Ok(SessionStream(Inner::Unix(unix))),
        (Socket::Tcp(tcp), Transport::Plain) => return Ok(SessionStream(Inner::Tcp(tcp))),
        (Socket::Tcp(tcp), Transport::Tls(make)) => (tcp, make),
    };
    request_tls(&mut tcp, host).await?;
    let mut make = make.clone();
    let connect = match MakeTlsConnect::<TcpStream>::make_tls_connect(&mut make, host) {
        Ok(connect) => connect,
        Err(never) => match never {},
    };
    let tls = connect.connect(tcp).await.map_err(|source| SessionError::Tls {
        host: host.to_string(),
        source,
    })?;
    Ok(SessionStream(Inner::Tls(Box::new(tls))))
}

/// PostgreSQL's SSLRequest, and the server's answer: `Ok` when it will speak TLS next.
pub(crate) async fn request_tls(tcp: &mut TcpStream, host: &str) -> Result<(), SessionError> {
    let broken = |e: std::io::Error| SessionError::Protocol {
        host: host.to_string(),
        what: format!("connection failed during the TLS request: {e}"),
    };
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    tcp.write_all(&out).await.map_err(broken)?;
    match tcp.read_u8().await.map_err(broken)? {
        b'S' => Ok(()),
        b'N' => Err(SessionError::TlsRefused {
            host: host.to_string(),
        }),
        other => Err(SessionError::Protocol {
            host: host.to_string(),
            what: format!("unexpected answer {other:#04x} to the TLS request"),
        }),
    }
}
