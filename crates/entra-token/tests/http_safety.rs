//! Token requests never go through a proxy. This binary sets the proxy variables of the whole process
//! to a dead address, so it holds this single test and nothing else.

mod common;

use std::sync::Arc;

use common::{env, http, tls_http};
use entra_emulator::{FakeIdentity, ServicePrincipal};
use entra_token::{AppServiceSource, ClientSecretSource, ImdsSource, TokenSource, OSSRDBMS_SCOPE};

/// Port 9 (discard) on loopback: nothing listens, so anything sent through this "proxy" fails.
const DEAD_PROXY: &str = "http://127.0.0.1:9";
const PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

#[tokio::test]
async fn proxy_variables_pointing_at_a_dead_proxy_change_nothing() {
    for var in PROXY_VARS {
        std::env::set_var(var, DEAD_PROXY);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    let fake = FakeIdentity::start().await.unwrap();
    let tls_fake = FakeIdentity::builder().tls(true).start().await.unwrap();
    let app = ServicePrincipal::with_secret("proxy-app", "proxy-secret");
    tls_fake.add_app(app.clone());

    // Control: a client that honours the variables cannot reach the fake, so they are in effect.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let proxied = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap();
    assert!(
        proxied.get(fake.imds_endpoint()).send().await.is_err(),
        "the control client should have tried the dead proxy"
    );
    assert!(fake.requests().is_empty());

    let mut pairs: Vec<(&str, String)> = PROXY_VARS.iter().map(|v| (*v, DEAD_PROXY.to_string())).collect();
    pairs.push(("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.imds_authority()));
    pairs.push(("IDENTITY_ENDPOINT", fake.app_service_endpoint()));
    pairs.push(("IDENTITY_HEADER", fake.identity_header()));
    let e = env(&pairs);

    let imds = ImdsSource::builder()
        .env(e.clone())
        .http_options(http())
        .build()
        .unwrap();
    imds.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let app_service = AppServiceSource::builder()
        .env(e)
        .http_options(http())
        .build()
        .unwrap();
    app_service.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);

    let mut pairs: Vec<(&str, String)> = PROXY_VARS.iter().map(|v| (*v, DEAD_PROXY.to_string())).collect();
    pairs.push(("AZURE_TENANT_ID", tls_fake.tenant_id().to_string()));
    pairs.push(("AZURE_CLIENT_ID", app.client_id.clone()));
    pairs.push(("AZURE_CLIENT_SECRET", "proxy-secret".to_string()));
    pairs.push(("AZURE_AUTHORITY_HOST", tls_fake.authority_host()));
    let secret = ClientSecretSource::from_env(&env(&pairs), tls_http(&tls_fake)).unwrap();
    secret.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(tls_fake.tokens_issued(), 1);
}
