//! Azure Arc, Cloud Shell, managed-identity detection, workload identity and client secrets against
//! the fake endpoints.

mod common;

use std::time::{Duration, SystemTime};

use common::{assert_hides, assert_lifetime, claims, env, http, status_of, tls_http};
use entra_emulator::{Endpoint, FakeIdentity, Fault, NumberFormat, ServicePrincipal};
use entra_token::{
    AzureArcSource, ClientSecretSource, CloudShellSource, ManagedIdentityKind, ManagedIdentitySource,
    TokenError, TokenSource, WorkloadIdentitySource, OSSRDBMS_SCOPE,
};

fn arc(fake: &FakeIdentity) -> AzureArcSource {
    AzureArcSource::builder()
        .endpoint(fake.arc_endpoint())
        .key_directory(fake.arc_key_dir())
        .http_options(http())
        .build()
        .unwrap()
}

#[tokio::test]
async fn arc_answers_the_key_file_challenge() {
    let fake = FakeIdentity::start().await.unwrap();
    let before = SystemTime::now();
    let token = arc(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(claims(&fake, &token).oid, fake.system_identity().object_id);
    assert_lifetime(before, &token, Duration::from_secs(3600));

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 401);
    assert_eq!(requests[0].header("authorization"), None);
    for r in &requests {
        assert_eq!(r.endpoint, Endpoint::Arc);
        assert_eq!(r.header("metadata"), Some("true"));
        assert_eq!(r.query("api-version"), Some("2020-06-01"));
    }
    let auth = requests[1].header("authorization").unwrap();
    let key_file = std::fs::read_dir(fake.arc_key_dir())
        .unwrap()
        .next()
        .expect("the challenge wrote a key file")
        .unwrap()
        .path();
    let key = std::fs::read_to_string(key_file).unwrap();
    assert_eq!(auth, format!("Basic {}", key.trim()));
    assert_eq!(requests[1].status, 200);
}

#[tokio::test]
async fn arc_refuses_a_key_file_outside_its_directory() {
    let fake = FakeIdentity::start().await.unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let source = AzureArcSource::builder()
        .endpoint(fake.arc_endpoint())
        .key_directory(elsewhere.path())
        .http_options(http())
        .build()
        .unwrap();
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::AuthenticationFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("refusing"), "{err}");
    assert_eq!(fake.token_requests(), 1, "no second request with a key");
}

#[tokio::test]
async fn arc_first_answer_other_than_401_is_an_error() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = arc(&fake);
    fake.push_faults([Fault::Json(
        serde_json::json!({"access_token": "SECRET-NO-CHALLENGE", "expires_in": "60"}),
    )]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    assert_hides(&err, "SECRET-NO-CHALLENGE");
    fake.push_faults([Fault::status(503)]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert_eq!(status_of(&err), Some(503));
    assert!(matches!(err, TokenError::Transient { .. }));
}

#[tokio::test]
async fn detect_picks_arc_whose_default_key_directory_guards_the_fakes() {
    let fake = FakeIdentity::start().await.unwrap();
    let e = env(&[
        ("IDENTITY_ENDPOINT", fake.arc_endpoint()),
        ("IMDS_ENDPOINT", fake.base_url()),
    ]);
    let source = ManagedIdentitySource::detect(&e, None, http()).unwrap();
    assert_eq!(source.kind(), ManagedIdentityKind::AzureArc);
    assert_eq!(source.name(), "managed-identity(azure-arc)");
    // The fake's key directory is not /var/opt/azcmagent/tokens: the source must refuse to read it.
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(err.to_string().contains("/var/opt/azcmagent/tokens"), "{err}");
}

#[tokio::test]
async fn cloud_shell_posts_the_resource_as_a_form() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = CloudShellSource::builder()
        .env(env(&[("MSI_ENDPOINT", fake.cloud_shell_endpoint())]))
        .http_options(http())
        .build()
        .unwrap();
    let before = SystemTime::now();
    let token = source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_lifetime(before, &token, Duration::from_secs(3600));
    let r = &fake.requests()[0];
    assert_eq!(r.endpoint, Endpoint::CloudShell);
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("metadata"), Some("true"));
    assert_eq!(
        r.form("resource"),
        Some("https://ossrdbms-aad.database.windows.net")
    );
}

#[tokio::test]
async fn detect_picks_cloud_shell_and_falls_back_to_imds() {
    let fake = FakeIdentity::start().await.unwrap();
    let shell = ManagedIdentitySource::detect(
        &env(&[("MSI_ENDPOINT", fake.cloud_shell_endpoint())]),
        None,
        http(),
    )
    .unwrap();
    assert_eq!(shell.kind(), ManagedIdentityKind::CloudShell);
    shell.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let imds = ManagedIdentitySource::detect(
        &env(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.imds_authority())]),
        None,
        http(),
    )
    .unwrap();
    assert_eq!(imds.kind(), ManagedIdentityKind::Imds);
    imds.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let endpoints: Vec<Endpoint> = fake.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(endpoints, [Endpoint::CloudShell, Endpoint::Imds]);
}

const SUBJECT: &str = "system:serviceaccount:default:workload";

struct Workload {
    fake: FakeIdentity,
    app: ServicePrincipal,
    dir: tempfile::TempDir,
}

impl Workload {
    async fn start() -> Self {
        let fake = FakeIdentity::builder().tls(true).start().await.unwrap();
        let app = ServicePrincipal::federated("workload-app", SUBJECT);
        fake.add_app(app.clone());
        let dir = tempfile::tempdir().unwrap();
        let w = Workload { fake, app, dir };
        w.write_assertion(SUBJECT, Duration::from_secs(3600));
        w
    }

    fn token_file(&self) -> std::path::PathBuf {
        self.dir.path().join("azure-identity-token")
    }

    fn write_assertion(&self, subject: &str, lifetime: Duration) -> String {
        let assertion = self.fake.federated_assertion(subject, lifetime);
        std::fs::write(self.token_file(), format!("{assertion}\n")).unwrap();
        assertion
    }

    fn source(&self) -> WorkloadIdentitySource {
        let e = env(&[
            ("AZURE_CLIENT_ID", self.app.client_id.clone()),
            ("AZURE_TENANT_ID", self.fake.tenant_id().to_string()),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                self.token_file().display().to_string(),
            ),
            ("AZURE_AUTHORITY_HOST", self.fake.authority_host()),
        ]);
        WorkloadIdentitySource::from_env(&e, tls_http(&self.fake)).unwrap()
    }
}

#[tokio::test]
async fn workload_identity_exchanges_the_file_over_tls() {
    let w = Workload::start().await;
    let assertion = std::fs::read_to_string(w.token_file()).unwrap();
    let before = SystemTime::now();
    let token = w.source().fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(claims(&w.fake, &token).oid, w.app.object_id);
    assert_lifetime(before, &token, Duration::from_secs(3600));
    let r = &w.fake.requests()[0];
    assert_eq!(r.endpoint, Endpoint::EntraToken);
    assert_eq!(r.path, format!("/{}/oauth2/v2.0/token", w.fake.tenant_id()));
    assert_eq!(r.form("client_assertion"), Some(assertion.trim()));
    assert_eq!(
        r.form("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(r.form("client_id"), Some(w.app.client_id.as_str()));
    assert_eq!(r.form("grant_type"), Some("client_credentials"));
    assert_eq!(r.form("scope"), Some(OSSRDBMS_SCOPE));
}

#[tokio::test]
async fn workload_identity_rereads_the_file_on_every_fetch() {
    let w = Workload::start().await;
    let source = w.source();
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let rotated = w.write_assertion(SUBJECT, Duration::from_secs(7200));
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let sent: Vec<String> = w
        .fake
        .requests()
        .iter()
        .filter_map(|r| r.form("client_assertion").map(str::to_string))
        .collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1], rotated);
    assert_ne!(sent[0], sent[1]);
}

#[tokio::test]
async fn workload_subject_mismatch_is_auth_failed_with_its_code() {
    let w = Workload::start().await;
    w.write_assertion("system:serviceaccount:other:intruder", Duration::from_secs(3600));
    let err = w.source().fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::AuthenticationFailed { error_code: Some(c), status: Some(400 | 401), .. } if c == "AADSTS700213"),
        "{err:?}"
    );
    assert_eq!(w.fake.token_requests(), 1, "no retry");
}

#[tokio::test]
async fn workload_expired_assertion_is_retried_once_then_fails() {
    let w = Workload::start().await;
    let expired = w.write_assertion(SUBJECT, Duration::ZERO);
    let err = w.source().fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::AuthenticationFailed { error_code: Some(c), .. } if c == "AADSTS700024"),
        "{err:?}"
    );
    assert_eq!(w.fake.token_requests(), 2, "one re-read and retry, no more");
    assert_hides(&err, &expired);
}

#[tokio::test]
async fn workload_expired_assertion_recovers_with_the_reread_file() {
    let w = Workload::start().await;
    let body = serde_json::json!({
        "error": "invalid_client",
        "error_description": "AADSTS700024: Client assertion is not within its valid time range.",
        "error_codes": [700024],
    });
    w.fake.push_faults([Fault::Status {
        status: 400,
        body: body.to_string(),
        retry_after: None,
    }]);
    w.source().fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(w.fake.token_requests(), 2);
}

#[tokio::test]
async fn workload_missing_or_empty_token_file_is_a_config_error_naming_it() {
    let w = Workload::start().await;
    let source = w.source();
    std::fs::write(w.token_file(), "").unwrap();
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    let path = w.token_file().display().to_string();
    assert!(
        matches!(&err, TokenError::FederatedTokenEmpty { .. }) && err.to_string().contains(&path),
        "{err:?}"
    );
    std::fs::remove_file(w.token_file()).unwrap();
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::FederatedTokenUnreadable { .. }) && err.to_string().contains(&path),
        "{err:?}"
    );
    assert_eq!(w.fake.token_requests(), 0);
}

#[tokio::test]
async fn workload_refuses_a_plain_http_authority() {
    let fake = FakeIdentity::start().await.unwrap();
    let e = env(&[
        ("AZURE_CLIENT_ID", "c".to_string()),
        ("AZURE_TENANT_ID", fake.tenant_id().to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent".to_string()),
        ("AZURE_AUTHORITY_HOST", fake.authority_host()),
    ]);
    let err = WorkloadIdentitySource::from_env(&e, http()).unwrap_err();
    assert!(
        matches!(&err, TokenError::UrlNotAllowed { .. }) && err.to_string().contains("https"),
        "{err:?}"
    );
}

#[tokio::test]
async fn entra_numbers_may_be_strings_and_refresh_in_is_honoured() {
    let w = Workload::start().await;
    let source = w.source();
    w.fake.set_number_format(NumberFormat::Strings);
    let before = SystemTime::now();
    let token = source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_lifetime(before, &token, Duration::from_secs(3600));
    w.fake.push_faults([Fault::Json(serde_json::json!({
        "token_type": "Bearer", "expires_in": "7200", "ext_expires_in": 7200,
        "refresh_in": 1800, "access_token": "opaque-token"
    }))]);
    let before = SystemTime::now();
    let token = source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_lifetime(before, &token, Duration::from_secs(7200));
    // `refresh_in` counts from the moment the answer arrived, which lies between these two readings.
    let after = SystemTime::now();
    let refresh_on = token.refresh_on().expect("refresh_in is honoured");
    let refresh_in = Duration::from_secs(1800);
    assert!(
        refresh_on >= before + refresh_in && refresh_on <= after + refresh_in,
        "refresh advised {:?} after the fetch began, not 30 min after a moment of it ({:?} long)",
        refresh_on.duration_since(before).unwrap_or_default(),
        after.duration_since(before).unwrap_or_default()
    );
}

struct Secret {
    fake: FakeIdentity,
    app: ServicePrincipal,
}

const APP_SECRET: &str = "s3cret-Value~with.symbols";

impl Secret {
    async fn start() -> Self {
        let fake = FakeIdentity::builder().tls(true).start().await.unwrap();
        let app = ServicePrincipal::with_secret("secret-app", APP_SECRET);
        fake.add_app(app.clone());
        Secret { fake, app }
    }

    fn source_with(&self, tenant: &str, secret: &str) -> ClientSecretSource {
        let e = env(&[
            ("AZURE_TENANT_ID", tenant.to_string()),
            ("AZURE_CLIENT_ID", self.app.client_id.clone()),
            ("AZURE_CLIENT_SECRET", secret.to_string()),
            ("AZURE_AUTHORITY_HOST", self.fake.authority_host()),
        ]);
        ClientSecretSource::from_env(&e, tls_http(&self.fake)).unwrap()
    }

    fn source(&self) -> ClientSecretSource {
        self.source_with(self.fake.tenant_id(), APP_SECRET)
    }
}

#[tokio::test]
async fn client_secret_signs_in() {
    let s = Secret::start().await;
    let source = s.source();
    assert!(!format!("{source:?}").contains(APP_SECRET));
    let token = source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(claims(&s.fake, &token).oid, s.app.object_id);
    let r = &s.fake.requests()[0];
    assert_eq!(r.form("client_secret"), Some(APP_SECRET));
    assert_eq!(r.form("client_id"), Some(s.app.client_id.as_str()));
    assert_eq!(r.form("grant_type"), Some("client_credentials"));
    assert_eq!(r.form("scope"), Some(OSSRDBMS_SCOPE));
}

#[tokio::test]
async fn client_secret_builder_with_explicit_authority() {
    let s = Secret::start().await;
    let source = ClientSecretSource::builder()
        .tenant_id(s.fake.tenant_id())
        .client_id(&s.app.client_id)
        .secret(APP_SECRET)
        .authority_host(s.fake.authority_host())
        .env(env(&[(
            "AZURE_AUTHORITY_HOST",
            "https://login.invalid".to_string(),
        )]))
        .http_options(tls_http(&s.fake))
        .build()
        .unwrap();
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
}

#[tokio::test]
async fn client_secret_refusals_carry_aadsts_codes_and_hide_the_secret() {
    let s = Secret::start().await;
    let wrong = "wrong-secret-value";
    let err = s
        .source_with(s.fake.tenant_id(), wrong)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::AuthenticationFailed { error_code: Some(c), .. } if c == "AADSTS7000215"),
        "{err:?}"
    );
    assert_hides(&err, wrong);
    let err = s
        .source_with("contoso.example", APP_SECRET)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::AuthenticationFailed { error_code: Some(c), .. } if c == "AADSTS90002"),
        "{err:?}"
    );
    assert_hides(&err, APP_SECRET);
    let err = s
        .source()
        .fetch("https://ossrdbms-aad.database.windows.net")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TokenError::AuthenticationFailed { error_code: Some(c), .. } if c == "AADSTS70011"),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_secret_throttling_and_outages_are_transient() {
    let s = Secret::start().await;
    let source = s.source();
    s.fake
        .push_faults([Fault::throttled(9), Fault::status(503), Fault::status(500)]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert_eq!(status_of(&err), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(9)));
    for status in [503, 500] {
        let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
        assert!(
            matches!(err, TokenError::Transient { status: Some(s), .. } if s == status),
            "{err:?}"
        );
    }
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
}

#[tokio::test]
async fn client_secret_untrusted_certificate_is_an_error() {
    let s = Secret::start().await;
    let e = env(&[
        ("AZURE_TENANT_ID", s.fake.tenant_id().to_string()),
        ("AZURE_CLIENT_ID", s.app.client_id.clone()),
        ("AZURE_CLIENT_SECRET", APP_SECRET.to_string()),
        ("AZURE_AUTHORITY_HOST", s.fake.authority_host()),
    ]);
    // Without the fake's CA the handshake must fail: the secret is never sent.
    let source = ClientSecretSource::from_env(&e, http()).unwrap();
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err:?}");
    assert!(s.fake.requests().is_empty());
}
