//! One client connection, from its first packet to its close: TLS negotiation, the startup message and
//! its checks, the client's local authentication, the upstream session (opened by the connection plan
//! with the current token), then bytes copied both ways.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use entra_postgres::{ConnectError, SessionError};
use pgwire::messages::startup::Startup;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::wire::{self, FirstPacket, Out};
use crate::{LocalAuth, Shared};

/// Relay buffer per direction.
const RELAY_BUFFER: usize = 64 * 1024;
/// The first byte of a TLS handshake record (PostgreSQL 17's direct TLS).
const TLS_HANDSHAKE: u8 = 0x16;

/// Who connected, as far as the transport tells.
#[derive(Debug, Clone)]
enum Peer {
    /// Loopback or remote TCP: the client's and the proxy's addresses.
    Tcp { client: SocketAddr, proxy: SocketAddr },
    /// A unix socket, with the peer's user id (or why it is unknown).
    Unix(Result<u32, String>),
}

impl Peer {
    fn uid(&self) -> Result<u32, String> {
        match self {
            Peer::Tcp { client, proxy } => crate::peer::tcp_peer_uid(*client, *proxy),
            Peer::Unix(uid) => uid.clone(),
        }
    }
}

/// Serves one TCP connection.
pub(crate) async fn serve_tcp(shared: Arc<Shared>, mut tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let (Ok(client), Ok(proxy)) = (tcp.peer_addr(), tcp.local_addr()) else {
        return;
    };
    let peer = Peer::Tcp { client, proxy };
    let startup_timeout = shared.startup_timeout;
    let negotiated = tokio::time::timeout(startup_timeout, async {
        if let Some(tls) = shared.client_tls.clone() {
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await.ok()? == 1 && first[0] == TLS_HANDSHAKE {
                let stream = tls.accept(tcp).await.ok()?;
                return after_tls(&shared, stream, peer).await;
            }
        }
        let mut buf = BytesMut::new();
        loop {
            match wire::read_first_packet(&mut tcp, &mut buf).await {
                Ok(FirstPacket::Ssl) if !buf.is_empty() => {
                    // Bytes sent before the TLS answer would be taken as if they came through TLS
                    // (CVE-2021-23214): refuse, as PostgreSQL does.
                    refuse(
                        &shared,
                        &mut tcp,
                        "08P01",
                        "received unencrypted data after the TLS request",
                    )
                    .await;
                    return None;
                }
                Ok(FirstPacket::Ssl) => match shared.client_tls.clone() {
                    Some(tls) => {
                        tcp.write_all(b"S").await.ok()?;
                        let stream = tls.accept(tcp).await.ok()?;
                        return after_tls(&shared, stream, peer).await;
                    }
                    // Local clients need no TLS: their bytes never leave the machine. `sslmode=prefer`
                    // (libpq's default) then continues in the clear; `require` refuses, as it should.
                    None => tcp.write_all(b"N").await.ok()?,
                },
                Ok(FirstPacket::GssEnc) => tcp.write_all(b"N").await.ok()?,
                Ok(FirstPacket::Cancel(cancel)) => {
                    forward_cancel(&shared, cancel).await;
                    return None;
                }
                Ok(FirstPacket::Startup(_)) if shared.client_tls.is_some() => {
                    refuse(
                        &shared,
                        &mut tcp,
                        "28000",
                        "this proxy listens beyond loopback and requires TLS from clients: connect with \
                         sslmode=require (or verify-full with the proxy's CA)",
                    )
                    .await;
                    return None;
                }
                Ok(FirstPacket::Startup(startup)) => {
                    return Some((Box::new(tcp) as Box<dyn Client>, startup, peer))
                }
                Err(e) => {
                    protocol_failure(&shared, &mut tcp, e).await;
                    return None;
                }
            }
        }
    })
    .await;
    if let Ok(Some((client, startup, peer))) = negotiated {
        run(shared, client, startup, peer).await;
    }
}

/// Serves one unix-socket connection.
pub(crate) async fn serve_unix(shared: Arc<Shared>, mut unix: UnixStream) {
    let peer = Peer::Unix(crate::peer::unix_peer_uid(&unix));
    let negotiated = tokio::time::timeout(shared.startup_timeout, async {
        let mut buf = BytesMut::new();
        loop {
            match wire::read_first_packet(&mut unix, &mut buf).await {
                Ok(FirstPacket::Ssl | FirstPacket::GssEnc) => unix.write_all(b"N").await.ok()?,
                Ok(FirstPacket::Cancel(cancel)) => {
                    forward_cancel(&shared, cancel).await;
                    return None;
                }
                Ok(FirstPacket::Startup(startup)) => return Some(startup),
                Err(e) => {
                    protocol_failure(&shared, &mut unix, e).await;
                    return None;
                }
            }
        }
    })
    .await;
    if let Ok(Some(startup)) = negotiated {
        run(shared, Box::new(unix), startup, peer).await;
    }
}

/// A client's stream, TLS or not.
pub(crate) trait Client: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Client for T {}

/// The startup message (or cancel request) that follows a TLS handshake.
async fn after_tls<S: Client + 'static>(
    shared: &Arc<Shared>,
    mut stream: S,
    peer: Peer,
) -> Option<(Box<dyn Client>, Startup, Peer)> {
    let mut buf = BytesMut::new();
    match wire::read_first_packet(&mut stream, &mut buf).await {
        Ok(FirstPacket::Startup(startup)) => Some((Box::new(stream), startup, peer)),
        Ok(FirstPacket::Cancel(cancel)) => {
            forward_cancel(shared, cancel).await;
            None
        }
        Ok(_) => {
            refuse(
                shared,
                &mut stream,
                "08P01",
                "unexpected TLS or GSS request inside TLS",
            )
            .await;
            None
        }
        Err(e) => {
            protocol_failure(shared, &mut stream, e).await;
            None
        }
    }
}

/// The checks, local authentication, the upstream session and the relay.
async fn run(shared: Arc<Shared>, mut client: Box<dyn Client>, startup: Startup, peer: Peer) {
    let admitted = tokio::time::timeout(
        shared.startup_timeout,
        admit(&shared, &mut client, &startup, &peer),
    )
    .await;
    let Ok(Some((negotiation, permit))) = admitted else {
        return;
    };
    let parameters: Vec<(String, String)> = startup
        .parameters
        .iter()
        .filter(|(k, _)| {
            !matches!(k.as_str(), "user" | "database" | "replication") && !k.starts_with("_pq_.")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let upstream = match shared.connector.open_session(&parameters).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(error = %entra_postgres::report(&e), "proxy: upstream session failed");
            shared.stats.refused_upstream.add();
            let _ = upstream_failure(&e).send(&mut client).await;
            let _ = client.shutdown().await;
            return;
        }
    };
    let key = upstream
        .cancel_target()
        .cloned()
        .map(|target| shared.cancel_keys.register(target));
    let (pid, secret) = key.unwrap_or((0, 0));
    let mut hello = Out::new();
    if let Some(options) = negotiation {
        hello = hello.negotiate_protocol(options);
    }
    let hello = hello
        .auth_ok()
        .raw(upstream.greeting())
        .backend_key(pid, secret)
        .ready();
    let mut upstream = upstream.into_stream();
    if hello.send(&mut client).await.is_ok() {
        shared.stats.relayed.add();
        shared.stats.active.add();
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUFFER, RELAY_BUFFER)
                .await;
        shared.stats.active.sub();
    }
    if let Some(key) = key {
        shared.cancel_keys.remove(key);
    }
    let _ = upstream.shutdown().await;
    drop(permit);
}

/// Checks the startup message and the client's identity, then waits for an upstream slot. Returns the
/// protocol options to decline (when the client asked for more than 3.0) and the slot.
async fn admit(
    shared: &Shared,
    client: &mut Box<dyn Client>,
    startup: &Startup,
    peer: &Peer,
) -> Option<(Option<Vec<String>>, tokio::sync::OwnedSemaphorePermit)> {
    let unsupported: Vec<String> = startup
        .parameters
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    let negotiation = (startup.protocol_number_minor != 0 || !unsupported.is_empty()).then_some(unsupported);
    let Some(user) = startup.parameters.get("user").filter(|u| !u.is_empty()) else {
        refuse(
            shared,
            client,
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return None;
    };
    if user != &shared.role {
        shared.stats.refused_role.add();
        let message = format!(
            "role \"{user}\" is not this proxy's: it signs in as \"{}\" only (the configured user, or the name the \
             token gives); connect with user={}",
            shared.role, shared.role
        );
        refuse(shared, client, "28000", &message).await;
        return None;
    }
    // PostgreSQL's default database is the user name.
    let database = startup
        .parameters
        .get("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(user);
    if database != &shared.dbname {
        shared.stats.refused_database.add();
        let message = format!(
            "database \"{database}\" is not this proxy's: it serves \"{}\" only; connect with dbname={}",
            shared.dbname, shared.dbname
        );
        refuse(shared, client, "28000", &message).await;
        return None;
    }
    if startup.parameters.contains_key("replication") {
        refuse(
            shared,
            client,
            "28000",
            "replication connections are not relayed by this proxy",
        )
        .await;
        return None;
    }
    if !authenticate(shared, client, peer).await {
        return None;
    }
    let permit = match tokio::time::timeout(
        shared.upstream_wait,
        shared.upstream_slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            shared.stats.refused_full.add();
            let message = format!(
                "too many connections: all {} upstream sessions of this proxy are in use (--max-upstream)",
                shared.max_upstream
            );
            refuse(shared, client, "53300", &message).await;
            return None;
        }
    };
    Some((negotiation, permit))
}

/// The client's local authentication: its user id (peer) or the local secret. A password a client sends
/// is compared with the secret and dropped; it never goes upstream.
async fn authenticate(shared: &Shared, client: &mut Box<dyn Client>, peer: &Peer) -> bool {
    match &shared.auth {
        LocalAuth::Peer { uids } => match peer.uid() {
            Ok(uid) if uids.contains(&uid) => true,
            Ok(uid) => {
                shared.stats.refused_local_auth.add();
                let message = format!(
                    "peer authentication failed: this proxy accepts processes of user id {} only, and this \
                     connection's is {uid}",
                    join(uids)
                );
                refuse(shared, client, "28000", &message).await;
                false
            }
            Err(why) => {
                shared.stats.refused_local_auth.add();
                let message = format!("peer authentication failed: {why}");
                refuse(shared, client, "28000", &message).await;
                false
            }
        },
        LocalAuth::Secret(secret) => {
            if Out::new().ask_password().send(client).await.is_err() {
                return false;
            }
            let mut buf = BytesMut::new();
            let given = match wire::read_password(client, &mut buf).await {
                Ok(password) => zeroize::Zeroizing::new(password),
                Err(e) => {
                    protocol_failure(shared, client, e).await;
                    return false;
                }
            };
            zeroize::Zeroize::zeroize(&mut buf[..]);
            let expected = secrecy::ExposeSecret::expose_secret(secret).as_bytes();
            if bool::from(given.as_bytes().ct_eq(expected)) {
                true
            } else {
                shared.stats.refused_local_auth.add();
                refuse(
                    shared,
                    client,
                    "28P01",
                    "password authentication failed: the password must be this proxy's local secret (see its \
                     secret file); it is never an Entra token and is never sent upstream",
                )
                .await;
                false
            }
        }
    }
}

fn join(uids: &[u32]) -> String {
    uids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// What the client is told when the upstream session could not be opened.
fn upstream_failure(e: &SessionError) -> Out {
    match e {
        SessionError::Server {
            severity,
            code,
            message,
            detail,
            hint,
            ..
        } => Out::new().server_error(severity, code, message, detail.as_deref(), hint.as_deref()),
        SessionError::Token(ConnectError::TokenRejected { .. }) => {
            Out::new().fatal("28P01", &format!("entra-proxy: {}", entra_postgres::report(e)))
        }
        SessionError::Token(_) => Out::new().fatal(
            "08001",
            &format!(
                "entra-proxy could not get an Entra token: {}",
                entra_postgres::report(e)
            ),
        ),
        _ => Out::new().fatal(
            "08001",
            &format!(
                "entra-proxy could not open the upstream session: {}",
                entra_postgres::report(e)
            ),
        ),
    }
}

/// Forwards a client's cancel request to the upstream session its key names. Unknown keys are ignored,
/// as PostgreSQL ignores them.
async fn forward_cancel(shared: &Shared, cancel: pgwire::messages::cancel::CancelRequest) {
    let Some(secret) = cancel.secret_key.as_i32() else {
        return;
    };
    let Some(target) = shared.cancel_keys.find((cancel.pid, secret)) else {
        tracing::debug!("proxy: cancel request for an unknown key ignored");
        return;
    };
    match target.cancel().await {
        Ok(()) => shared.stats.cancels.add(),
        Err(e) => tracing::warn!(error = %entra_postgres::report(&e), "proxy: cancel request failed"),
    }
}

async fn protocol_failure<S: AsyncWrite + Unpin>(shared: &Shared, client: &mut S, error: wire::WireError) {
    match error {
        // The client went away: nobody to answer.
        wire::WireError::Io(_) => {}
        wire::WireError::Invalid(what) => {
            refuse(shared, client, "08P01", &format!("invalid startup: {what}")).await
        }
    }
}

/// Sends a FATAL error and closes.
async fn refuse<S: AsyncWrite + Unpin>(shared: &Shared, client: &mut S, code: &str, message: &str) {
    tracing::info!(code, message, "proxy: client refused");
    shared.stats.refused.add();
    let _ = Out::new().fatal(code, message).send(client).await;
    let _ = client.shutdown().await;
}
