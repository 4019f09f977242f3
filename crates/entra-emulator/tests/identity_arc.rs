//! The fake Azure Arc endpoint: the `WWW-Authenticate: Basic realm=<key file>` challenge and the key it
//! names, then the token.

mod common;

use common::{claims_of, client, json_of, start};
use entra_emulator::identity::FakeIdentity;
use entra_emulator::OSSRDBMS_RESOURCE;

/// An Arc request with `Metadata: true`, `api-version` and the database resource, not yet sent.
fn arc_get(fake: &FakeIdentity, api_version: &str) -> reqwest::RequestBuilder {
    client()
        .get(fake.arc_endpoint())
        .header("Metadata", "true")
        .query(&[("api-version", api_version), ("resource", OSSRDBMS_RESOURCE)])
}

/// A well-formed Arc request (api-version 2020-06-01), with `Authorization: authorization` if given.
async fn arc(fake: &FakeIdentity, authorization: Option<&str>) -> reqwest::Response {
    let mut request = arc_get(fake, "2020-06-01");
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
    let fake = start().await;
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
    let fake = start().await;
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
    let fake = start().await;
    let response = client()
        .get(fake.arc_endpoint())
        .query(&[("api-version", "2020-06-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request_102");
    let response = arc_get(&fake, "2019-08-01").send().await.unwrap();
    assert_eq!(response.status(), 400);
    // A newer api-version is supported: it gets the key-file challenge.
    let response = arc_get(&fake, "2021-02-01").send().await.unwrap();
    assert_eq!(response.status(), 401);
}
