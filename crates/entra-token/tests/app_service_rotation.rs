//! App Service rotates `IDENTITY_HEADER`: the source must read it at every request. Uses the process
//! environment (the only test here that does), so it lives alone in this binary.

mod common;

use common::http;
use entra_emulator::FakeIdentity;
use entra_token::{AppServiceSource, Env, TokenSource, OSSRDBMS_SCOPE};

#[tokio::test]
async fn identity_header_is_reread_on_every_request() {
    let fake = FakeIdentity::start().await.unwrap();
    std::env::set_var("IDENTITY_ENDPOINT", fake.app_service_endpoint());
    std::env::set_var("IDENTITY_HEADER", fake.identity_header());
    let source = AppServiceSource::builder()
        .env(Env::process())
        .http_options(http())
        .build()
        .unwrap();
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();

    let rotated = fake.rotate_identity_header();
    // The platform restarts the worker's environment with the new value.
    std::env::set_var("IDENTITY_HEADER", &rotated);
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();

    let sent: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.header("x-identity-header").unwrap_or_default().to_string())
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1], rotated);
    assert_ne!(sent[0], sent[1]);
    assert_eq!(fake.tokens_issued(), 2);
}
