//! One client connection: negotiate TLS, check the token, open the upstream session as the role, then
//! copy bytes both ways.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;

use super::auth::{self, RejectReason, Rejection};
use super::protocol::{self, FirstPacket, ProtocolError, Startup};
use super::{SessionRecord, Shared, TokenFingerprint};

/// How long a client has to get through TLS and authentication (PostgreSQL's `authentication_timeout`).
const AUTH_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest PasswordMessage accepted: tokens with many group claims pass 4 KB, none reach this.
const MAX_PASSWORD_MESSAGE: usize = 64 * 1024;
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Relay buffer per direction.
const RELAY_BUFFER: usize = 64 * 1024;

/// A session past authentication, recorded, registered and greeted: ready to relay.
struct Admitted<S> {
    client: S,
    upstream: UnixStream,
    active: Active,
    stop: oneshot::Receiver<()>,
}

/// A session's entry in the gate's active sessions (what a test can terminate), removed when dropped, so
/// that no path out of the relay leaves it behind.
struct Active {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.shared.unregister_active(self.id);
    }
}

/// Serve one accepted TCP connection to its end.
pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let admitted = tokio::time::timeout(AUTH_TIMEOUT, negotiate(&shared, tcp)).await;
    let Ok(Some(admitted)) = admitted else {
        return;
    };
    relay(admitted).await;
}

/// Everything up to a relayable session; `None` when the connection was answered and closed (or failed).
async fn negotiate(
    shared: &Arc<Shared>,
    mut tcp: TcpStream,
) -> Option<Admitted<tokio_rustls::server::TlsStream<TcpStream>>> {
    // PostgreSQL 17's direct TLS (`sslnegotiation=direct`): a ClientHello instead of an SSLRequest.
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await.ok()? == 1 && first[0] == TLS_HANDSHAKE {
        let tls = shared.tls.accept(tcp).await.ok()?;
        return after_tls(shared, tls).await;
    }
    let mut gss_refused = false;
    loop {
        match protocol::read_first_packet(&mut tcp).await {
            Ok(FirstPacket::GssEncRequest) if !gss_refused => {
                gss_refused = true;
                tcp.write_all(b"N").await.ok()?;
            }
            Ok(FirstPacket::SslRequest) => {
                tcp.write_all(b"S").await.ok()?;
                let tls = shared.tls.accept(tcp).await.ok()?;
                return after_tls(shared, tls).await;
            }
            Ok(FirstPacket::Cancel(request)) => {
                forward_cancel(shared, tcp, &request).await;
                return None;
            }
            Ok(FirstPacket::Startup(startup)) => {
                let role = startup.user().unwrap_or_default().to_string();
                let rejection = Rejection::no_tls(&role, startup.database());
                reject(shared, &mut tcp, Some(role), rejection).await;
                return None;
            }
            Ok(FirstPacket::GssEncRequest) => {
                reject(shared, &mut tcp, None, Rejection::new(RejectReason::Protocol, "")).await;
                return None;
            }
            Err(e) => {
                protocol_failure(shared, &mut tcp, e).await;
                return None;
            }
        }
    }
}

/// The StartupMessage (or CancelRequest) that follows the TLS handshake.
async fn after_tls(
    shared: &Arc<Shared>,
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
) -> Option<Admitted<tokio_rustls::server::TlsStream<TcpStream>>> {
    match protocol::read_first_packet(&mut tls).await {
        Ok(FirstPacket::Startup(startup)) => authenticate(shared, tls, startup).await,
        Ok(FirstPacket::Cancel(request)) => {
            forward_cancel(shared, tls, &request).await;
            None
        }
        Ok(_) => {
            reject(shared, &mut tls, None, Rejection::new(RejectReason::Protocol, "")).await;
            None
        }
        Err(e) => {
            protocol_failure(shared, &mut tls, e).await;
            None
        }
    }
}

/// Ask for the token, check it, open the upstream session; answer and close on any failure.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    mut client: S,
    startup: Startup,
) -> Option<Admitted<S>> {
    // The upstream's pg_hba.conf trusts the gate's socket for sessions, not for replication; refused
    // here too, so that no pg_hba.conf line decides it alone.
    if startup.get("replication").is_some() {
        let rejection = Rejection {
            reason: RejectReason::Protocol,
            message: "replication connections are not relayed by the emulator's gate".into(),
        };
        reject(shared, &mut client, startup.user().map(str::to_string), rejection).await;
        return None;
    }
    let Some(role) = startup.user().map(str::to_string) else {
        let rejection = Rejection {
            reason: RejectReason::Protocol,
            message: "no PostgreSQL user name specified in startup packet".into(),
        };
        reject(shared, &mut client, None, rejection).await;
        return None;
    };
    write_flush(&mut client, &protocol::auth_cleartext_password())
        .await
        .ok()?;
    let (tag, body) = match protocol::read_message(&mut client, MAX_PASSWORD_MESSAGE).await {
        Ok(message) => message,
        Err(e) => {
            protocol_failure(shared, &mut client, e).await;
            return None;
        }
    };
    let Some(token) = protocol::password(tag, &body) else {
        reject(
            shared,
            &mut client,
            Some(role),
            Rejection::new(RejectReason::Protocol, ""),
        )
        .await;
        return None;
    };
    let claims = match auth::check(
        &shared.issuer,
        &shared.audience,
        shared.skew,
        &shared.principals,
        &role,
        token,
    ) {
        Ok(claims) => claims,
        Err(rejection) => {
            reject(shared, &mut client, Some(role), rejection).await;
            return None;
        }
    };
    let fingerprint = TokenFingerprint::of(token);
    drop(body);
    let delay = shared.sign_in_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let mut upstream = match UnixStream::connect(shared.upstream_socket()).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(error = %e, "gate: upstream unix socket unreachable");
            let rejection = Rejection::new(RejectReason::Upstream, &role);
            reject(shared, &mut client, Some(role), rejection).await;
            return None;
        }
    };
    let (backend_pid, ready) = match open_upstream(&mut client, &mut upstream, &startup).await {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            // The server's own error (e.g. database does not exist) was relayed.
            shared.record_rejection(Some(role), RejectReason::Upstream);
            let _ = client.shutdown().await;
            return None;
        }
        // The client went away while the server's answers were relayed: nobody to answer, and no refusal.
        Err(StartupFailure::ClientGone) => return None,
        Err(StartupFailure::Upstream(e)) => {
            tracing::warn!(error = %e, "gate: upstream session failed during startup");
            let rejection = Rejection::new(RejectReason::Upstream, &role);
            reject(shared, &mut client, Some(role), rejection).await;
            return None;
        }
    };

    // Recorded and registered before the client reads ReadyForQuery: a client that is signed in is one
    // the gate has already counted and can terminate, so tests read the gate's records without waiting.
    let id = shared.next_session_id();
    shared.record_session(SessionRecord {
        id,
        role: role.clone(),
        database: startup.database().to_string(),
        oid: claims.oid,
        token: fingerprint,
        backend_pid,
        at: SystemTime::now(),
    });
    let (stop_tx, stop) = oneshot::channel();
    shared.register_active(id, role, stop_tx);
    let active = Active {
        shared: Arc::clone(shared),
        id,
    };
    write_flush(&mut client, &ready).await.ok()?;
    Some(Admitted {
        client,
        upstream,
        active,
        stop,
    })
}

/// Why a session's startup ended before ReadyForQuery.
enum StartupFailure {
    /// Writing to the client failed: it left.
    ClientGone,
    /// The upstream server failed, or broke the protocol.
    Upstream(ProtocolError),
}

/// Send the StartupMessage rebuilt from the checked parameters upstream (trusted on the socket) and relay
/// the server's answer up to, not including, ReadyForQuery. `Ok(Some((pid, ready)))` when the session is
/// open, with the ReadyForQuery message still to send; `Ok(None)` when the server refused (its
/// ErrorResponse was relayed).
async fn open_upstream<S: AsyncWrite + Unpin>(
    client: &mut S,
    upstream: &mut UnixStream,
    startup: &Startup,
) -> Result<Option<(Option<i32>, Vec<u8>)>, StartupFailure> {
    let left = |_: std::io::Error| StartupFailure::ClientGone;
    upstream
        .write_all(startup.upstream_packet())
        .await
        .map_err(|e| StartupFailure::Upstream(e.into()))?;
    let mut pid = None;
    loop {
        let (tag, body) = protocol::read_message(upstream, 1 << 20)
            .await
            .map_err(StartupFailure::Upstream)?;
        match tag {
            b'R' if protocol::auth_code(&body) != Some(0) => {
                return Err(StartupFailure::Upstream(ProtocolError::Malformed(
                    "the upstream server asked for a password on its trusted unix socket",
                )));
            }
            b'K' => pid = protocol::backend_pid(&body),
            b'Z' => return Ok(Some((pid, protocol::message(tag, &body)))),
            _ => {}
        }
        if tag == b'E' {
            // The server refused: a refusal whether or not the client is still there to read it.
            let _ = write_flush(client, &protocol::message(tag, &body)).await;
            return Ok(None);
        }
        client
            .write_all(&protocol::message(tag, &body))
            .await
            .map_err(left)?;
    }
}

/// Copy bytes both ways until either side closes or the session is terminated by a test control.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(admitted: Admitted<S>) {
    let Admitted {
        mut client,
        mut upstream,
        active,
        stop,
    } = admitted;
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUFFER, RELAY_BUFFER) => {}
        _ = stop => {}
    }
    drop(active);
}

/// Forward a CancelRequest to the upstream server (its pid and key were relayed at startup), wait for the
/// server to close as PostgreSQL does, then close.
async fn forward_cancel<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    mut client: S,
    request: &[u8],
) {
    if let Ok(mut upstream) = UnixStream::connect(shared.upstream_socket()).await {
        if upstream.write_all(request).await.is_ok() {
            let mut sink = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(5), upstream.read(&mut sink)).await;
        }
    }
    let _ = client.shutdown().await;
}

async fn protocol_failure<S: AsyncWrite + Unpin>(shared: &Arc<Shared>, client: &mut S, error: ProtocolError) {
    match error {
        // The client went away: nobody to answer.
        ProtocolError::Io(_) => {}
        other => {
            let rejection = Rejection {
                reason: RejectReason::Protocol,
                message: other.to_string(),
            };
            reject(shared, client, None, rejection).await;
        }
    }
}

/// Record the refusal, send its FATAL ErrorResponse and close.
async fn reject<S: AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    client: &mut S,
    role: Option<String>,
    rejection: Rejection,
) {
    tracing::debug!(reason = ?rejection.reason, role = ?role, "gate: connection refused");
    shared.record_rejection(role, rejection.reason);
    let _ = write_flush(
        client,
        &protocol::fatal(rejection.reason.sqlstate(), &rejection.message),
    )
    .await;
    let _ = client.shutdown().await;
}

async fn write_flush<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
