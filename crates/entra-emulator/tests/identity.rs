//! The fake token endpoints, driven over real HTTP on loopback with reqwest as a plain client.

use std::sync::Arc;
use std::time::Duration;

use entra_emulator::identity::{
    Endpoint, FakeIdentity, Fault, ManagedIdentity, NumberFormat, ServicePrincipal,
};
use entra_emulator::{OSSRDBMS_RESOURCE, TEST_TENANT_ID};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Upper bound for anything that might hang; far above what a passing test takes.
const HANG_GUARD: Duration = Duration::from_secs(5);

fn rustls_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
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
fn client() -> reqwest::Client {
    builder(rustls::RootCertStore::empty()).build().unwrap()
}

fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    builder(rustls::RootCertStore::empty())
        .timeout(timeout)
        .build()
        .unwrap()
}

fn tls_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    builder(roots).build().unwrap()
}

async fn imds(fake: &FakeIdentity, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut query = vec![("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)];
    query.extend_from_slice(extra);
    client()
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&query)
        .send()
        .await
        .unwrap()
}

async fn app_service(fake: &FakeIdentity, header: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut query = vec![("api-version", "2019-08-01"), ("resource", OSSRDBMS_RESOURCE)];
    query.extend_from_slice(extra);
    client()
        .get(fake.app_service_endpoint())
        .header("X-IDENTITY-HEADER", header)
        .query(&query)
        .send()
        .await
        .unwrap()
}

async fn entra(fake: &FakeIdentity, tenant: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", fake.authority_host()))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// The access token's claims, verified with the fake's issuer for `audience`.
fn claims_of(fake: &FakeIdentity, body: &Value, audience: &str) -> entra_emulator::Claims {
    let token = body["access_token"].as_str().expect("access_token string");
    fake.issuer()
        .verify(token, audience, Duration::from_secs(5))
        .unwrap()
}

// ---------------------------------------------------------------- IMDS

#[tokio::test]
async fn imds_issues_the_system_identity_token_with_every_number_a_string() {
    let fake = FakeIdentity::start().await.unwrap();
    let (status, body) = json_of(imds(&fake, &[]).await).await;
    assert_eq!(status, 200, "{body}");
    let system = fake.system_identity();
    for field in ["expires_in", "expires_on", "not_before"] {
        let text = body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} not a string: {body}"));
        assert!(text.parse::<u64>().is_ok(), "{field}: {text}");
    }
    assert_eq!(body["refresh_token"], "");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], OSSRDBMS_RESOURCE);
    assert_eq!(body["client_id"], system.client_id.as_str());
    let claims = claims_of(&fake, &body, OSSRDBMS_RESOURCE);
    assert_eq!(claims.oid, system.object_id);
    assert_eq!(claims.appid.as_deref(), Some(system.client_id.as_str()));
    assert_eq!(claims.xms_mirid.as_deref(), Some(system.resource_id.as_str()));
    assert_eq!(body["expires_on"].as_str().unwrap(), claims.exp.to_string());
    let expires_in: u64 = body["expires_in"].as_str().unwrap().parse().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn imds_selects_user_assigned_identities_by_client_object_or_resource_id() {
    let user = ManagedIdentity::new("api-identity");
    let fake = FakeIdentity::builder()
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    for (param, value) in [
        ("client_id", user.client_id.clone()),
        ("object_id", user.object_id.clone()),
        ("msi_res_id", user.resource_id.clone()),
        ("client_id", user.client_id.to_uppercase()),
    ] {
        let (status, body) = json_of(imds(&fake, &[(param, &value)]).await).await;
        assert_eq!(status, 200, "{param}: {body}");
        assert_eq!(body["client_id"], user.client_id.as_str());
        assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    }
}

#[tokio::test]
async fn imds_identities_added_after_start_are_served() {
    let fake = FakeIdentity::start().await.unwrap();
    let late = ManagedIdentity::new("late");
    let (status, _) = json_of(imds(&fake, &[("client_id", &late.client_id)]).await).await;
    assert_eq!(status, 400);
    fake.add_identity(late.clone());
    let (status, body) = json_of(imds(&fake, &[("client_id", &late.client_id)]).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn imds_without_the_metadata_header_is_bad_request_102() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.imds_endpoint())
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request_102");
    assert_eq!(
        body["error_description"],
        "Required metadata header not specified"
    );
}

#[tokio::test]
async fn imds_accepts_2018_and_2019_api_versions_and_refuses_missing_or_older() {
    let fake = FakeIdentity::start().await.unwrap();
    for version in ["2018-02-01", "2019-08-01"] {
        let response = client()
            .get(fake.imds_endpoint())
            .header("Metadata", "true")
            .query(&[("api-version", version), ("resource", OSSRDBMS_RESOURCE)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{version}");
    }
    for query in [
        vec![("resource", OSSRDBMS_RESOURCE)],
        vec![("api-version", "2017-12-01"), ("resource", OSSRDBMS_RESOURCE)],
    ] {
        let response = client()
            .get(fake.imds_endpoint())
            .header("Metadata", "true")
            .query(&query)
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{query:?}");
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn imds_without_resource_is_refused() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2018-02-01")])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn imds_unknown_identity_is_identity_not_found() {
    let fake = FakeIdentity::start().await.unwrap();
    let stranger = ManagedIdentity::new("not-assigned");
    let (status, body) = json_of(imds(&fake, &[("client_id", &stranger.client_id)]).await).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
}

#[tokio::test]
async fn imds_refuses_more_than_one_identity_selector() {
    let user = ManagedIdentity::new("u");
    let fake = FakeIdentity::builder()
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    let (status, body) = json_of(
        imds(
            &fake,
            &[("client_id", &user.client_id), ("object_id", &user.object_id)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn imds_without_a_system_identity_answers_identity_not_found() {
    let user = ManagedIdentity::new("only-user");
    let fake = FakeIdentity::builder()
        .system_assigned(false)
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    let (status, body) = json_of(imds(&fake, &[]).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_description"], "Identity not found");
    let (status, _) = json_of(imds(&fake, &[("client_id", &user.client_id)]).await).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_wrong_resource_yields_a_token_for_that_audience() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", "https://management.azure.com"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200);
    let token = body["access_token"].as_str().unwrap();
    assert!(fake
        .issuer()
        .verify(token, OSSRDBMS_RESOURCE, Duration::ZERO)
        .is_err());
    assert!(fake
        .issuer()
        .verify(token, "https://management.azure.com", Duration::ZERO)
        .is_ok());
}

#[tokio::test]
async fn token_padding_and_lifetime_apply_to_later_tokens() {
    let fake = FakeIdentity::builder().token_padding(5000).start().await.unwrap();
    let (_, body) = json_of(imds(&fake, &[]).await).await;
    assert!(body["access_token"].as_str().unwrap().len() >= 5000);
    fake.set_token_padding(0);
    fake.set_token_lifetime(Duration::from_secs(120));
    let (_, body) = json_of(imds(&fake, &[]).await).await;
    assert!(body["access_token"].as_str().unwrap().len() < 4000);
    let expires_in: u64 = body["expires_in"].as_str().unwrap().parse().unwrap();
    assert!((110..=120).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn number_format_switches_between_strings_numbers_and_dates() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.set_number_format(NumberFormat::Numbers);
    let (_, body) = json_of(imds(&fake, &[]).await).await;
    assert!(
        body["expires_on"].is_u64() && body["expires_in"].is_u64(),
        "{body}"
    );
    fake.set_number_format(NumberFormat::Dates);
    let (_, body) = json_of(imds(&fake, &[]).await).await;
    let date = body["expires_on"].as_str().unwrap();
    assert!(date.ends_with(" +00:00") && date.as_bytes()[2] == b'/', "{date}");
    fake.set_number_format(NumberFormat::Strings);
    let app = ServicePrincipal::with_secret("s", "pw");
    fake.add_app(app.clone());
    let (status, body) = json_of(
        entra(
            &fake,
            TEST_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app.client_id),
                ("client_secret", "pw"),
                ("scope", SCOPE),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body["expires_in"].is_string(), "{body}");
}

// ---------------------------------------------------------------- App Service

#[tokio::test]
async fn app_service_issues_tokens_with_expires_on_as_an_epoch_string() {
    let fake = FakeIdentity::start().await.unwrap();
    let (status, body) = json_of(app_service(&fake, &fake.identity_header(), &[]).await).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(&fake, &body, OSSRDBMS_RESOURCE);
    assert_eq!(body["expires_on"], json!(claims.exp.to_string()));
    assert_eq!(body["client_id"], fake.system_identity().client_id.as_str());
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("expires_in").is_none(), "{body}");
}

#[tokio::test]
async fn app_service_selects_user_assigned_by_client_principal_object_or_mi_res_id() {
    let user = ManagedIdentity::new("web");
    let fake = FakeIdentity::builder()
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    let header = fake.identity_header();
    for (param, value) in [
        ("client_id", &user.client_id),
        ("principal_id", &user.object_id),
        ("object_id", &user.object_id),
        ("mi_res_id", &user.resource_id),
    ] {
        let (status, body) = json_of(app_service(&fake, &header, &[(param, value)]).await).await;
        assert_eq!(status, 200, "{param}: {body}");
        assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    }
}

#[tokio::test]
async fn app_service_refuses_msi_res_id() {
    let user = ManagedIdentity::new("web");
    let fake = FakeIdentity::builder()
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    let (status, body) = json_of(
        app_service(
            &fake,
            &fake.identity_header(),
            &[("msi_res_id", &user.resource_id)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["statusCode"], 400);
    assert!(body["message"].as_str().unwrap().contains("mi_res_id"));
}

#[tokio::test]
async fn app_service_refuses_a_missing_or_wrong_identity_header() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.app_service_endpoint())
        .query(&[("api-version", "2019-08-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = json_of(app_service(&fake, "not-the-header", &[]).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["statusCode"], 401);
}

#[tokio::test]
async fn app_service_refuses_the_old_header_after_rotation() {
    let fake = FakeIdentity::start().await.unwrap();
    let old = fake.identity_header();
    let new = fake.rotate_identity_header();
    assert_ne!(old, new);
    assert_eq!(fake.identity_header(), new);
    assert_eq!(app_service(&fake, &old, &[]).await.status(), 401);
    assert_eq!(app_service(&fake, &new, &[]).await.status(), 200);
}

#[tokio::test]
async fn app_service_refuses_other_api_versions_and_unknown_identities() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.app_service_endpoint())
        .header("X-IDENTITY-HEADER", fake.identity_header())
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let stranger = ManagedIdentity::new("stranger");
    let (status, _) = json_of(
        app_service(
            &fake,
            &fake.identity_header(),
            &[("client_id", &stranger.client_id)],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn legacy_msi_answers_expires_on_as_a_date() {
    let user = ManagedIdentity::new("ml");
    let fake = FakeIdentity::builder()
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    let legacy = |secret: String, extra: Vec<(&'static str, String)>| {
        let mut query = vec![
            ("api-version", "2017-09-01".to_string()),
            ("resource", OSSRDBMS_RESOURCE.to_string()),
        ];
        query.extend(extra);
        client()
            .get(fake.app_service_endpoint())
            .header("secret", secret)
            .query(&query)
            .send()
    };
    let (status, body) = json_of(legacy(fake.legacy_msi_secret(), vec![]).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let date = body["expires_on"].as_str().unwrap();
    // "MM/DD/YYYY HH:MM:SS +00:00"
    assert_eq!(date.len(), 26, "{date}");
    assert_eq!(&date[2..3], "/");
    assert!(date.ends_with(" +00:00"));
    let (status, body) = json_of(
        legacy(
            fake.legacy_msi_secret(),
            vec![("clientid", user.client_id.clone())],
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    assert_eq!(legacy("wrong".into(), vec![]).await.unwrap().status(), 401);
    assert_eq!(fake.requests()[0].endpoint, Endpoint::AppServiceLegacy);
}

// ---------------------------------------------------------------- Arc

async fn arc(fake: &FakeIdentity, authorization: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .get(fake.arc_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2020-06-01"), ("resource", OSSRDBMS_RESOURCE)]);
    if let Some(auth) = authorization {
        request = request.header("Authorization", auth);
    }
    request.send().await.unwrap()
}

/// The key file named by a 401's `WWW-Authenticate: Basic realm=<path>`, checked as clients must.
fn challenge_key(fake: &FakeIdentity, response: &reqwest::Response) -> String {
    assert_eq!(response.status(), 401);
    let header = response.headers()["www-authenticate"].to_str().unwrap();
    let path = std::path::PathBuf::from(header.strip_prefix("Basic realm=").unwrap());
    assert_eq!(path.parent().unwrap(), fake.arc_key_dir());
    assert_eq!(path.extension().unwrap(), "key");
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(!key.is_empty() && key.len() < 4096);
    key
}

#[tokio::test]
async fn arc_challenges_with_a_key_file_and_accepts_its_contents() {
    let fake = FakeIdentity::start().await.unwrap();
    let challenge = arc(&fake, None).await;
    let key = challenge_key(&fake, &challenge);
    let (status, body) = json_of(arc(&fake, Some(&format!("Basic {key}"))).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_on"].is_string() && body["expires_in"].is_string());
    assert_eq!(
        claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid,
        fake.system_identity().object_id
    );
}

#[tokio::test]
async fn arc_refuses_a_wrong_or_superseded_key_with_a_new_challenge() {
    let fake = FakeIdentity::start().await.unwrap();
    let first = challenge_key(&fake, &arc(&fake, None).await);
    let wrong = arc(&fake, Some("Basic 00112233")).await;
    let second = challenge_key(&fake, &wrong);
    assert_ne!(first, second);
    assert_eq!(arc(&fake, Some(&format!("Basic {first}"))).await.status(), 401);
    let third = challenge_key(&fake, &arc(&fake, None).await);
    assert_eq!(arc(&fake, Some(&format!("Basic {third}"))).await.status(), 200);
}

#[tokio::test]
async fn arc_requires_metadata_and_a_supported_api_version() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.arc_endpoint())
        .query(&[("api-version", "2020-06-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request_102");
    let response = client()
        .get(fake.arc_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2019-08-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client()
        .get(fake.arc_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2021-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

// ---------------------------------------------------------------- Cloud Shell

#[tokio::test]
async fn cloud_shell_issues_tokens_for_a_form_posted_resource() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .post(fake.cloud_shell_endpoint())
        .header("Metadata", "true")
        .form(&[("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_on"].is_string());
    claims_of(&fake, &body, OSSRDBMS_RESOURCE);
}

#[tokio::test]
async fn cloud_shell_requires_metadata_a_resource_and_post() {
    let fake = FakeIdentity::start().await.unwrap();
    let no_metadata = client()
        .post(fake.cloud_shell_endpoint())
        .form(&[("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(no_metadata).await.1["error"], "bad_request_102");
    let no_resource = client()
        .post(fake.cloud_shell_endpoint())
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(no_resource.status(), 400);
    let get = client()
        .get(fake.cloud_shell_endpoint())
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

// ---------------------------------------------------------------- Entra v2

fn assert_aad_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}:")),
        "{description}"
    );
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
}

#[tokio::test]
async fn client_secret_issues_an_entra_token_with_numbers() {
    let app = ServicePrincipal::with_secret("reporting", "s3cret");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let (status, body) = json_of(
        entra(
            &fake,
            fake.tenant_id(),
            &[
                ("client_id", &app.client_id),
                ("client_secret", "s3cret"),
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["expires_in"].is_u64() && body["ext_expires_in"].is_u64(),
        "{body}"
    );
    let claims = claims_of(&fake, &body, OSSRDBMS_RESOURCE);
    assert_eq!(claims.oid, app.object_id);
    assert_eq!(claims.appid.as_deref(), Some(app.client_id.as_str()));
    assert_eq!(claims.xms_mirid, None);
}

#[tokio::test]
async fn client_secret_is_also_accepted_as_http_basic() {
    let app = ServicePrincipal::with_secret("basic", "p@ss:word");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let response = client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            fake.authority_host(),
            fake.tenant_id()
        ))
        // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        .basic_auth(&app.client_id, Some("p%40ss%3Aword"))
        .form(&[("grant_type", "client_credentials"), ("scope", SCOPE)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_client_7000215() {
    let app = ServicePrincipal::with_secret("a", "right");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let (status, body) = json_of(
        entra(
            &fake,
            TEST_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app.client_id),
                ("client_secret", "wrong"),
                ("scope", SCOPE),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 7000215);
    assert!(!body.to_string().contains("right"));
}

#[tokio::test]
async fn an_unknown_client_is_unauthorized_client_700016() {
    let fake = FakeIdentity::start().await.unwrap();
    let (status, body) = json_of(
        entra(
            &fake,
            TEST_TENANT_ID,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "11111111-2222-3333-4444-555555555555"),
                ("client_secret", "x"),
                ("scope", SCOPE),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "unauthorized_client", 700016);
}

#[tokio::test]
async fn an_unknown_tenant_is_90002() {
    let app = ServicePrincipal::with_secret("a", "pw");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let (status, body) = json_of(
        entra(
            &fake,
            "contoso.onmicrosoft.com",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app.client_id),
                ("client_secret", "pw"),
                ("scope", SCOPE),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_request", 90002);
}

#[tokio::test]
async fn scopes_other_than_one_dot_default_are_invalid_scope_70011() {
    let app = ServicePrincipal::with_secret("a", "pw");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    for scope in [
        OSSRDBMS_RESOURCE,
        "https://ossrdbms-aad.database.windows.net/user_impersonation",
        "https://ossrdbms-aad.database.windows.net/.default openid",
    ] {
        let (status, body) = json_of(
            entra(
                &fake,
                TEST_TENANT_ID,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &app.client_id),
                    ("client_secret", "pw"),
                    ("scope", scope),
                ],
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{scope}");
        assert_aad_error(&body, "invalid_scope", 70011);
    }
}

async fn federated(fake: &FakeIdentity, app: &ServicePrincipal, assertion: &str) -> (u16, Value) {
    json_of(
        entra(
            fake,
            TEST_TENANT_ID,
            &[
                ("client_assertion", assertion),
                ("client_assertion_type", JWT_BEARER),
                ("client_id", &app.client_id),
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
            ],
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn a_federated_assertion_with_the_right_subject_gets_a_token() {
    let app = ServicePrincipal::federated("workload", "system:serviceaccount:default:api");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let assertion = fake.federated_assertion("system:serviceaccount:default:api", Duration::from_secs(600));
    let (status, body) = federated(&fake, &app, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, app.object_id);
}

#[tokio::test]
async fn a_federated_assertion_for_another_subject_is_700213() {
    let app = ServicePrincipal::federated("workload", "system:serviceaccount:default:api");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let assertion = fake.federated_assertion("system:serviceaccount:default:other", Duration::from_secs(600));
    let (status, body) = federated(&fake, &app, &assertion).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_client", 700213);
}

#[tokio::test]
async fn an_expired_federated_assertion_is_700024() {
    let app = ServicePrincipal::federated("workload", "sub");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let assertion = fake.federated_assertion("sub", Duration::ZERO);
    let (status, body) = federated(&fake, &app, &assertion).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_client", 700024);
}

#[tokio::test]
async fn a_federated_assertion_signed_by_another_key_is_refused() {
    let app = ServicePrincipal::federated("workload", "sub");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    let forged = fake
        .issuer()
        .sign_untrusted(&entra_emulator::Claims::new("sub", Duration::from_secs(600)));
    let (status, body) = federated(&fake, &app, &forged).await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 700027);
}

// ---------------------------------------------------------------- Faults

#[tokio::test]
async fn queued_faults_apply_to_the_next_token_requests_in_order_then_stop() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::status(503), Fault::throttled(7)]);
    // Unknown paths do not consume faults.
    let other = client()
        .get(format!("{}/nothing", fake.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let first = imds(&fake, &[]).await;
    assert_eq!(first.status(), 503);
    let second = imds(&fake, &[]).await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "7");
    assert_eq!(imds(&fake, &[]).await.status(), 200);
}

#[tokio::test]
async fn a_persistent_fault_applies_to_every_request_until_cleared() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.set_persistent_fault(Some(Fault::Status {
        status: 500,
        body: "<b>down</b>".into(),
        retry_after: None,
    }));
    for _ in 0..3 {
        let response = imds(&fake, &[]).await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.text().await.unwrap(), "<b>down</b>");
    }
    fake.set_persistent_fault(None);
    assert_eq!(imds(&fake, &[]).await.status(), 200);
    assert_eq!(fake.tokens_issued(), 1);
    assert_eq!(fake.token_requests(), 4);
}

#[tokio::test]
async fn delay_answers_normally_after_the_delay() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([
        Fault::Delay(Duration::from_millis(1500)),
        Fault::Delay(Duration::from_millis(50)),
    ]);
    let impatient = client_with_timeout(Duration::from_millis(200))
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout());
    let (status, body) = json_of(imds(&fake, &[]).await).await;
    assert_eq!(status, 200);
    claims_of(&fake, &body, OSSRDBMS_RESOURCE);
}

#[tokio::test]
async fn no_response_holds_the_request_until_the_client_times_out() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::NoResponse]);
    let result = client_with_timeout(Duration::from_secs(1))
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    let log = fake.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].status, 0);
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn close_drops_the_connection_without_an_answer() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Close]);
    let result = client()
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await;
    let error = result.unwrap_err();
    assert!(!error.is_timeout(), "{error}");
    assert_eq!(fake.requests()[0].status, 0);
}

#[tokio::test]
async fn malformed_is_a_200_that_is_not_json() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Malformed]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn html_is_a_500_error_page() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Html]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 500);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(response.text().await.unwrap().contains("<html>"));
}

#[tokio::test]
async fn oversized_streams_a_10_mb_body_in_chunks() {
    let fake = FakeIdentity::start().await.unwrap();
    const SIZE: usize = 10 * 1024 * 1024;
    fake.push_faults([Fault::Oversized(SIZE)]);
    let mut response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(SIZE as u64));
    let (mut total, mut chunks) = (0, 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
        chunks += 1;
    }
    assert_eq!(total, SIZE);
    assert!(chunks > 1, "{chunks}");
}

#[tokio::test]
async fn truncated_gives_the_client_a_body_error() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Truncated]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 200);
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error}");
}

#[tokio::test]
async fn slow_body_trickles_a_valid_answer_in_pieces() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::SlowBody(Duration::from_millis(300))]);
    let mut response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 200);
    let (mut body, mut chunks) = (Vec::new(), 0);
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert!(chunks > 1, "{chunks}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    claims_of(&fake, &body, OSSRDBMS_RESOURCE);
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test]
async fn redirect_is_a_307_with_location() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Redirect("http://169.254.169.254/elsewhere".into())]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], "http://169.254.169.254/elsewhere");
}

#[tokio::test]
async fn json_fault_answers_exactly_that_json() {
    let fake = FakeIdentity::start().await.unwrap();
    let odd = json!({"access_token": 42, "expires_on": null});
    fake.push_faults([Fault::Json(odd.clone())]);
    let (status, body) = json_of(imds(&fake, &[]).await).await;
    assert_eq!(status, 200);
    assert_eq!(body, odd);
    assert_eq!(fake.tokens_issued(), 0);
}

#[tokio::test]
async fn faults_apply_to_every_token_endpoint() {
    let app = ServicePrincipal::with_secret("a", "pw");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    fake.push_faults([Fault::status(502), Fault::status(504)]);
    let response = entra(
        &fake,
        TEST_TENANT_ID,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("client_secret", "pw"),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        app_service(&fake, &fake.identity_header(), &[]).await.status(),
        504
    );
}

// ---------------------------------------------------------------- The request log

#[tokio::test]
async fn the_log_records_every_request_with_its_answer() {
    let fake = FakeIdentity::start().await.unwrap();
    let response = client()
        .get(fake.imds_endpoint())
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    imds(&fake, &[]).await;
    client()
        .get(format!("{}/favicon.ico", fake.base_url()))
        .send()
        .await
        .unwrap();

    let log = fake.requests();
    assert_eq!(log.len(), 3);
    assert_eq!((log[0].endpoint, log[0].status), (Endpoint::Imds, 400));
    assert_eq!((log[1].endpoint, log[1].status), (Endpoint::Imds, 200));
    assert_eq!((log[2].endpoint, log[2].status), (Endpoint::Other, 404));
    assert_eq!(log[1].method, "GET");
    assert_eq!(log[1].path, "/metadata/identity/oauth2/token");
    assert_eq!(log[1].query("resource"), Some(OSSRDBMS_RESOURCE));
    assert_eq!(log[1].header("Metadata"), Some("true"));
    assert!(log[1].headers.iter().all(|(k, _)| *k == k.to_lowercase()));
    assert!(log[0].at <= log[1].at);
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.tokens_issued(), 1);

    fake.clear_log();
    assert!(fake.requests().is_empty());
    assert_eq!((fake.token_requests(), fake.tokens_issued()), (0, 0));
}

#[tokio::test]
async fn the_log_holds_form_fields_but_debug_hides_secrets() {
    let app = ServicePrincipal::with_secret("a", "very-secret-value");
    let fake = FakeIdentity::builder().app(app.clone()).start().await.unwrap();
    entra(
        &fake,
        TEST_TENANT_ID,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("client_secret", "very-secret-value"),
            ("scope", SCOPE),
        ],
    )
    .await;
    let log = fake.requests();
    assert_eq!(log[0].endpoint, Endpoint::EntraToken);
    assert_eq!(log[0].form("client_secret"), Some("very-secret-value"));
    assert_eq!(log[0].form("scope"), Some(SCOPE));
    assert!(!format!("{:?}", log[0]).contains("very-secret-value"));
}

// ---------------------------------------------------------------- The server

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let fake = FakeIdentity::start().await.unwrap();
    let port = fake
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fossrdbms-aad.database.windows.net HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n";
    let last = "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream
        .write_all(format!("{request}{request}{last}").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HANG_GUARD, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 404 Not Found").count(), 1);
    assert_eq!(fake.tokens_issued(), 2);
}

#[tokio::test]
async fn tls_mode_serves_https_for_localhost_with_its_own_ca() {
    let user = ManagedIdentity::new("tls-user");
    let fake = FakeIdentity::builder()
        .tls(true)
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    assert!(fake.base_url().starts_with("https://localhost:"));
    let ca = fake.ca_pem().expect("CA with TLS on");
    let response = tls_client(&ca)
        .get(fake.imds_endpoint())
        .header("Metadata", "true")
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", OSSRDBMS_RESOURCE),
            ("client_id", &user.client_id),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    // A client that does not trust the fake's CA cannot connect.
    let untrusting = client().get(fake.imds_endpoint()).send().await;
    assert!(untrusting.unwrap_err().is_connect());
    assert!(FakeIdentity::start().await.unwrap().ca_pem().is_none());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server_and_frees_its_port() {
    let fake = FakeIdentity::start().await.unwrap();
    let keep = fake.clone();
    let port = fake
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap();
    let key_dir = fake.arc_key_dir();
    drop(fake);
    // A clone keeps it serving.
    assert_eq!(imds(&keep, &[]).await.status(), 200);
    // A held connection must not keep the server alive either.
    keep.push_faults([Fault::NoResponse]);
    let held = tokio::spawn(
        client()
            .get(keep.imds_endpoint())
            .header("Metadata", "true")
            .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
            .send(),
    );
    while keep.token_requests() < 2 {
        tokio::task::yield_now().await;
    }
    drop(keep);
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("port {port} still taken: {e}"),
        }
    }
    let held = tokio::time::timeout(HANG_GUARD, held).await.unwrap().unwrap();
    assert!(!held.unwrap_err().is_timeout());
    assert!(!key_dir.exists());
}
