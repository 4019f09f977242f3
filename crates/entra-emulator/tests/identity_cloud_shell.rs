//! The fake Cloud Shell endpoint: a form POST of the resource with `Metadata: true`.

mod common;

use common::{claims_of, client, json_of, start};
use entra_emulator::OSSRDBMS_RESOURCE;

#[tokio::test]
async fn cloud_shell_issues_tokens_for_a_form_posted_resource() {
    let fake = start().await;
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
    let fake = start().await;
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
