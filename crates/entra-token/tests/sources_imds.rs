//! `ImdsSource` against the fake IMDS on loopback: requests, user-assigned identities, the error table of
//! `azure-protocols.md` §1 and every number format.

mod common;

use std::time::{Duration, SystemTime};

use common::{assert_hides, assert_lifetime, claims, env, http, imds, status_of};
use entra_emulator::{Endpoint, FakeIdentity, Fault, ManagedIdentity, NumberFormat};
use entra_token::{ImdsSource, TokenError, TokenSource, UserAssignedId, OSSRDBMS_SCOPE};

fn imds_for(fake: &FakeIdentity, id: UserAssignedId) -> ImdsSource {
    ImdsSource::builder()
        .endpoint(fake.imds_authority())
        .user_assigned(id)
        .http_options(http())
        .build()
        .unwrap()
}

#[tokio::test]
async fn system_identity_token_with_metadata_header_and_resource() {
    let fake = FakeIdentity::start().await.unwrap();
    let before = SystemTime::now();
    let token = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap();

    assert_eq!(claims(&fake, &token).oid, fake.system_identity().object_id);
    assert_lifetime(before, &token, Duration::from_secs(3600));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.endpoint, Endpoint::Imds);
    assert_eq!(r.method, "GET");
    assert_eq!(r.header("metadata"), Some("true"));
    assert_eq!(r.query("api-version"), Some("2018-02-01"));
    assert_eq!(
        r.query("resource"),
        Some("https://ossrdbms-aad.database.windows.net")
    );
    for param in ["client_id", "object_id", "msi_res_id"] {
        assert_eq!(r.query(param), None, "{param}");
    }
}

#[tokio::test]
async fn user_assigned_identity_by_each_kind_of_id() {
    let fake = FakeIdentity::start().await.unwrap();
    let mi = ManagedIdentity::new("api");
    fake.add_identity(mi.clone());
    let cases = [
        (
            UserAssignedId::ClientId(mi.client_id.clone()),
            "client_id",
            &mi.client_id,
        ),
        (
            UserAssignedId::ObjectId(mi.object_id.clone()),
            "object_id",
            &mi.object_id,
        ),
        (
            UserAssignedId::ResourceId(mi.resource_id.clone()),
            "msi_res_id",
            &mi.resource_id,
        ),
    ];
    for (id, param, value) in cases {
        fake.clear_log();
        let token = imds_for(&fake, id).fetch(OSSRDBMS_SCOPE).await.unwrap();
        assert_eq!(claims(&fake, &token).oid, mi.object_id, "{param}");
        let r = &fake.requests()[0];
        assert_eq!(r.query(param), Some(value.as_str()));
        assert_eq!(
            r.query.len(),
            3,
            "exactly api-version, resource and {param}: {:?}",
            r.query
        );
    }
}

#[tokio::test]
async fn msal_endpoint_variable_is_a_full_url() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = ImdsSource::builder()
        .env(env(&[("MSAL_MANAGED_IDENTITY_ENDPOINT", fake.imds_endpoint())]))
        .http_options(http())
        .build()
        .unwrap();
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test]
async fn every_number_format_gives_the_same_expiry() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    for format in [
        NumberFormat::AsSpec,
        NumberFormat::Strings,
        NumberFormat::Numbers,
        NumberFormat::Dates,
    ] {
        fake.set_number_format(format);
        let before = SystemTime::now();
        let token = source
            .fetch(OSSRDBMS_SCOPE)
            .await
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_lifetime(before, &token, Duration::from_secs(3600));
    }
}

#[tokio::test]
async fn missing_system_identity_is_unavailable() {
    let fake = FakeIdentity::builder()
        .system_assigned(false)
        .start()
        .await
        .unwrap();
    let err = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("Identity not found"), "{err}");
}

#[tokio::test]
async fn unassigned_user_identity_is_identity_not_found_and_not_retried() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds_for(
        &fake,
        UserAssignedId::ClientId("00000000-0000-0000-0000-00000000dead".into()),
    );
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::IdentityNotFound { identity: Some(id), .. } if id.contains("dead")),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn updating_throttled_and_server_errors_are_transient() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    for status in [404, 410, 500, 502, 503, 504] {
        fake.push_faults([Fault::status(status)]);
        let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
        assert!(matches!(err, TokenError::Transient { .. }), "{status}: {err:?}");
        assert_eq!(status_of(&err), Some(status));
        assert!(err.is_retryable());
    }
    fake.push_faults([Fault::throttled(17)]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert_eq!(status_of(&err), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
    // And the endpoint recovers: the next request succeeds.
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let fake = FakeIdentity::start().await.unwrap();
    let in_a_minute = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
    let date = in_a_minute
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap();
    fake.push_faults([Fault::Status {
        status: 503,
        body: String::new(),
        retry_after: Some(date),
    }]);
    let err = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    let delay = err.retry_after().expect("a Retry-After date");
    assert!(
        delay > Duration::from_secs(30) && delay <= Duration::from_secs(90),
        "{delay:?}"
    );
}

#[tokio::test]
async fn other_client_errors_are_auth_failed_without_retry() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    for status in [401, 403, 405, 422] {
        fake.push_faults([Fault::status(status)]);
        let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
        assert!(
            matches!(err, TokenError::AuthenticationFailed { status: Some(s), .. } if s == status),
            "{status}: {err:?}"
        );
        assert!(!err.is_retryable());
    }
    fake.push_faults([Fault::Status {
        status: 400,
        body: r#"{"error":"invalid_resource","error_description":"AADSTS500011: not found"}"#.into(),
        retry_after: None,
    }]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::AuthenticationFailed { .. }), "{err:?}");
}

#[tokio::test]
async fn docker_desktop_403_unreachable_is_unavailable() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::Status {
        status: 403,
        body: "connecting to 169.254.169.254:80: connectex: A socket operation was attempted to an unreachable network.".into(),
        retry_after: None,
    }]);
    let err = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn non_json_success_and_html_errors() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    fake.push_faults([Fault::Malformed]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    fake.push_faults([Fault::Html]);
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert_eq!(status_of(&err), Some(500), "{err:?}");
}

#[tokio::test]
async fn missing_fields_are_invalid_responses_naming_them() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = imds(&fake);
    let cases = [
        (serde_json::json!({"expires_in": "3600"}), "access_token"),
        (
            serde_json::json!({"access_token": "SECRET-TOKEN-abc"}),
            "expires_in",
        ),
        (
            serde_json::json!({"access_token": "SECRET-TOKEN-abc", "expires_on": true}),
            "expires_on",
        ),
    ];
    for (body, field) in cases {
        fake.push_faults([Fault::Json(body)]);
        let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
        assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
        assert!(err.to_string().contains(field), "{err}");
        assert_hides(&err, "SECRET-TOKEN-abc");
    }
}

#[tokio::test]
async fn nothing_listening_is_unavailable_until_imds_has_answered_once() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let source = ImdsSource::builder()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .http_options(http())
        .build()
        .unwrap();
    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.to_string().contains("no IMDS endpoint"), "{err}");

    // Now an IMDS answers on that port once, and then goes away.
    let fake_listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = fake_listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = socket.read(&mut buf).await.unwrap();
        let body = r#"{"access_token":"t","expires_in":"60"}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(reply.as_bytes()).await.unwrap();
        socket.shutdown().await.unwrap();
    });
    source.fetch(OSSRDBMS_SCOPE).await.unwrap();
    server.await.unwrap();

    let err = source.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(matches!(err, TokenError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn large_tokens_are_accepted() {
    let fake = FakeIdentity::builder()
        .token_padding(8 * 1024)
        .start()
        .await
        .unwrap();
    let token = imds(&fake).fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert!(token.secret().len() >= 8 * 1024);
    assert!(!format!("{token:?}").contains(token.secret()));
}
