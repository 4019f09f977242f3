//! The fake Entra ID v2 token endpoint (`/{tenant}/oauth2/v2.0/token`), client-credentials grant: a
//! client secret (in the form or as HTTP Basic) or a federated assertion (workload identity), and
//! AADSTS errors shaped like Entra's.

mod common;

use std::time::Duration;

use common::{claims_of, client, entra, json_of, secret_grant, start, start_with_app, JWT_BEARER, SCOPE};
use entra_emulator::identity::{FakeIdentity, ServicePrincipal};
use entra_emulator::{OSSRDBMS_RESOURCE, TEST_TENANT_ID};
use serde_json::{json, Value};

/// An Entra error body: `error`, `error_codes: [code]`, a description starting `AADSTS{code}:` and the
/// trace fields.
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

/// A client-credentials request for `app` authenticated by `assertion`.
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

// ---------------------------------------------------------------- Client secret

#[tokio::test]
async fn client_secret_issues_an_entra_token_with_numbers() {
    let app = ServicePrincipal::with_secret("reporting", "s3cret");
    let fake = start_with_app(&app).await;
    let (status, body) =
        json_of(secret_grant(&fake, fake.tenant_id(), &app.client_id, "s3cret", SCOPE).await).await;
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
    let fake = start_with_app(&app).await;
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
    let fake = start_with_app(&app).await;
    let (status, body) =
        json_of(secret_grant(&fake, TEST_TENANT_ID, &app.client_id, "wrong", SCOPE).await).await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 7000215);
    assert!(!body.to_string().contains("right"));
}

#[tokio::test]
async fn an_unknown_client_is_unauthorized_client_700016() {
    let fake = start().await;
    let unknown = "11111111-2222-3333-4444-555555555555";
    let (status, body) = json_of(secret_grant(&fake, TEST_TENANT_ID, unknown, "x", SCOPE).await).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "unauthorized_client", 700016);
}

#[tokio::test]
async fn an_unknown_tenant_is_90002() {
    let app = ServicePrincipal::with_secret("a", "pw");
    let fake = start_with_app(&app).await;
    let (status, body) =
        json_of(secret_grant(&fake, "contoso.onmicrosoft.com", &app.client_id, "pw", SCOPE).await).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_request", 90002);
}

#[tokio::test]
async fn scopes_other_than_one_dot_default_are_invalid_scope_70011() {
    let app = ServicePrincipal::with_secret("a", "pw");
    let fake = start_with_app(&app).await;
    for scope in [
        OSSRDBMS_RESOURCE,
        "https://ossrdbms-aad.database.windows.net/user_impersonation",
        "https://ossrdbms-aad.database.windows.net/.default openid",
    ] {
        let (status, body) =
            json_of(secret_grant(&fake, TEST_TENANT_ID, &app.client_id, "pw", scope).await).await;
        assert_eq!(status, 400, "{scope}");
        assert_aad_error(&body, "invalid_scope", 70011);
    }
}

// ---------------------------------------------------------------- Federated assertion (workload identity)

#[tokio::test]
async fn a_federated_assertion_with_the_right_subject_gets_a_token() {
    let app = ServicePrincipal::federated("workload", "system:serviceaccount:default:api");
    let fake = start_with_app(&app).await;
    let assertion = fake.federated_assertion("system:serviceaccount:default:api", Duration::from_secs(600));
    let (status, body) = federated(&fake, &app, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, app.object_id);
}

#[tokio::test]
async fn a_federated_assertion_for_another_subject_is_700213() {
    let app = ServicePrincipal::federated("workload", "system:serviceaccount:default:api");
    let fake = start_with_app(&app).await;
    let assertion = fake.federated_assertion("system:serviceaccount:default:other", Duration::from_secs(600));
    let (status, body) = federated(&fake, &app, &assertion).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_client", 700213);
}

#[tokio::test]
async fn an_expired_federated_assertion_is_700024() {
    let app = ServicePrincipal::federated("workload", "sub");
    let fake = start_with_app(&app).await;
    let assertion = fake.federated_assertion("sub", Duration::ZERO);
    let (status, body) = federated(&fake, &app, &assertion).await;
    assert_eq!(status, 400);
    assert_aad_error(&body, "invalid_client", 700024);
}

#[tokio::test]
async fn a_federated_assertion_signed_by_another_key_is_refused() {
    let app = ServicePrincipal::federated("workload", "sub");
    let fake = start_with_app(&app).await;
    let forged = fake
        .issuer()
        .sign_untrusted(&entra_emulator::Claims::new("sub", Duration::from_secs(600)));
    let (status, body) = federated(&fake, &app, &forged).await;
    assert_eq!(status, 401);
    assert_aad_error(&body, "invalid_client", 700027);
}
