//! What the fake does to token requests on every endpoint: scripted [`Fault`]s (queued or persistent,
//! from a status code to a connection that never answers) and the request log.

mod common;

use std::time::Duration;

use common::{
    app_service, claims_of, client, client_with_timeout, imds, imds_get, imds_json, imds_without_metadata,
    secret_grant, start, start_with_app, IMDS_QUERY, SCOPE,
};
use entra_emulator::identity::{Endpoint, Fault, ServicePrincipal};
use entra_emulator::{OSSRDBMS_RESOURCE, TEST_TENANT_ID};
use serde_json::{json, Value};

// ---------------------------------------------------------------- Faults

#[tokio::test]
async fn queued_faults_apply_to_the_next_token_requests_in_order_then_stop() {
    let fake = start().await;
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
    let fake = start().await;
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
    let fake = start().await;
    // A minute against the impatient client's 200 ms: only its own timeout can end the first request.
    fake.push_faults([
        Fault::Delay(Duration::from_secs(60)),
        Fault::Delay(Duration::from_millis(50)),
    ]);
    let impatient = imds_get(
        &client_with_timeout(Duration::from_millis(200)),
        &fake,
        &IMDS_QUERY,
    )
    .send()
    .await;
    assert!(impatient.unwrap_err().is_timeout());
    let (status, body) = imds_json(&fake, &[]).await;
    assert_eq!(status, 200);
    claims_of(&fake, &body, OSSRDBMS_RESOURCE);
}

#[tokio::test]
async fn no_response_holds_the_request_until_the_client_times_out() {
    let fake = start().await;
    fake.push_faults([Fault::NoResponse]);
    let result = imds_get(&client_with_timeout(Duration::from_secs(1)), &fake, &IMDS_QUERY)
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
    let fake = start().await;
    fake.push_faults([Fault::Close]);
    let result = imds_get(&client(), &fake, &IMDS_QUERY).send().await;
    let error = result.unwrap_err();
    assert!(!error.is_timeout(), "{error}");
    assert_eq!(fake.requests()[0].status, 0);
}

#[tokio::test]
async fn malformed_is_a_200_that_is_not_json() {
    let fake = start().await;
    fake.push_faults([Fault::Malformed]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn html_is_a_500_error_page() {
    let fake = start().await;
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
    let fake = start().await;
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
    let fake = start().await;
    fake.push_faults([Fault::Truncated]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 200);
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error}");
}

#[tokio::test]
async fn slow_body_trickles_a_valid_answer_in_pieces() {
    let fake = start().await;
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
    let fake = start().await;
    fake.push_faults([Fault::Redirect("http://169.254.169.254/elsewhere".into())]);
    let response = imds(&fake, &[]).await;
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], "http://169.254.169.254/elsewhere");
}

#[tokio::test]
async fn json_fault_answers_exactly_that_json() {
    let fake = start().await;
    let odd = json!({"access_token": 42, "expires_on": null});
    fake.push_faults([Fault::Json(odd.clone())]);
    let (status, body) = imds_json(&fake, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, odd);
    assert_eq!(fake.tokens_issued(), 0);
}

#[tokio::test]
async fn faults_apply_to_every_token_endpoint() {
    let app = ServicePrincipal::with_secret("a", "pw");
    let fake = start_with_app(&app).await;
    fake.push_faults([Fault::status(502), Fault::status(504)]);
    let response = secret_grant(&fake, TEST_TENANT_ID, &app.client_id, "pw", SCOPE).await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        app_service(&fake, &fake.identity_header(), &[]).await.status(),
        504
    );
}

// ---------------------------------------------------------------- The request log

#[tokio::test]
async fn the_log_records_every_request_with_its_answer() {
    let fake = start().await;
    let response = imds_without_metadata(&fake).await;
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
    let fake = start_with_app(&app).await;
    secret_grant(&fake, TEST_TENANT_ID, &app.client_id, "very-secret-value", SCOPE).await;
    let log = fake.requests();
    assert_eq!(log[0].endpoint, Endpoint::EntraToken);
    assert_eq!(log[0].form("client_secret"), Some("very-secret-value"));
    assert_eq!(log[0].form("scope"), Some(SCOPE));
    assert!(!format!("{:?}", log[0]).contains("very-secret-value"));
}
