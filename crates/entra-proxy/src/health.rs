//! The health listener: HTTP/1.1 (hyper) on an address of its own, apart from the PostgreSQL listeners,
//! answering `GET` and `HEAD` on
//! - `/startup`: 200 once [`start`](crate::ProxyBuilder::start) has finished (the plan is valid, the
//!   first token fetched, the listeners bound, the connection test passed if asked for), and from then on;
//!   503 before;
//! - `/liveness`: 200 while the proxy serves, while it starts and drains too; 503 only if the loop that
//!   accepts clients has ended though nobody stopped the proxy;
//! - `/readiness`: 200 while new sessions can be admitted (started, not draining, accepting) and the
//!   token is usable for at least the readiness margin; 503 otherwise, with the reason as a line of text
//!   ([`NotReady`](crate::NotReady));
//! - `/metrics`: the Prometheus text format ([`crate::metrics`]).
//!
//! It reveals no secret, role or database: only whether the proxy is up and its counts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::state::ProxyState;

/// At most this many health connections at once (probes and scrapes are a few); more wait in the
/// kernel's listen queue.
const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long at most (one request each: keep-alive is off, so a client
/// holds a place only while its one request is read and answered).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// How long the answer in flight may take once a connection is to close.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves health requests on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let next = async {
            // The semaphore is never closed: this task owns it.
            let place = places.clone().acquire_owned().await.ok();
            (place, listener.accept().await)
        };
        tokio::select! {
            (place, accepted) = next => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    connections.spawn(async move {
                        connection(stream, state).await;
                        drop(place);
                    });
                }
                Err(e) => {
                    drop(place);
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "proxy: health listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One HTTP/1.1 connection.
async fn connection(stream: TcpStream, state: Arc<ProxyState>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let answer = answer(&state, request.method(), request.uri().path());
        async move { Ok::<_, Infallible>(answer) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // One request per connection: kubelet probes connect anew each time, Prometheus reconnects at
        // its next scrape, and a client that keeps a connection busy with request after request cannot
        // hold one of the places (a few such clients would otherwise keep the probes out).
        .keep_alive(false);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            served.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_BOUND, served).await;
        }
    }
}

/// The answer to `method path`.
pub(crate) fn answer(state: &ProxyState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/startup" if state.is_started() => text(StatusCode::OK, "started\n".into()),
        "/startup" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n".into()),
        "/liveness" => verdict(state.liveness()),
        "/readiness" => verdict(state.readiness()),
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics_text());
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /startup, /liveness, /readiness or /metrics\n".into(),
        ),
    }
}

fn verdict(result: Result<(), crate::NotReady>) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    // A probe's answer is about this moment: no cache along the way may keep it.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProxyMetrics;

    fn state() -> ProxyState {
        ProxyState::new(ProxyMetrics::new(None), Duration::from_secs(30))
    }

    #[test]
    fn each_endpoint_answers_while_the_proxy_starts() {
        let state = state();
        let status = |path| answer(&state, &Method::GET, path).status();
        assert_eq!(status("/startup"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/liveness"), StatusCode::OK);
        assert_eq!(status("/readiness"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/metrics"), StatusCode::OK);
        assert_eq!(status("/"), StatusCode::NOT_FOUND);
    }

    #[test]
    fn only_get_and_head_are_answered() {
        let state = state();
        assert_eq!(
            answer(&state, &Method::HEAD, "/liveness").status(),
            StatusCode::OK
        );
        let post = answer(&state, &Method::POST, "/liveness");
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
    }
}
