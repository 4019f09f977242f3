//! Driving `FakeIdentity` over real HTTP on loopback, shared by the `identity_*` test files: starting a
//! fake, reqwest clients, one request builder per endpoint with the query a well-behaved client sends,
//! and reading the answers (JSON bodies, verified token claims).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use entra_emulator::identity::{FakeIdentity, ManagedIdentity, ServicePrincipal};
use entra_emulator::OSSRDBMS_RESOURCE;
use serde_json::Value;

/// The one scope Entra accepts for Azure Database for PostgreSQL.
pub const SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Upper bound for anything that might hang; far above what a passing test takes, even on a busy machine.
pub const HANG_GUARD: Duration = Duration::from_secs(60);
/// What a well-behaved IMDS client asks for: the oldest supported api-version and the database resource.
pub const IMDS_QUERY: [(&str, &str); 2] = [("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)];
/// What a well-behaved App Service client asks for.
pub const APP_SERVICE_QUERY: [(&str, &str); 2] =
    [("api-version", "2019-08-01"), ("resource", OSSRDBMS_RESOURCE)];

// ---------------------------------------------------------------- Starting a fake

/// A fake with the defaults: a system-assigned identity, no apps, plain HTTP.
pub async fn start() -> FakeIdentity {
    FakeIdentity::start().await.unwrap()
}

/// A fake with the system-assigned identity and `identity` assigned to it.
pub async fn start_with_identity(identity: &ManagedIdentity) -> FakeIdentity {
    FakeIdentity::builder()
        .identity(identity.clone())
        .start()
        .await
        .unwrap()
}

/// A fake whose tenant has `app` registered.
pub async fn start_with_app(app: &ServicePrincipal) -> FakeIdentity {
    FakeIdentity::builder().app(app.clone()).start().await.unwrap()
}

// ---------------------------------------------------------------- Clients

/// A rustls client configuration (ring provider) that trusts exactly `roots`.
pub fn rustls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn builder(roots: rustls::RootCertStore) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HANG_GUARD)
        .tls_backend_preconfigured(rustls_config(roots))
}

/// A plain-HTTP client (TLS configured with no roots, since reqwest is built without a default provider).
pub fn client() -> reqwest::Client {
    builder(rustls::RootCertStore::empty()).build().unwrap()
}

pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    builder(rustls::RootCertStore::empty())
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A client that trusts exactly the certificates in `ca_pem`.
pub fn tls_client(ca_pem: &str) -> reqwest::Client {
    builder(roots(ca_pem.as_bytes())).build().unwrap()
}

/// Exactly the certificates in `pem` (at least one).
pub fn roots(pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    assert!(!roots.is_empty(), "no certificate in the PEM");
    roots
}

// ---------------------------------------------------------------- Processes

/// Processes whose command line mentions `needle` (the postmaster is started with `-D <data dir>`).
pub fn processes_mentioning(needle: &std::path::Path) -> Vec<u32> {
    let needle = needle.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

// ---------------------------------------------------------------- IMDS

/// A GET to IMDS with the `Metadata: true` header and exactly `query`, not yet sent.
pub fn imds_get(
    client: &reqwest::Client,
    fake: &FakeIdentity,
    query: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    client
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(query)
}

/// A well-formed IMDS request ([`IMDS_QUERY`] then `extra`), sent.
pub async fn imds(fake: &FakeIdentity, extra: &[(&str, &str)]) -> reqwest::Response {
    imds_get(&client(), fake, &IMDS_QUERY)
        .query(extra)
        .send()
        .await
        .unwrap()
}

pub async fn imds_json(fake: &FakeIdentity, extra: &[(&str, &str)]) -> (u16, Value) {
    json_of(imds(fake, extra).await).await
}

/// An IMDS request that is well-formed except for the missing `Metadata` header.
pub async fn imds_without_metadata(fake: &FakeIdentity) -> reqwest::Response {
    client()
        .get(fake.imds_endpoint())
        .query(&IMDS_QUERY)
        .send()
        .await
        .unwrap()
}

// ---------------------------------------------------------------- App Service

/// A well-formed App Service request ([`APP_SERVICE_QUERY`] then `extra`) with `X-IDENTITY-HEADER: header`.
pub async fn app_service(fake: &FakeIdentity, header: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(fake.app_service_endpoint())
        .header("X-IDENTITY-HEADER", header)
        .query(&APP_SERVICE_QUERY)
        .query(extra)
        .send()
        .await
        .unwrap()
}

pub async fn app_service_json(fake: &FakeIdentity, header: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    json_of(app_service(fake, header, extra).await).await
}

// ---------------------------------------------------------------- Entra ID v2

/// A POST of `form` to `{authority}/{tenant}/oauth2/v2.0/token`.
pub async fn entra(fake: &FakeIdentity, tenant: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", fake.authority_host()))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// A client-credentials request with the secret in the form.
pub async fn secret_grant(
    fake: &FakeIdentity,
    tenant: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    entra(
        fake,
        tenant,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await
}

// ---------------------------------------------------------------- Reading answers

/// The status and the body, which must be JSON.
pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// The access token's claims, verified with the fake's issuer for `audience`.
pub fn claims_of(fake: &FakeIdentity, body: &Value, audience: &str) -> entra_emulator::Claims {
    let token = body["access_token"].as_str().expect("access_token string");
    fake.issuer()
        .verify(token, audience, Duration::from_secs(5))
        .unwrap()
}

/// `body[field]`, which must be a string holding a whole number (how IMDS sends numbers).
pub fn number_string(body: &Value, field: &str) -> u64 {
    let text = body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} not a string: {body}"));
    text.parse()
        .unwrap_or_else(|e| panic!("{field} not a number ({e}): {text}"))
}
