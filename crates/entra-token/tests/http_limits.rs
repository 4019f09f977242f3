//! What the HTTP client refuses: redirects, oversized and truncated bodies, endpoints that never answer;
//! and that no error or `Debug` output carries a token.

mod common;

use std::time::Duration;

use common::{assert_hides, http};
use entra_emulator::{FakeIdentity, Fault};
use entra_token::{HttpOptions, ImdsSource, TokenError, TokenSource, OSSRDBMS_SCOPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hang prevention only: far above what any step here takes (the request timeouts below are 1 s).
const HANG: Duration = Duration::from_secs(30);

fn imds_at(base: String, options: HttpOptions) -> ImdsSource {
    ImdsSource::builder()
        .endpoint(base)
        .http_options(options)
        .build()
        .unwrap()
}

fn imds(fake: &FakeIdentity) -> ImdsSource {
    imds_at(fake.imds_authority(), http())
}

#[tokio::test]
async fn a_redirect_is_refused_naming_its_location() {
    let fake = FakeIdentity::start().await.unwrap();
    let elsewhere = format!("{}/somewhere/else", fake.base_url());
    fake.push_faults([Fault::Redirect(elsewhere.clone())]);
    let err = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    assert!(err.to_string().contains(&elsewhere), "{err}");
    assert_eq!(fake.requests().len(), 1, "the redirect was not followed");
}

#[tokio::test]
async fn a_ten_megabyte_body_is_refused() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Oversized(10 * 1024 * 1024)]);
    let err = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than 65536 bytes"), "{err}");
}

/// A server that streams `total` bytes of a token-looking body with chunked encoding (no
/// `Content-Length`), returning how many body bytes it managed to write before the client hung up.
async fn chunked_server(total: usize) -> (String, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8192];
        let _ = socket.read(&mut buf).await.unwrap();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = vec![b'a'; 16 * 1024];
        let mut written = 0;
        let prefix = br#"{"access_token":""#;
        let first = format!("{:x}\r\n", prefix.len());
        let _ = socket.write_all(first.as_bytes()).await;
        let _ = socket.write_all(prefix).await;
        let _ = socket.write_all(b"\r\n").await;
        while written < total {
            let frame = format!("{:x}\r\n", chunk.len());
            let ok = socket.write_all(frame.as_bytes()).await.is_ok()
                && socket.write_all(&chunk).await.is_ok()
                && socket.write_all(b"\r\n").await.is_ok();
            if !ok {
                return written;
            }
            written += chunk.len();
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
        written
    });
    (base, task)
}

#[tokio::test]
async fn a_chunked_ten_megabyte_body_is_cut_off_without_being_read() {
    let total = 10 * 1024 * 1024;
    let (base, server) = chunked_server(total).await;
    let err = imds_at(base, http()).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("larger than"), "{err}");
    let written = tokio::time::timeout(HANG, server)
        .await
        .expect("the server noticed the client hung up")
        .unwrap();
    assert!(
        written < total,
        "the client read the whole body ({written} bytes)"
    );
}

#[tokio::test]
async fn a_smaller_cap_is_honoured() {
    let fake = FakeIdentity::builder().token_padding(4096).start().await.unwrap();
    let mut options = http();
    options.max_body_bytes = 1024;
    let err = imds_at(fake.imds_authority(), options)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    // The same token fits the default cap.
    imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap();
}

#[tokio::test]
async fn a_server_that_never_answers_fails_within_the_timeout() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::NoResponse]);
    let mut options = http();
    options.timeout = Duration::from_secs(1);
    let source = imds_at(fake.imds_authority(), options);
    let err = tokio::time::timeout(HANG, source.fetch(OSSRDBMS_SCOPE))
        .await
        .expect("the request's timeout ends the fetch")
        .unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no response within the timeout"),
        "{err}"
    );
}

#[tokio::test]
async fn a_body_slower_than_the_timeout_fails() {
    let fake = FakeIdentity::start().await.unwrap();
    // Ten minutes for the body: only the request's timeout can end this fetch before the hang bound.
    fake.push_faults([Fault::SlowBody(Duration::from_secs(600))]);
    let mut options = http();
    options.timeout = Duration::from_secs(1);
    let source = imds_at(fake.imds_authority(), options);
    let err = tokio::time::timeout(HANG, source.fetch(OSSRDBMS_SCOPE))
        .await
        .expect("the request's timeout ends the fetch")
        .unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out reading the body"), "{err}");
}

#[tokio::test]
async fn a_truncated_body_is_a_clear_error() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Truncated]);
    let err = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    assert!(err.to_string().contains("cut short"), "{err}");
}

#[tokio::test]
async fn a_closed_connection_is_transient() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    source.fetch(OSSRDBMS_SCOPE).await.unwrap(); // IMDS has answered: a drop now is a blip.
    fake.push_faults([Fault::Close]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn no_error_or_debug_output_carries_the_token() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    let token = source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let secret = token.secret().to_string();
    assert!(!format!("{token:?} {token} {source:?}").contains(&secret));

    let leaky = "eyJhbGciOiJSUzI1NiJ9.LEAKED-PAYLOAD.sig";
    let bodies = [
        // Good token, broken expiry.
        Fault::Json(serde_json::json!({"access_token": leaky, "expires_in": "tomorrow"})),
        Fault::Json(serde_json::json!({"access_token": leaky})),
        // A token in an error body.
        Fault::Status {
            status: 500,
            body: format!(r#"{{"access_token":"{leaky}"}}"#),
            retry_after: None,
        },
        Fault::Status {
            status: 400,
            body: format!(r#"{{"error":"x","accessToken":"{leaky}"}}"#),
            retry_after: None,
        },
        Fault::Status {
            status: 403,
            body: format!("unreachable {leaky}"),
            retry_after: None,
        },
        Fault::Status {
            status: 418,
            body: format!("plain {leaky}"),
            retry_after: None,
        },
    ];
    for fault in bodies {
        fake.push_faults([fault.clone()]);
        let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
        assert_hides(&err, "LEAKED-PAYLOAD");
        assert_hides(&err, leaky);
    }
}
