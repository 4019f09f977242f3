//! An admitted client's session: the upstream session (opened by the connection plan with the current
//! token), the proxy's greeting, then bytes copied both ways until either side closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use entra_postgres::{ConnectError, RawSession, SessionError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::admission::{escaped, Admitted, Client};
use crate::stats::{Counter, Reason};
use crate::wire::Out;
use crate::Shared;

/// Relay buffer per direction.
const RELAY_BUFFER: usize = 64 * 1024;

/// Opens the upstream session for an admitted client and relays it.
pub(crate) async fn run(shared: Arc<Shared>, admitted: Admitted) {
    let Admitted {
        mut client,
        origin,
        parameters,
        negotiation,
        upstream_slot,
        warm,
    } = admitted;
    let in_sign_in = shared.state.stats.signing_in.hold();
    let warmed = match warm {
        Some(session) => take_warm(&shared, session, &parameters).await,
        None => None,
    };
    let opened = match warmed {
        Some(session) => Ok(session),
        None => {
            let signing_in = std::time::Instant::now();
            let opened = shared.connector.open_session(&parameters).await;
            shared.state.metrics.sign_in(signing_in.elapsed(), opened.is_ok());
            opened
        }
    };
    let upstream = match opened {
        Ok(upstream) => upstream,
        Err(e) => {
            // The server's message may quote the client's own parameters.
            tracing::warn!(
                client = %origin,
                error = %escaped(&entra_postgres::report(&e)),
                "proxy: upstream session failed"
            );
            shared.state.stats.refusals(Reason::Upstream).add();
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
    // Counted as active from here: a drain that closes it counts it either way.
    let _active = shared.state.stats.active.hold();
    drop(in_sign_in);
    if hello.send(&mut client).await.is_ok() {
        let application = parameters
            .iter()
            .find(|(k, _)| k == "application_name")
            .map_or("", |(_, v)| v.as_str());
        tracing::debug!(
            client = %origin,
            application_name = %escaped(application),
            "proxy: session relayed"
        );
        let stats = &shared.state.stats;
        stats.relayed.add();
        let mut counted = Counted {
            client: &mut client,
            read: &stats.bytes_to_server,
            written: &stats.bytes_to_client,
        };
        let _ =
            tokio::io::copy_bidirectional_with_sizes(&mut counted, &mut upstream, RELAY_BUFFER, RELAY_BUFFER)
                .await;
    }
    if let Some(key) = key {
        shared.cancel_keys.remove(key);
    }
    let _ = upstream.shutdown().await;
    drop(upstream_slot);
    // A slot is free: the warmer may sign in a session ahead.
    shared.warm.wake();
}

/// A warm session with the client's parameters applied, or `None` (and the session closed) when it
/// cannot serve this client: the server refused a parameter after connection start, or the session
/// turned out closed. The client then gets a fresh session.
async fn take_warm(
    shared: &Shared,
    mut session: RawSession,
    parameters: &[(String, String)],
) -> Option<RawSession> {
    let stats = &shared.state.stats;
    // Bounded by the plan's connect timeout, as a fresh sign-in is.
    let applied = session.apply_parameters(parameters).await;
    match applied {
        Ok(()) => {
            stats.warm_used.add();
            Some(session)
        }
        Err(e) => {
            // An ERROR refuses a parameter and leaves the session open; a FATAL (terminated by an
            // administrator, the server shutting down) or a broken stream means it was gone.
            let refused = matches!(&e, SessionError::Server { severity, .. } if severity == "ERROR");
            if refused {
                stats.warm_discarded_parameters.add();
                session.close().await;
            } else {
                stats.warm_discarded_closed.add();
            }
            // The server's message may quote the client's parameters.
            tracing::debug!(
                error = %escaped(&entra_postgres::report(&e)),
                "proxy: a warm session could not take the client's parameters; signing in afresh"
            );
            None
        }
    }
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
        SessionError::Token(ConnectError::Refused(_)) => Out::new().fatal(
            "08001",
            &format!(
                "entra-proxy refused to open the upstream session: {}",
                entra_postgres::report(e)
            ),
        ),
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

/// A client's stream that counts the bytes read from it (on their way to the server) and written to it
/// (from the server) as they pass, so the byte counters move during a long session, not at its end.
struct Counted<'a> {
    client: &'a mut Box<dyn Client>,
    read: &'a Counter,
    written: &'a Counter,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut **self.client).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.read.add_n((buf.filled().len() - before) as u64);
        }
        polled
    }
}

impl AsyncWrite for Counted<'_> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut **self.client).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.add_n(n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.client).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.client).poll_shutdown(cx)
    }
}
