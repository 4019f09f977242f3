//! The fake App Service endpoint: the current `X-IDENTITY-HEADER` protocol (2019-08-01) and the legacy
//! MSI protocol (2017-09-01, `secret` header).

mod common;

use common::{
    app_service, app_service_json, claims_of, client, json_of, start, start_with_identity, APP_SERVICE_QUERY,
};
use entra_emulator::identity::{Endpoint, FakeIdentity, ManagedIdentity};
use entra_emulator::OSSRDBMS_RESOURCE;
use serde_json::json;

/// A legacy MSI request (api-version 2017-09-01) with `secret: secret` and `extra` in the query.
async fn legacy_msi(fake: &FakeIdentity, secret: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(fake.app_service_endpoint())
        .header("secret", secret)
        .query(&[("api-version", "2017-09-01"), ("resource", OSSRDBMS_RESOURCE)])
        .query(extra)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn app_service_issues_tokens_with_expires_on_as_an_epoch_string() {
    let fake = start().await;
    let (status, body) = app_service_json(&fake, &fake.identity_header(), &[]).await;
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
    let fake = start_with_identity(&user).await;
    let header = fake.identity_header();
    for (param, value) in [
        ("client_id", &user.client_id),
        ("principal_id", &user.object_id),
        ("object_id", &user.object_id),
        ("mi_res_id", &user.resource_id),
    ] {
        let (status, body) = app_service_json(&fake, &header, &[(param, value)]).await;
        assert_eq!(status, 200, "{param}: {body}");
        assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    }
}

#[tokio::test]
async fn app_service_refuses_msi_res_id() {
    let user = ManagedIdentity::new("web");
    let fake = start_with_identity(&user).await;
    let (status, body) = app_service_json(
        &fake,
        &fake.identity_header(),
        &[("msi_res_id", &user.resource_id)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["statusCode"], 400);
    assert!(body["message"].as_str().unwrap().contains("mi_res_id"));
}

#[tokio::test]
async fn app_service_refuses_a_missing_or_wrong_identity_header() {
    let fake = start().await;
    let response = client()
        .get(fake.app_service_endpoint())
        .query(&APP_SERVICE_QUERY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (status, body) = app_service_json(&fake, "not-the-header", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["statusCode"], 401);
}

#[tokio::test]
async fn app_service_refuses_the_old_header_after_rotation() {
    let fake = start().await;
    let old = fake.identity_header();
    let new = fake.rotate_identity_header();
    assert_ne!(old, new);
    assert_eq!(fake.identity_header(), new);
    assert_eq!(app_service(&fake, &old, &[]).await.status(), 401);
    assert_eq!(app_service(&fake, &new, &[]).await.status(), 200);
}

#[tokio::test]
async fn app_service_refuses_other_api_versions_and_unknown_identities() {
    let fake = start().await;
    let response = client()
        .get(fake.app_service_endpoint())
        .header("X-IDENTITY-HEADER", fake.identity_header())
        .query(&[("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let stranger = ManagedIdentity::new("stranger");
    let (status, _) = app_service_json(
        &fake,
        &fake.identity_header(),
        &[("client_id", &stranger.client_id)],
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn legacy_msi_answers_expires_on_as_a_date() {
    let user = ManagedIdentity::new("ml");
    let fake = start_with_identity(&user).await;
    let (status, body) = json_of(legacy_msi(&fake, &fake.legacy_msi_secret(), &[]).await).await;
    assert_eq!(status, 200, "{body}");
    let date = body["expires_on"].as_str().unwrap();
    // "MM/DD/YYYY HH:MM:SS +00:00"
    assert_eq!(date.len(), 26, "{date}");
    assert_eq!(&date[2..3], "/");
    assert!(date.ends_with(" +00:00"));
    let (status, body) =
        json_of(legacy_msi(&fake, &fake.legacy_msi_secret(), &[("clientid", &user.client_id)]).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    assert_eq!(legacy_msi(&fake, "wrong", &[]).await.status(), 401);
    assert_eq!(fake.requests()[0].endpoint, Endpoint::AppServiceLegacy);
}
