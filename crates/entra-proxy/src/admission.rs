//! From an accepted connection to an admitted client, in this order: who it is (peer credentials at
//! once, or the local secret after the startup message), and only then what it asks for (role,
//! database) and an upstream slot. Every refusal is a [`Refusal`] and goes through [`refuse`], which
//! counts it, logs it (client text escaped) and answers it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgwire::messages::startup::Startup;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;

use crate::listen::Accepted;
use crate::peer::{self, PeerError};
use crate::stats::Reason;
use crate::warm;
use crate::wire::{self, FirstPacket, Out};
use crate::{LocalAuth, Shared};

/// The first byte of a TLS handshake record (PostgreSQL 17's direct TLS).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a refusal may take to write: it is a few hundred bytes to a socket the proxy has barely
/// written to, so only a client that stopped reading takes longer.
const ANSWER_BOUND: Duration = Duration::from_secs(1);

/// Text a client chose (a role or database name, `application_name`, a protocol error quoting its
/// bytes), made safe for a log line: in double quotes, with quotes, backslashes and control characters
/// (newlines included) escaped, so a client can neither start a line of its own nor forge a field
/// (`x client=10.9.9.9` stays one quoted value). Every client-controlled log field goes through here.
pub(crate) fn escaped(text: &str) -> Quoted<'_> {
    Quoted(text)
}

/// See [`escaped`].
pub(crate) struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Where a connection came from, for logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    Tcp(SocketAddr),
    Unix,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Tcp(address) => write!(f, "{address}"),
            Origin::Unix => f.write_str("unix socket"),
        }
    }
}

/// A client's stream, TLS or not.
pub(crate) trait Client: tokio::io::AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + AsyncWrite + Unpin + Send> Client for T {}

/// Why the proxy refuses a client. Before authentication a refusal names nothing of the proxy.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The client's user id is not allowed, or could not be found out (the why is logged, not told).
    PeerAuthentication(PeerError),
    /// The client's user id is known and not allowed.
    ForeignUser(u32),
    /// The password is not the local secret.
    PasswordAuthentication,
    /// No authenticated startup within the startup timeout. Recorded, not answered: the stream went
    /// with the timed-out phase (see [`authenticate`]).
    Timeout(Duration),
    /// A client of a proxy that requires TLS, in the clear.
    TlsRequired,
    /// Bytes sent before the answer to a TLS request (CVE-2021-23214).
    UnencryptedAfterTlsRequest,
    /// A TLS or GSS request inside TLS.
    NestedEncryptionRequest,
    /// A message that breaks the protocol.
    Protocol(String),
    /// A startup message without a user.
    NoUser,
    /// Another role than the proxy's.
    Role { asked: String, role: String },
    /// Another database than the proxy's.
    Database { asked: String, database: String },
    /// A replication connection.
    Replication,
    /// Every upstream slot stayed taken for the whole wait.
    Full { max_upstream: usize },
    /// The proxy is draining: it admits no new session.
    Draining,
}

impl Refusal {
    /// The SQLSTATE the client is sent.
    fn sqlstate(&self) -> &'static str {
        match self {
            Refusal::PasswordAuthentication => "28P01",
            Refusal::PeerAuthentication(_)
            | Refusal::ForeignUser(_)
            | Refusal::TlsRequired
            | Refusal::NoUser
            | Refusal::Role { .. }
            | Refusal::Database { .. }
            | Refusal::Replication => "28000",
            Refusal::Timeout(_) => "08006",
            Refusal::UnencryptedAfterTlsRequest | Refusal::NestedEncryptionRequest | Refusal::Protocol(_) => {
                "08P01"
            }
            Refusal::Full { .. } => "53300",
            // PostgreSQL's answer while it shuts down (cannot_connect_now): clients and poolers know to
            // try again elsewhere or later.
            Refusal::Draining => "57P03",
        }
    }

    /// What the client is told.
    fn message(&self) -> String {
        match self {
            Refusal::PeerAuthentication(_) | Refusal::ForeignUser(_) => "peer authentication failed".into(),
            Refusal::PasswordAuthentication => "password authentication failed".into(),
            Refusal::Timeout(_) => "canceling authentication due to timeout".into(),
            Refusal::TlsRequired => "this proxy requires TLS from its clients: connect with sslmode=verify-full and \
                 sslrootcert=<the certificate of the CA that signed this proxy's certificate, which the proxy's \
                 operator gives out> (sslmode=require would encrypt without checking that this is the proxy)"
                .into(),
            Refusal::UnencryptedAfterTlsRequest => "received unencrypted data after the TLS request".into(),
            Refusal::NestedEncryptionRequest => "unexpected TLS or GSS request inside TLS".into(),
            Refusal::Protocol(what) => format!("invalid startup: {what}"),
            Refusal::NoUser => "no PostgreSQL user name specified in startup packet".into(),
            Refusal::Role { asked, role } => format!(
                "role \"{asked}\" is not this proxy's: it signs in as \"{role}\" only (the configured user, or the \
                 name the token gives); connect with user={role}"
            ),
            Refusal::Database { asked, database } => format!(
                "database \"{asked}\" is not this proxy's: it serves \"{database}\" only; connect with \
                 dbname={database}"
            ),
            Refusal::Replication => "replication connections are not relayed by this proxy".into(),
            Refusal::Full { max_upstream } => format!(
                "too many connections: all {max_upstream} upstream sessions of this proxy are in use \
                 (--max-upstream)"
            ),
            Refusal::Draining => "the proxy is shutting down: it takes no new sessions".into(),
        }
    }

    /// What the log says: the message, and for an authentication failure why, which the client is not
    /// told.
    fn reason(&self) -> String {
        match self {
            Refusal::PeerAuthentication(why) => format!("peer authentication failed: {why}"),
            Refusal::ForeignUser(uid) => {
                format!("peer authentication failed: user id {uid} is not allowed")
            }
            Refusal::PasswordAuthentication => {
                "password authentication failed: the password is not this proxy's local secret".into()
            }
            Refusal::Timeout(timeout) => format!("no authenticated startup within {timeout:?}"),
            other => other.message(),
        }
    }

    /// Why, as counted and labelled in the metrics.
    fn kind(&self) -> Reason {
        match self {
            Refusal::PeerAuthentication(_) | Refusal::ForeignUser(_) | Refusal::PasswordAuthentication => {
                Reason::LocalAuth
            }
            Refusal::Timeout(_) => Reason::Timeout,
            Refusal::Role { .. } => Reason::Role,
            Refusal::Database { .. } => Reason::Database,
            Refusal::Full { .. } => Reason::Full,
            Refusal::TlsRequired => Reason::TlsRequired,
            Refusal::UnencryptedAfterTlsRequest | Refusal::NestedEncryptionRequest | Refusal::Protocol(_) => {
                Reason::Protocol
            }
            Refusal::NoUser => Reason::NoUser,
            Refusal::Replication => Reason::Replication,
            Refusal::Draining => Reason::Draining,
        }
    }
}

/// Counts and logs a refusal.
fn record(shared: &Shared, origin: Origin, refusal: &Refusal) {
    shared.state.stats.refusals(refusal.kind()).add();
    tracing::info!(
        client = %origin,
        code = refusal.sqlstate(),
        reason = %escaped(&refusal.reason()),
        "proxy: client refused"
    );
}

/// Refuses a client: counts, logs, sends a FATAL error and closes.
async fn refuse<S: AsyncWrite + Unpin + ?Sized>(
    shared: &Shared,
    origin: Origin,
    client: &mut S,
    refusal: Refusal,
) {
    record(shared, origin, &refusal);
    let answer = async {
        let _ = Out::new()
            .fatal(refusal.sqlstate(), &refusal.message())
            .send(client)
            .await;
        let _ = client.shutdown().await;
    };
    let _ = tokio::time::timeout(ANSWER_BOUND, answer).await;
}

/// A client that has authenticated, with its startup message.
struct Authenticated {
    client: Box<dyn Client>,
    startup: Startup,
    origin: Origin,
}

/// A client admitted to a session: what [`session::run`](crate::session::run) relays.
pub(crate) struct Admitted {
    pub(crate) client: Box<dyn Client>,
    pub(crate) origin: Origin,
    /// The client's parameters to apply upstream (not `user`, `database`, `replication` or `_pq_.*`).
    pub(crate) parameters: Vec<(String, String)>,
    /// The protocol options to decline, when the client asked for more than 3.0.
    pub(crate) negotiation: Option<Vec<String>>,
    /// The upstream slot, held for the session's life.
    pub(crate) upstream_slot: OwnedSemaphorePermit,
    /// A warm session to serve the client, signed in already (its parameters not applied yet).
    pub(crate) warm: Option<entra_postgres::RawSession>,
}

/// An accepted connection holding one of the places for connections that have not authenticated.
struct Unauthenticated<'a> {
    shared: &'a Shared,
    _place: OwnedSemaphorePermit,
}

impl<'a> Unauthenticated<'a> {
    fn new(shared: &'a Shared, place: OwnedSemaphorePermit) -> Self {
        shared.state.stats.unauthenticated.add();
        Unauthenticated {
            shared,
            _place: place,
        }
    }
}

impl Drop for Unauthenticated<'_> {
    fn drop(&mut self) {
        self.shared.state.stats.unauthenticated.sub();
    }
}

/// Serves one accepted connection, which holds `place` until it has authenticated.
pub(crate) async fn serve(shared: Arc<Shared>, connection: Accepted, place: OwnedSemaphorePermit) {
    let unauthenticated = Unauthenticated::new(&shared, place);
    let authenticated = authenticate(&shared, connection).await;
    drop(unauthenticated);
    let Some(authenticated) = authenticated else {
        return;
    };
    if let Some(admitted) = admit(&shared, authenticated).await {
        crate::session::run(shared, admitted).await;
    }
}

/// The phase before authentication, bounded by the startup timeout: the peer check, TLS, the startup
/// message and the local secret.
async fn authenticate(shared: &Arc<Shared>, connection: Accepted) -> Option<Authenticated> {
    let origin = match &connection {
        Accepted::Tcp(tcp) => Origin::Tcp(tcp.peer_addr().ok()?),
        Accepted::Unix(_) => Origin::Unix,
    };
    let phase = async {
        match connection {
            Accepted::Tcp(tcp) => tcp_startup(shared, tcp, origin).await,
            Accepted::Unix(unix) => unix_startup(shared, unix).await,
        }
    };
    match tokio::time::timeout(shared.startup_timeout, phase).await {
        Ok(authenticated) => authenticated,
        Err(_) => {
            // The stream went with the timed-out phase: closed without an answer, as PostgreSQL closes a
            // connection that sent no startup packet in time.
            record(shared, origin, &Refusal::Timeout(shared.startup_timeout));
            None
        }
    }
}

/// With peer authentication, the connection's user id against those allowed: known from the kernel as
/// soon as the connection is accepted, so another user's connection is refused before it is read from.
fn peer_check(shared: &Shared, uid: Result<u32, PeerError>) -> Result<(), Refusal> {
    let LocalAuth::Peer { uids } = &shared.auth else {
        return Ok(());
    };
    match uid {
        Ok(uid) if uids.contains(&uid) => Ok(()),
        Ok(uid) => Err(Refusal::ForeignUser(uid)),
        Err(why) => Err(Refusal::PeerAuthentication(why)),
    }
}

async fn tcp_startup(shared: &Arc<Shared>, mut tcp: TcpStream, origin: Origin) -> Option<Authenticated> {
    if matches!(shared.auth, LocalAuth::Peer { .. }) {
        let (client, proxy) = (tcp.peer_addr().ok()?, tcp.local_addr().ok()?);
        let uid = peer::tcp_peer_uid_off_runtime(client, proxy).await;
        if let Err(refusal) = peer_check(shared, uid) {
            if matches!(
                refusal,
                Refusal::PeerAuthentication(PeerError::NotConnected { .. })
            ) {
                cancel_or_refuse(shared, tcp, origin, refusal).await;
                return None;
            }
            decline_encryption_if_asked(&tcp);
            refuse(shared, origin, &mut tcp, refusal).await;
            return None;
        }
    }
    if let Some(tls) = shared.client_tls.clone() {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.ok()? == 1 && first[0] == TLS_HANDSHAKE {
            let stream = tls.accept(tcp).await.ok()?;
            return after_tls(shared, stream, origin).await;
        }
    }
    let mut buf = BytesMut::new();
    loop {
        match wire::read_first_packet(&mut tcp, &mut buf).await {
            Ok(FirstPacket::Ssl) if !buf.is_empty() => {
                // Bytes sent before the TLS answer would be taken as if they came through TLS
                // (CVE-2021-23214): refuse, as PostgreSQL does.
                refuse(shared, origin, &mut tcp, Refusal::UnencryptedAfterTlsRequest).await;
                return None;
            }
            Ok(FirstPacket::Ssl) => match shared.client_tls.clone() {
                Some(tls) => {
                    tcp.write_all(b"S").await.ok()?;
                    let stream = tls.accept(tcp).await.ok()?;
                    return after_tls(shared, stream, origin).await;
                }
                // Local clients need no TLS: their bytes never leave the machine. `sslmode=prefer`
                // (libpq's default) then continues in the clear; `require` refuses, as it should.
                None => tcp.write_all(b"N").await.ok()?,
            },
            Ok(FirstPacket::GssEnc) => tcp.write_all(b"N").await.ok()?,
            Ok(FirstPacket::Cancel(cancel)) => {
                crate::cancel::forward(shared, cancel);
                return None;
            }
            Ok(FirstPacket::Startup(_)) if shared.client_tls.is_some() => {
                refuse(shared, origin, &mut tcp, Refusal::TlsRequired).await;
                return None;
            }
            Ok(FirstPacket::Startup(startup)) => {
                return local_auth(shared, Box::new(tcp), startup, buf, origin).await
            }
            Err(e) => {
                protocol_failure(shared, origin, &mut tcp, e).await;
                return None;
            }
        }
    }
}

/// A client whose end is no longer connected when the kernel is asked whose it is has stopped sending
/// (tokio-postgres closes its end as soon as its cancel request is written), so all it sent is here and
/// reading it waits for nothing. Its owner is unknown, but a cancel request needs no owner: its random
/// key authenticates it, as PostgreSQL's do. Anything else is refused.
async fn cancel_or_refuse(shared: &Arc<Shared>, mut tcp: TcpStream, origin: Origin, refusal: Refusal) {
    let mut buf = BytesMut::new();
    match wire::read_first_packet(&mut tcp, &mut buf).await {
        Ok(FirstPacket::Cancel(cancel)) => crate::cancel::forward(shared, cancel),
        _ => refuse(shared, origin, &mut tcp, refusal).await,
    }
}

/// Before refusing a connection at once (waiting for nothing), declines the client's TLS or GSS request
/// if it has already arrived: libpq does not show an error sent in answer to that request ("server sent
/// an error response during SSL exchange"), but does show one in answer to the startup message it sends
/// after a decline.
fn decline_encryption_if_asked(tcp: &TcpStream) {
    let mut first = [0u8; 8];
    if matches!(tcp.try_read(&mut first), Ok(8)) && wire::is_encryption_request(&first) {
        let _ = tcp.try_write(b"N");
    }
}

async fn unix_startup(shared: &Arc<Shared>, mut unix: UnixStream) -> Option<Authenticated> {
    let origin = Origin::Unix;
    if let Err(refusal) = peer_check(shared, peer::unix_peer_uid(&unix)) {
        refuse(shared, origin, &mut unix, refusal).await;
        return None;
    }
    let mut buf = BytesMut::new();
    loop {
        match wire::read_first_packet(&mut unix, &mut buf).await {
            Ok(FirstPacket::Ssl | FirstPacket::GssEnc) => unix.write_all(b"N").await.ok()?,
            Ok(FirstPacket::Cancel(cancel)) => {
                crate::cancel::forward(shared, cancel);
                return None;
            }
            Ok(FirstPacket::Startup(startup)) => {
                return local_auth(shared, Box::new(unix), startup, buf, origin).await
            }
            Err(e) => {
                protocol_failure(shared, origin, &mut unix, e).await;
                return None;
            }
        }
    }
}

/// The startup message (or cancel request) that follows a TLS handshake.
async fn after_tls<S: Client + 'static>(
    shared: &Arc<Shared>,
    mut stream: S,
    origin: Origin,
) -> Option<Authenticated> {
    let mut buf = BytesMut::new();
    match wire::read_first_packet(&mut stream, &mut buf).await {
        Ok(FirstPacket::Startup(startup)) => local_auth(shared, Box::new(stream), startup, buf, origin).await,
        Ok(FirstPacket::Cancel(cancel)) => {
            crate::cancel::forward(shared, cancel);
            None
        }
        Ok(_) => {
            refuse(shared, origin, &mut stream, Refusal::NestedEncryptionRequest).await;
            None
        }
        Err(e) => {
            protocol_failure(shared, origin, &mut stream, e).await;
            None
        }
    }
}

/// With the local secret, asks for the password and compares it; with peer authentication the client
/// was checked when accepted. A password a client sends is compared and dropped; it never goes
/// upstream. `pending` holds what the client sent after its startup message, wiped in either case.
async fn local_auth(
    shared: &Shared,
    mut client: Box<dyn Client>,
    startup: Startup,
    mut pending: BytesMut,
    origin: Origin,
) -> Option<Authenticated> {
    if let LocalAuth::Secret(secret) = &shared.auth {
        let mut buf = wire::password_buffer(&mut pending);
        if !secret_matches(shared, &mut client, origin, secret, &mut buf).await {
            return None;
        }
    }
    Some(Authenticated {
        client,
        startup,
        origin,
    })
}

async fn secret_matches(
    shared: &Shared,
    client: &mut Box<dyn Client>,
    origin: Origin,
    secret: &SecretString,
    buf: &mut BytesMut,
) -> bool {
    if Out::new().ask_password().send(client).await.is_err() {
        return false;
    }
    let given = match wire::read_password(client, buf).await {
        Ok(password) => password,
        Err(e) => {
            protocol_failure(shared, origin, client, e).await;
            return false;
        }
    };
    if bool::from(given.as_bytes().ct_eq(secret.expose_secret().as_bytes())) {
        true
    } else {
        refuse(shared, origin, client, Refusal::PasswordAuthentication).await;
        false
    }
}

/// An authenticated client's startup message against what the proxy serves, then an upstream slot.
async fn admit(shared: &Shared, authenticated: Authenticated) -> Option<Admitted> {
    let Authenticated {
        mut client,
        startup,
        origin,
    } = authenticated;
    let mut draining = shared.state.drain_signal();
    if *draining.borrow_and_update() {
        refuse(shared, origin, &mut client, Refusal::Draining).await;
        return None;
    }
    if let Err(refusal) = check_startup(shared, &startup) {
        refuse(shared, origin, &mut client, refusal).await;
        return None;
    }
    let unsupported: Vec<String> = startup
        .parameters
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    let negotiation = (startup.protocol_number_minor != 0 || !unsupported.is_empty()).then_some(unsupported);
    let parameters: Vec<(String, String)> = startup
        .parameters
        .into_iter()
        .filter(|(k, _)| {
            !entra_postgres::RESERVED_STARTUP_PARAMETERS.contains(&k.as_str()) && !k.starts_with("_pq_.")
        })
        .collect();
    let eligible = warm::eligible(&parameters);
    if eligible {
        if let Some(warm) = shared.warm.take(&shared.state.stats) {
            return Some(Admitted {
                client,
                origin,
                parameters,
                negotiation,
                upstream_slot: warm.slot,
                warm: Some(warm.session),
            });
        }
    }
    // Every slot taken and as many clients already waiting: refused at once rather than held.
    let Ok(waiting) = shared.waiting_slots.clone().try_acquire_owned() else {
        let refusal = Refusal::Full {
            max_upstream: shared.max_upstream,
        };
        refuse(shared, origin, &mut client, refusal).await;
        return None;
    };
    shared.state.stats.waiting.add();
    let acquire = async {
        match shared.upstream_wait {
            Some(wait) => tokio::time::timeout(wait, upstream(shared, eligible)).await.ok(),
            None => Some(upstream(shared, eligible).await),
        }
    };
    // A drain ends the wait: a waiting client is not a session, and would only be cut at its deadline.
    let got = tokio::select! {
        got = acquire => Ok(got),
        _ = crate::state::until_draining(&mut draining) => Err(Refusal::Draining),
    };
    shared.state.stats.waiting.sub();
    drop(waiting);
    let (upstream_slot, warm) = match got {
        Ok(Some(Some(Upstream::Slot(slot)))) => (slot, None),
        Ok(Some(Some(Upstream::Warm(warm)))) => {
            let warm = *warm;
            (warm.slot, Some(warm.session))
        }
        Err(refusal) => {
            refuse(shared, origin, &mut client, refusal).await;
            return None;
        }
        Ok(_) => {
            let refusal = Refusal::Full {
                max_upstream: shared.max_upstream,
            };
            refuse(shared, origin, &mut client, refusal).await;
            return None;
        }
    };
    Some(Admitted {
        client,
        origin,
        parameters,
        negotiation,
        upstream_slot,
        warm,
    })
}

/// What a waiting client gets: a free slot, or a warm session (with its slot).
enum Upstream {
    Slot(OwnedSemaphorePermit),
    Warm(Box<warm::WarmSession>),
}

/// Waits for a slot: a free one, a warm session signed in meanwhile (for a client that can use one),
/// or the slot of an idle warm session (for one that cannot); `None` if the slots were closed.
async fn upstream(shared: &Shared, eligible: bool) -> Option<Upstream> {
    let stats = &shared.state.stats;
    loop {
        let pushed = shared.warm.pushed();
        tokio::pin!(pushed);
        // Registered before looking, so a session pushed after the look still wakes this client.
        pushed.as_mut().enable();
        if eligible {
            if let Some(warm) = shared.warm.take(stats) {
                return Some(Upstream::Warm(Box::new(warm)));
            }
        }
        if let Ok(slot) = shared.upstream_slots.clone().try_acquire_owned() {
            return Some(Upstream::Slot(slot));
        }
        if !eligible {
            if let Some(slot) = shared.warm.surrender(stats) {
                return Some(Upstream::Slot(slot));
            }
        }
        tokio::select! {
            slot = shared.upstream_slots.clone().acquire_owned() => return slot.ok().map(Upstream::Slot),
            _ = &mut pushed => {}
        }
    }
}

/// The role and database an authenticated client asks for must be the proxy's.
fn check_startup(shared: &Shared, startup: &Startup) -> Result<(), Refusal> {
    let Some(user) = startup.parameters.get("user").filter(|u| !u.is_empty()) else {
        return Err(Refusal::NoUser);
    };
    if user != &shared.role {
        return Err(Refusal::Role {
            asked: user.clone(),
            role: shared.role.clone(),
        });
    }
    // PostgreSQL's default database is the user name.
    let database = startup
        .parameters
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    if database != &shared.dbname {
        return Err(Refusal::Database {
            asked: database.clone(),
            database: shared.dbname.clone(),
        });
    }
    if startup.parameters.contains_key("replication") {
        return Err(Refusal::Replication);
    }
    Ok(())
}

async fn protocol_failure<S: AsyncWrite + Unpin + ?Sized>(
    shared: &Shared,
    origin: Origin,
    client: &mut S,
    error: wire::WireError,
) {
    match error {
        // The client went away: nobody to answer.
        wire::WireError::Io(_) => {}
        wire::WireError::Invalid(what) => refuse(shared, origin, client, Refusal::Protocol(what)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_stays_on_one_line_and_in_one_field() {
        let text = escaped("x\nforged line\r\u{1b}[31m").to_string();
        assert_eq!(text, r#""x\nforged line\r\u{1b}[31m""#);
        assert_eq!(text.lines().count(), 1);
        // A client's `client=…` stays inside the quoted value.
        let text = escaped("x\" client=10.9.9.9 code=00000").to_string();
        assert_eq!(text, r#""x\" client=10.9.9.9 code=00000""#);
    }
}
