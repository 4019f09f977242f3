//! The accept loop and the per-connection request loop (keep-alive, optional TLS).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::endpoints;
use super::http::{self, ReadError, Response};
use super::reply;
use super::state::Shared;

/// Accepts connections until the task is aborted. Connection tasks live in a `JoinSet` owned by this
/// future, so aborting it aborts every connection too: nothing outlives the fake.
pub(crate) async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream, tls.clone(), shared.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::debug!(%error, "fake identity: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    match tls {
        None => serve_connection(stream, &shared).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(stream) => serve_connection(stream, &shared).await,
            Err(error) => tracing::debug!(%error, "fake identity: TLS handshake failed"),
        },
    }
}

/// Answers requests on one connection until either side closes it.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, shared: &Shared) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let request = match http::read_request(&mut io, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(ReadError::Bad(status, why)) => {
                let response = Response::with_body(status, "text/plain; charset=utf-8", why);
                let _ = response.write_to(&mut io, false).await;
                return;
            }
            Err(ReadError::Io(error)) => {
                tracing::debug!(%error, "fake identity: reading a request failed");
                return;
            }
        };
        let keep_alive = request.keep_alive;
        let answer = endpoints::respond(shared, &request, Instant::now());
        match reply::send(&mut io, answer, keep_alive).await {
            Ok(true) => {}
            Ok(false) => {
                // A clean close (TLS close_notify, TCP FIN) after answers that end the connection.
                let _ = io.shutdown().await;
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "fake identity: writing a response failed");
                return;
            }
        }
    }
}
