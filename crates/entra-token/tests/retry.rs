//! Azure's retry guidance, as every one-shot fetch and every refresher start follows it: against the fake
//! IMDS's fault scripts, over real HTTP on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{http, imds};
use entra_emulator::{FakeIdentity, Fault};
use entra_token::{
    fetch_with_retry, ImdsSource, RefreshPolicy, Refresher, RetryPolicy, TokenError, UserAssignedId,
    OSSRDBMS_SCOPE,
};

/// A retry policy with quick backoff, so the tests spend their time on what the server asks for.
fn quick(budget: Duration) -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(50), Duration::from_millis(400))
        .budget(budget)
        .attempt_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_the_token_is_fetched() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::throttled(1)]);
    let started = Instant::now();
    let token = fetch_with_retry(&imds(&fake), OSSRDBMS_SCOPE, &quick(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(!token.secret().is_empty());
    assert_eq!(fake.token_requests(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the second request waited for Retry-After"
    );
}

#[tokio::test]
async fn a_500_then_a_410_then_success_takes_three_requests() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::status(500), Fault::status(410)]);
    fetch_with_retry(&imds(&fake), OSSRDBMS_SCOPE, &quick(Duration::from_secs(30)))
        .await
        .unwrap();
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 410, 200]);
}

#[tokio::test]
async fn a_410_that_outlasts_the_budget_ends_in_an_error_naming_every_attempt() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.set_persistent_fault(Some(Fault::status(410)));
    let policy = quick(Duration::from_secs(2));
    let started = Instant::now();
    let err = fetch_with_retry(&imds(&fake), OSSRDBMS_SCOPE, &policy)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed <= policy.get_budget() + http().timeout,
        "ended within the budget plus one request timeout: {elapsed:?}"
    );
    match &err {
        TokenError::RetriesExhausted {
            attempts,
            outcomes,
            last,
            ..
        } => {
            assert!(*attempts >= 3, "{attempts} attempts in 2 s of 50-400 ms backoff");
            assert_eq!(*attempts as usize, fake.token_requests());
            assert!(outcomes.iter().all(|o| o == "HTTP 410"), "{outcomes:?}");
            assert_eq!(last.status(), Some(410));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("gave up after") && text.contains("HTTP 410"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_identity_fails_at_once_after_one_request() {
    let fake = FakeIdentity::start().await.unwrap();
    let source = ImdsSource::builder()
        .endpoint(fake.imds_authority())
        .user_assigned(UserAssignedId::ClientId(
            "00000000-0000-0000-0000-00000000dead".into(),
        ))
        .http_options(http())
        .build()
        .unwrap();
    let err = fetch_with_retry(&source, OSSRDBMS_SCOPE, &quick(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::IdentityNotFound { .. }), "{err:?}");
    assert_eq!(fake.token_requests(), 1);
}

#[tokio::test]
async fn no_identity_endpoint_fails_at_once() {
    // Nothing listens on this port: not an Azure VM.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let source = ImdsSource::builder()
        .endpoint(url)
        .http_options(http())
        .build()
        .unwrap();
    let started = Instant::now();
    let err = fetch_with_retry(&source, OSSRDBMS_SCOPE, &quick(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_fail_fast_refresher_start_rides_out_throttling() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::throttled(1), Fault::status(503)]);
    let policy = RefreshPolicy::default().retry(quick(Duration::from_secs(30)));
    let tokens = Refresher::start(imds(&fake), OSSRDBMS_SCOPE, policy)
        .await
        .expect("fail-fast fails on a definitive error or a spent budget, never on the first 429");
    assert!(tokens.current().is_some(), "the first token is cached at once");
    assert_eq!(fake.token_requests(), 3);
    assert_eq!(tokens.status().fetches, 3);
}
