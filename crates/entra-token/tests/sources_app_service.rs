//! `AppServiceSource` (2019-08-01 and legacy 2017-09-01) against the fake App Service endpoint.

mod common;

use std::time::{Duration, SystemTime};

use common::{assert_hides, assert_lifetime, claims, env, http, status_of};
use entra_emulator::{Endpoint, FakeIdentity, Fault, ManagedIdentity, NumberFormat};
use entra_token::{
    AppServiceSource, Env, ManagedIdentityKind, ManagedIdentitySource, TokenError, TokenSource,
    UserAssignedId, OSSRDBMS_SCOPE,
};

fn app_env(fake: &FakeIdentity) -> Env {
    env(&[
        ("IDENTITY_ENDPOINT", fake.app_service_endpoint()),
        ("IDENTITY_HEADER", fake.identity_header()),
    ])
}

fn legacy_env(fake: &FakeIdentity) -> Env {
    env(&[
        ("MSI_ENDPOINT", fake.app_service_endpoint()),
        ("MSI_SECRET", fake.legacy_msi_secret()),
    ])
}

fn source(env: Env, id: Option<UserAssignedId>) -> AppServiceSource {
    let builder = AppServiceSource::builder().env(env).http_options(http());
    match id {
        Some(id) => builder.user_assigned(id),
        None => builder,
    }
    .build()
    .unwrap()
}

#[tokio::test]
async fn system_identity_with_identity_header() {
    let fake = FakeIdentity::start().await.unwrap();
    let before = SystemTime::now();
    let token = source(app_env(&fake), None).fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(claims(&fake, &token).oid, fake.system_identity().object_id);
    assert_lifetime(before, &token, Duration::from_secs(3600));
    let r = &fake.requests()[0];
    assert_eq!(r.endpoint, Endpoint::AppService);
    assert_eq!(r.query("api-version"), Some("2019-08-01"));
    assert_eq!(
        r.query("resource"),
        Some("https://ossrdbms-aad.database.windows.net")
    );
    assert_eq!(
        r.header("x-identity-header"),
        Some(fake.identity_header().as_str())
    );
}

#[tokio::test]
async fn user_assigned_ids_use_app_service_parameter_names() {
    let fake = FakeIdentity::start().await.unwrap();
    let mi = ManagedIdentity::new("worker");
    fake.add_identity(mi.clone());
    let cases = [
        (
            UserAssignedId::ClientId(mi.client_id.clone()),
            "client_id",
            &mi.client_id,
        ),
        (
            UserAssignedId::ObjectId(mi.object_id.clone()),
            "principal_id",
            &mi.object_id,
        ),
        (
            UserAssignedId::ResourceId(mi.resource_id.clone()),
            "mi_res_id",
            &mi.resource_id,
        ),
    ];
    for (id, param, value) in cases {
        fake.clear_log();
        let token = source(app_env(&fake), Some(id))
            .fetch(OSSRDBMS_SCOPE)
            .await
            .unwrap();
        assert_eq!(claims(&fake, &token).oid, mi.object_id, "{param}");
        let r = &fake.requests()[0];
        assert_eq!(r.query(param), Some(value.as_str()));
        assert_eq!(r.query("msi_res_id"), None);
    }
}

#[tokio::test]
async fn numbers_as_strings_numbers_and_dates() {
    let fake = FakeIdentity::start().await.unwrap();
    let s = source(app_env(&fake), None);
    for format in [
        NumberFormat::AsSpec,
        NumberFormat::Strings,
        NumberFormat::Numbers,
        NumberFormat::Dates,
    ] {
        fake.set_number_format(format);
        let before = SystemTime::now();
        let token = s
            .fetch(OSSRDBMS_SCOPE)
            .await
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_lifetime(before, &token, Duration::from_secs(3600));
    }
}

#[tokio::test]
async fn a_stale_identity_header_is_auth_failed() {
    let fake = FakeIdentity::start().await.unwrap();
    let s = source(app_env(&fake), None);
    let old = fake.identity_header();
    fake.rotate_identity_header();
    let err = s.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::AuthenticationFailed {
                status: Some(401),
                ..
            }
        ),
        "{err:?}"
    );
    assert_hides(&err, &old);
}

#[tokio::test]
async fn missing_system_identity_is_unavailable_and_unassigned_user_identity_fails() {
    let fake = FakeIdentity::builder()
        .system_assigned(false)
        .start()
        .await
        .unwrap();
    let err = source(app_env(&fake), None)
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let id = UserAssignedId::ResourceId("/subscriptions/x/nope".into());
    let err = source(app_env(&fake), Some(id))
        .fetch(OSSRDBMS_SCOPE)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::IdentityNotFound {
                identity: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_errors_and_throttling_are_transient() {
    let fake = FakeIdentity::start().await.unwrap();
    let s = source(app_env(&fake), None);
    for status in [404, 410, 500, 503] {
        fake.push_faults([Fault::status(status)]);
        let err = s.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
        assert!(matches!(err, TokenError::Transient { .. }), "{status}: {err:?}");
        assert_eq!(status_of(&err), Some(status));
    }
    fake.push_faults([Fault::throttled(5)]);
    let err = s.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
}

#[tokio::test]
async fn without_its_variables_the_source_is_unavailable() {
    let err = AppServiceSource::builder().env(env(&[])).build().unwrap_err();
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("IDENTITY_ENDPOINT"), "{err}");
}

#[tokio::test]
async fn legacy_api_with_secret_header_and_date_expiry() {
    let fake = FakeIdentity::start().await.unwrap();
    let s = source(legacy_env(&fake), None);
    let before = SystemTime::now();
    let token = s.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(claims(&fake, &token).oid, fake.system_identity().object_id);
    // The legacy API sends expires_on as a date: parsing it right gives the fake's lifetime.
    assert_lifetime(before, &token, Duration::from_secs(3600));
    let r = &fake.requests()[0];
    assert_eq!(r.endpoint, Endpoint::AppServiceLegacy);
    assert_eq!(r.query("api-version"), Some("2017-09-01"));
    assert_eq!(r.header("secret"), Some(fake.legacy_msi_secret().as_str()));
    assert_eq!(r.header("x-identity-header"), None);
}

#[tokio::test]
async fn legacy_api_selects_a_user_identity_by_clientid() {
    let fake = FakeIdentity::start().await.unwrap();
    let mi = ManagedIdentity::new("ml-worker");
    fake.add_identity(mi.clone());
    let s = source(
        legacy_env(&fake),
        Some(UserAssignedId::ClientId(mi.client_id.clone())),
    );
    let token = s.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!(claims(&fake, &token).oid, mi.object_id);
    assert_eq!(fake.requests()[0].query("clientid"), Some(mi.client_id.as_str()));
}

#[tokio::test]
async fn detect_picks_app_service_and_legacy() {
    let fake = FakeIdentity::start().await.unwrap();
    let modern = ManagedIdentitySource::detect(&app_env(&fake), None, http()).unwrap();
    assert_eq!(modern.kind(), ManagedIdentityKind::AppService);
    assert_eq!(modern.name(), "managed-identity(app-service)");
    modern.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let legacy = ManagedIdentitySource::detect(&legacy_env(&fake), None, http()).unwrap();
    assert_eq!(legacy.kind(), ManagedIdentityKind::AppServiceLegacy);
    legacy.fetch(OSSRDBMS_SCOPE).await.unwrap();
    let endpoints: Vec<Endpoint> = fake.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(endpoints, [Endpoint::AppService, Endpoint::AppServiceLegacy]);
}
