//! Asking a local HTTP endpoint (the proxy's health listener) as a probe or a scraper would: one
//! `GET` per connection, over HTTP/1.1 (hyper's client), bounded against hangs.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// `GET path` on `address`: the status and the body as text, or why there was no answer (nothing
/// listening, a closed connection). A request that takes longer than 30 s fails the test.
pub async fn get(address: SocketAddr, path: &str) -> Result<(u16, String), String> {
    crate::bounded(30, &format!("GET {path} on {address}"), async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {address}: {e}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, address.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body of GET {path}: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
    .await
}

/// [`get`] from synchronous code (a test driving the `entra-pg` binary).
pub fn get_blocking(address: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(get(address, path))
}

/// Polls `GET path` every 20 ms until `wanted(status, body)` holds, and returns that answer; fails the
/// test after `secs` seconds (a bound that only catches a hang).
pub async fn until_answer(
    secs: u64,
    address: SocketAddr,
    path: &str,
    mut wanted: impl FnMut(u16, &str) -> bool,
) -> (u16, String) {
    let mut last = Err(String::from("no answer yet"));
    let waited = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            last = get(address, path).await;
            if let Ok((status, body)) = &last {
                if wanted(*status, body) {
                    return (*status, body.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match waited {
        Ok(answer) => answer,
        Err(_) => {
            panic!("GET {path} on {address} did not give the awaited answer within {secs} s; last: {last:?}")
        }
    }
}

/// [`until_answer`] from synchronous code.
pub fn until_answer_blocking(
    secs: u64,
    address: SocketAddr,
    path: &str,
    wanted: impl FnMut(u16, &str) -> bool,
) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the probe");
    runtime.block_on(until_answer(secs, address, path, wanted))
}
