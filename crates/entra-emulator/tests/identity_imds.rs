//! The fake IMDS endpoint (`/metadata/identity/oauth2/token`): the `Metadata` guard, api-versions,
//! identity selection and the token answer with every number a string.

mod common;

use std::time::Duration;

use common::{
    claims_of, client, imds_get, imds_json, imds_without_metadata, json_of, number_string, start,
    start_with_identity,
};
use entra_emulator::identity::{FakeIdentity, ManagedIdentity};
use entra_emulator::OSSRDBMS_RESOURCE;
use serde_json::json;

#[tokio::test]
async fn imds_issues_the_system_identity_token_with_every_number_a_string() {
    let fake = start().await;
    let (status, body) = imds_json(&fake, &[]).await;
    assert_eq!(status, 200, "{body}");
    let system = fake.system_identity();
    for field in ["expires_in", "expires_on", "not_before"] {
        number_string(&body, field);
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
    let expires_in = number_string(&body, "expires_in");
    assert!((3590..=3600).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn imds_selects_user_assigned_identities_by_client_object_or_resource_id() {
    let user = ManagedIdentity::new("api-identity");
    let fake = start_with_identity(&user).await;
    for (param, value) in [
        ("client_id", user.client_id.clone()),
        ("object_id", user.object_id.clone()),
        ("msi_res_id", user.resource_id.clone()),
        ("client_id", user.client_id.to_uppercase()),
    ] {
        let (status, body) = imds_json(&fake, &[(param, &value)]).await;
        assert_eq!(status, 200, "{param}: {body}");
        assert_eq!(body["client_id"], user.client_id.as_str());
        assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    }
}

#[tokio::test]
async fn imds_identities_added_after_start_are_served() {
    let fake = start().await;
    let late = ManagedIdentity::new("late");
    let (status, _) = imds_json(&fake, &[("client_id", &late.client_id)]).await;
    assert_eq!(status, 400);
    fake.add_identity(late.clone());
    let (status, body) = imds_json(&fake, &[("client_id", &late.client_id)]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn imds_without_the_metadata_header_is_bad_request_102() {
    let fake = start().await;
    let (status, body) = json_of(imds_without_metadata(&fake).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request_102");
    assert_eq!(
        body["error_description"],
        "Required metadata header not specified"
    );
}

#[tokio::test]
async fn imds_accepts_2018_and_2019_api_versions_and_refuses_missing_or_older() {
    let fake = start().await;
    for version in ["2018-02-01", "2019-08-01"] {
        let response = imds_get(
            &client(),
            &fake,
            &[("api-version", version), ("resource", OSSRDBMS_RESOURCE)],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 200, "{version}");
    }
    for query in [
        vec![("resource", OSSRDBMS_RESOURCE)],
        vec![("api-version", "2017-12-01"), ("resource", OSSRDBMS_RESOURCE)],
    ] {
        let response = imds_get(&client(), &fake, &query).send().await.unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 400, "{query:?}");
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn imds_without_resource_is_refused() {
    let fake = start().await;
    let response = imds_get(&client(), &fake, &[("api-version", "2018-02-01")])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn imds_unknown_identity_is_identity_not_found() {
    let fake = start().await;
    let stranger = ManagedIdentity::new("not-assigned");
    let (status, body) = imds_json(&fake, &[("client_id", &stranger.client_id)]).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
}

#[tokio::test]
async fn imds_refuses_more_than_one_identity_selector() {
    let user = ManagedIdentity::new("u");
    let fake = start_with_identity(&user).await;
    let (status, body) = imds_json(
        &fake,
        &[("client_id", &user.client_id), ("object_id", &user.object_id)],
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
    let (status, body) = imds_json(&fake, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_description"], "Identity not found");
    let (status, _) = imds_json(&fake, &[("client_id", &user.client_id)]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_wrong_resource_yields_a_token_for_that_audience() {
    let fake = start().await;
    let response = imds_get(
        &client(),
        &fake,
        &[
            ("api-version", "2018-02-01"),
            ("resource", "https://management.azure.com"),
        ],
    )
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
