//! [`RawSession`]: a session signed in by a [`ConnectionPlan`], handed over as a byte stream, for relays
//! such as `entra-proxy`.
//!
//! The pool's connections are tokio-postgres clients; a relay needs the socket itself, past
//! authentication, to copy a client's bytes to. This module opens that socket the way the plan says: the
//! plan's hosts (DNS resolved again on every attempt, or its `hostaddr`), ports, connect timeout, TCP
//! keepalives and `tcp_user_timeout`, and its TLS (the same rustls configuration and verification as the
//! pool; a server that declines TLS is never talked to in cleartext when the plan says TLS). The
//! server's answer up to `ReadyForQuery` is read here and kept, so a relay can pass it on.
//!
//! Only the password exchanges Azure uses are spoken: cleartext password (what Azure asks for to receive
//! an Entra token, over TLS). A server that asks for MD5, SCRAM, GSS or SSPI is refused with
//! [`SessionError::UnsupportedAuthentication`]; the deadpool pool supports those through tokio-postgres.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::TargetSessionAttrs;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::ConnectError;
use crate::plan::{ConnectionPlan, Transport};
use crate::refusal::{AzureRefusal, Phase};

/// The TLS stream the plan's connector produces over TCP.
type TlsTcp = <MakeRustlsConnect as MakeTlsConnect<TcpStream>>::Stream;

/// The largest message accepted before the session is handed over (PostgreSQL's own parameter and
/// error messages are far smaller).
const MAX_STARTUP_MESSAGE: usize = 1 << 20;
/// How long a cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// Startup parameters a relay may not set: the plan decides who signs in and where.
const RESERVED_PARAMETERS: [&str; 3] = ["user", "database", "replication"];

/// A signed-in session's socket, TLS or not.
pub struct SessionStream(Inner);

enum Inner {
    Tls(Box<TlsTcp>),
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl std::fmt::Debug for SessionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.0 {
            Inner::Tls(_) => "tls",
            Inner::Tcp(_) => "tcp",
            Inner::Unix(_) => "unix",
        };
        f.debug_tuple("SessionStream").field(&kind).finish()
    }
}

impl SessionStream {
    /// Whether the bytes travel inside TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }
}

macro_rules! each_inner {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().0 {
            Inner::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            Inner::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Inner::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for SessionStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_inner!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        each_inner!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_inner!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_inner!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each_inner!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Tls(s) => s.is_write_vectored(),
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Unix(s) => s.is_write_vectored(),
        }
    }
}

/// Why a raw session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No usable token, the server refused a fresh one too, or the plan refused to connect (ours, not
    /// the server's or the network's).
    #[error(transparent)]
    Token(ConnectError),
    /// The host name could not be resolved.
    #[error("could not resolve {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The host could not be reached (TCP, or the connect timeout).
    #[error("could not connect to {host}:{port}")]
    Connect {
        /// The host name (or unix-socket directory).
        host: String,
        /// The port.
        port: u16,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The server declined TLS, which the plan requires: nothing was sent.
    #[error("{host} does not accept TLS, which the connection plan requires; no password was sent")]
    TlsRefused {
        /// The host.
        host: String,
    },
    /// The TLS handshake failed (an untrusted certificate, a name mismatch…).
    #[error("TLS with {host} failed")]
    Tls {
        /// The host.
        host: String,
        /// rustls's error, inside an I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the session with an `ErrorResponse`.
    #[error("the server refused the session: {severity} {code}: {message}")]
    Server {
        /// When it refused: before the password was asked for, in answer to it, or after
        /// `AuthenticationOk` ([`AzureRefusal::classify`](crate::AzureRefusal::classify) reads it).
        phase: Phase,
        /// `FATAL`, `ERROR`…
        severity: String,
        /// The SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
        /// Its detail, if any.
        detail: Option<String>,
        /// Its hint, if any.
        hint: Option<String>,
    },
    /// The server asked for an authentication exchange this module does not speak.
    #[error(
        "the server asked for {method} authentication; sessions for relays sign in with a cleartext password \
         over TLS (how Azure takes an Entra token)"
    )]
    UnsupportedAuthentication {
        /// The method asked for.
        method: &'static str,
    },
    /// The server broke the protocol, or the connection dropped during startup.
    #[error("protocol error with {host}: {what}")]
    Protocol {
        /// The host.
        host: String,
        /// What went wrong.
        what: String,
    },
    /// No host matched `target_session_attrs`.
    #[error("no host is {wanted} (target_session_attrs)")]
    NoSuitableHost {
        /// `read-write` or `read-only`.
        wanted: &'static str,
    },
    /// A startup parameter the plan decides was given by the caller.
    #[error("the startup parameter {0:?} is decided by the connection plan and cannot be set per session")]
    ReservedParameter(String),
}

impl SessionError {
    /// When the server refused, its SQLSTATE and its message, when the server refused.
    pub fn server_refusal(&self) -> Option<(Phase, &str, &str)> {
        match self {
            SessionError::Server {
                phase, code, message, ..
            } => Some((*phase, code, message)),
            _ => None,
        }
    }

    /// What the server's refusal means, when the server refused.
    pub fn refusal(&self) -> Option<AzureRefusal> {
        self.server_refusal()
            .map(|(phase, code, message)| AzureRefusal::classify(phase, code, message))
    }
}

/// Where a cancel request goes: the session's server and its backend key.
#[derive(Clone)]
pub struct CancelTarget {
    address: Address,
    host: String,
    transport: Transport,
    process_id: i32,
    secret_key: i32,
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

/// A session past authentication: its socket, and what the server said before `ReadyForQuery`.
#[derive(Debug)]
pub struct RawSession {
    stream: SessionStream,
    greeting: BytesMut,
    parameters: Vec<(String, String)>,
    cancel: Option<CancelTarget>,
    host: String,
}

impl RawSession {
    /// The server's `ParameterStatus` and `NoticeResponse` messages after authentication, as received
    /// (wire format, in order), without its `BackendKeyData` and `ReadyForQuery`: a relay passes these on,
    /// then its own key and `ReadyForQuery`.
    pub fn greeting(&self) -> &[u8] {
        &self.greeting
    }

    /// The server's parameters (`server_version`, `TimeZone`…).
    pub fn parameters(&self) -> &[(String, String)] {
        &self.parameters
    }

    /// The server's parameter `name`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Where to cancel this session's statements (the server sent a backend key).
    pub fn cancel_target(&self) -> Option<&CancelTarget> {
        self.cancel.as_ref()
    }

    /// The host the session is on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The socket, positioned after the server's first `ReadyForQuery` (idle, no transaction).
    pub fn into_stream(self) -> SessionStream {
        self.stream
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
    /// Opens a session with `password` and hands over its socket past authentication, for a relay.
    ///
    /// `parameters` are startup parameters passed on (`application_name`, `client_encoding`,
    /// `DateStyle`, `options`…); `user`, `database` and `replication` are the plan's to decide and are
    /// refused here. Hosts are tried in order, as libpq does; the last failure is returned. No retry and
    /// no token logic: [`EntraConnect::open_session`](crate::EntraConnect::open_session) adds those.
    pub async fn open_session(
        &self,
        password: &[u8],
        parameters: &[(String, String)],
    ) -> Result<RawSession, SessionError> {
        if let Some((key, _)) = parameters
            .iter()
            .find(|(k, _)| RESERVED_PARAMETERS.contains(&k.as_str()))
        {
            return Err(SessionError::ReservedParameter(key.clone()));
        }
        let attrs = self.config().get_target_session_attrs();
        let mut last = None;
        for (i, host) in self.hosts().iter().enumerate() {
            let port = self
                .ports()
                .get(i)
                .or_else(|| self.ports().first())
                .copied()
                .unwrap_or_else(|| self.port());
            let addresses = match self.addresses(i, host, port).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            for address in addresses {
                match self.try_address(&address, host, port, password, parameters).await {
                    Ok(session) => match suits(session, attrs).await {
                        Ok(session) => return Ok(session),
                        Err(e) => last = Some(e),
                    },
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or(SessionError::NoSuitableHost { wanted: "any" }))
    }

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

    async fn try_address(
        &self,
        address: &Address,
        host: &str,
        port: u16,
        password: &[u8],
        parameters: &[(String, String)],
    ) -> Result<RawSession, SessionError> {
        let timeout = self.config().get_connect_timeout().copied();
        let open = async {
            let socket = connect_to(address, host, Some(self.config())).await?;
            let mut stream = secure(socket, host, self.transport()).await?;
            let (greeting, parameters, key) = self.sign_in(&mut stream, host, password, parameters).await?;
            Ok(RawSession {
                stream,
                greeting,
                parameters,
                cancel: key.map(|(process_id, secret_key)| CancelTarget {
                    address: address.clone(),
                    host: host.to_string(),
                    transport: self.transport().clone(),
                    process_id,
                    secret_key,
                }),
                host: host.to_string(),
            })
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, open).await.unwrap_or_else(|_| {
                Err(SessionError::Connect {
                    host: host.to_string(),
                    port,
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no session within the connect timeout ({t:?})"),
                    ),
                })
            }),
            None => open.await,
        }
    }

    /// StartupMessage, the password exchange, and the server's messages up to `ReadyForQuery`.
    async fn sign_in(
        &self,
        stream: &mut SessionStream,
        host: &str,
        password: &[u8],
        parameters: &[(String, String)],
    ) -> Result<(BytesMut, Vec<(String, String)>, Option<(i32, i32)>), SessionError> {
        let protocol = |what: String| SessionError::Protocol {
            host: host.to_string(),
            what,
        };
        let io = |e: std::io::Error| protocol(format!("connection failed during startup: {e}"));
        let config = self.config();
        let mut startup: Vec<(&str, &str)> = vec![("database", self.dbname())];
        if let Some(user) = config.get_user() {
            startup.push(("user", user));
        }
        let has = |key: &str| parameters.iter().any(|(k, _)| k == key);
        if let (false, Some(app)) = (has("application_name"), config.get_application_name()) {
            startup.push(("application_name", app));
        }
        if let (false, Some(options)) = (has("options"), config.get_options()) {
            startup.push(("options", options));
        }
        startup.extend(parameters.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut out = BytesMut::new();
        frontend::startup_message(startup, &mut out).map_err(io)?;
        stream.write_all(&out).await.map_err(io)?;
        stream.flush().await.map_err(io)?;

        let mut greeting = BytesMut::new();
        let mut server_parameters = Vec::new();
        let mut key = None;
        // Where the server is in the handshake: what a refusal answers (see `AzureRefusal`).
        let mut phase = Phase::BeforePassword;
        let mut authenticated = false;
        loop {
            let (raw, message) = read_backend(stream, host).await?;
            match message {
                backend::Message::AuthenticationCleartextPassword if !authenticated => {
                    // Sized for the whole message ('p', length, password, NUL), so it never grows (growing
                    // would free a copy unwiped), and wiped when dropped, on the error paths too.
                    let mut out = Wiped(BytesMut::with_capacity(password.len() + 6));
                    frontend::password_message(password, &mut out.0).map_err(io)?;
                    stream.write_all(&out.0).await.map_err(io)?;
                    stream.flush().await.map_err(io)?;
                    drop(out);
                    phase = Phase::Password;
                }
                backend::Message::AuthenticationOk => {
                    authenticated = true;
                    phase = Phase::AfterAuthentication;
                }
                backend::Message::AuthenticationMd5Password(_) => {
                    return Err(SessionError::UnsupportedAuthentication { method: "MD5" })
                }
                backend::Message::AuthenticationSasl(_) => {
                    return Err(SessionError::UnsupportedAuthentication {
                        method: "SASL (SCRAM)",
                    })
                }
                backend::Message::AuthenticationGss | backend::Message::AuthenticationSspi => {
                    return Err(SessionError::UnsupportedAuthentication { method: "GSS/SSPI" })
                }
                backend::Message::ErrorResponse(body) => return Err(server_error(&body, host, phase)),
                backend::Message::ParameterStatus(body) if authenticated => {
                    let name = body.name().map_err(io)?.to_string();
                    let value = body.value().map_err(io)?.to_string();
                    server_parameters.push((name, value));
                    greeting.extend_from_slice(&raw);
                }
                backend::Message::NoticeResponse(_) if authenticated => greeting.extend_from_slice(&raw),
                backend::Message::BackendKeyData(body) if authenticated => {
                    key = Some((body.process_id(), body.secret_key()))
                }
                backend::Message::ReadyForQuery(_) if authenticated => {
                    return Ok((greeting, server_parameters, key))
                }
                _ => {
                    return Err(protocol(format!(
                        "unexpected message {:?} during startup",
                        char::from(raw.first().copied().unwrap_or(b'?'))
                    )))
                }
            }
        }
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
async fn secure(socket: Socket, host: &str, transport: &Transport) -> Result<SessionStream, SessionError> {
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

/// Reads one backend message: its raw bytes and its parsed form.
async fn read_backend(
    stream: &mut SessionStream,
    host: &str,
) -> Result<(BytesMut, backend::Message), SessionError> {
    let protocol = |what: String| SessionError::Protocol {
        host: host.to_string(),
        what,
    };
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| protocol(format!("connection closed during startup: {e}")))?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|l| (4..=MAX_STARTUP_MESSAGE).contains(l))
        .ok_or_else(|| protocol(format!("invalid message length {len}")))?;
    let mut raw = BytesMut::with_capacity(len + 1);
    raw.extend_from_slice(&header);
    raw.resize(len + 1, 0);
    stream
        .read_exact(&mut raw[5..])
        .await
        .map_err(|e| protocol(format!("connection closed during startup: {e}")))?;
    let mut parse = raw.clone();
    match backend::Message::parse(&mut parse) {
        Ok(Some(message)) => Ok((raw, message)),
        Ok(None) => Err(protocol("truncated message".into())),
        Err(e) => Err(protocol(format!("unparsable message: {e}"))),
    }
}

fn server_error(body: &backend::ErrorResponseBody, host: &str, phase: Phase) -> SessionError {
    let mut severity = String::from("FATAL");
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut hint = None;
    let mut fields = body.fields();
    loop {
        match fields.next() {
            Ok(Some(field)) => {
                let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
                match field.type_() {
                    b'S' => severity = value,
                    b'C' => code = value,
                    b'M' => message = value,
                    b'D' => detail = Some(value),
                    b'H' => hint = Some(value),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => {
                return SessionError::Protocol {
                    host: host.to_string(),
                    what: format!("unparsable error response: {e}"),
                }
            }
        }
    }
    SessionError::Server {
        phase,
        severity,
        code,
        message,
        detail,
        hint,
    }
}

/// Keeps a session only if it is what `target_session_attrs` asks for (libpq 14's rule: the server's
/// `in_hot_standby` and `default_transaction_read_only` when reported, else `SHOW transaction_read_only`).
async fn suits(mut session: RawSession, attrs: TargetSessionAttrs) -> Result<RawSession, SessionError> {
    let wanted_read_only = match attrs {
        TargetSessionAttrs::ReadWrite => false,
        TargetSessionAttrs::ReadOnly => true,
        _ => return Ok(session),
    };
    let reported = match (
        session.parameter("in_hot_standby"),
        session.parameter("default_transaction_read_only"),
    ) {
        (Some(standby), Some(read_only)) => Some(standby == "on" || read_only == "on"),
        _ => None,
    };
    let read_only = match reported {
        Some(read_only) => read_only,
        None => show_read_only(&mut session).await?,
    };
    if read_only == wanted_read_only {
        return Ok(session);
    }
    let mut out = BytesMut::new();
    frontend::terminate(&mut out);
    let _ = session.stream.write_all(&out).await;
    let _ = session.stream.shutdown().await;
    Err(SessionError::NoSuitableHost {
        wanted: if wanted_read_only {
            "read-only"
        } else {
            "read-write"
        },
    })
}

async fn show_read_only(session: &mut RawSession) -> Result<bool, SessionError> {
    let host = session.host.clone();
    let io = |e: std::io::Error| SessionError::Protocol {
        host: host.clone(),
        what: format!("SHOW transaction_read_only failed: {e}"),
    };
    let mut out = BytesMut::new();
    frontend::query("SHOW transaction_read_only", &mut out).map_err(io)?;
    session.stream.write_all(&out).await.map_err(io)?;
    session.stream.flush().await.map_err(io)?;
    let mut read_only = None;
    loop {
        let (_, message) = read_backend(&mut session.stream, &host).await?;
        match message {
            backend::Message::DataRow(row) => {
                let mut ranges = row.ranges();
                if let Ok(Some(Some(range))) = ranges.next() {
                    read_only = Some(row.buffer().get(range).is_some_and(|v| v == b"on"));
                }
            }
            backend::Message::ErrorResponse(body) => {
                return Err(server_error(&body, &host, Phase::AfterAuthentication))
            }
            backend::Message::ReadyForQuery(_) => {
                return read_only.ok_or_else(|| SessionError::Protocol {
                    host: host.clone(),
                    what: "SHOW transaction_read_only returned no row".into(),
                })
            }
            _ => {}
        }
    }
}

/// A buffer that holds a password, overwritten before it is freed.
struct Wiped(BytesMut);

impl Drop for Wiped {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0[..]);
    }
}

impl From<ConnectError> for SessionError {
    fn from(e: ConnectError) -> Self {
        SessionError::Token(e)
    }
}
