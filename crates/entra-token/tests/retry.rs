//! Azure's retry guidance, as every one-shot fetch and every refresher start follows it: against the fake
//! IMDS's fault scripts, over real HTTP on loopback; and how long it waits, against a scripted source on
//! Tokio's paused clock, where the durations are exact.

mod common;
mod scripted;

use std::time::{Duration, Instant};

use common::{http, imds};
use entra_emulator::{FakeIdentity, Fault};
use entra_token::{
    fetch_with_retry, ImdsSource, RefreshPolicy, Refresher, RetryPolicy, TokenError, UserAssignedId,
    OSSRDBMS_SCOPE,
};
use scripted::{Scripted, Step};

/// Hang prevention only, around fetches whose budget and attempt timeout end them sooner.
const HANG: Duration = Duration::from_secs(60);

/// A retry policy with quick backoff, so the tests spend their time on what the server asks for; its
/// attempt timeout only bounds a hang.
fn quick(budget: Duration) -> RetryPolicy {
    RetryPolicy::default()
        .backoff(Duration::from_millis(50), Duration::from_millis(400))
        .budget(budget)
        .attempt_timeout(Duration::from_secs(30))
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
    // A lower bound only, which the retry's own wait guarantees and a busy machine can only lengthen; the
    // wait itself is `a_429_with_retry_after_is_retried_when_the_server_says`'s subject.
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

/// The outcome over HTTP; how long the attempts take and how many fit in the budget are the paused-clock
/// test's subject below.
#[tokio::test]
async fn a_410_that_outlasts_the_budget_ends_in_an_error_naming_every_attempt() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.set_persistent_fault(Some(Fault::status(410)));
    let policy = quick(Duration::from_secs(2));
    let source = imds(&fake);
    let err = tokio::time::timeout(HANG, fetch_with_retry(&source, OSSRDBMS_SCOPE, &policy))
        .await
        .expect("the budget ends the retries")
        .unwrap_err();
    match &err {
        TokenError::RetriesExhausted {
            attempts,
            outcomes,
            last,
            ..
        } => {
            assert_eq!(*attempts as usize, fake.token_requests());
            assert_eq!(outcomes.len(), *attempts as usize, "{outcomes:?}");
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

fn updating_410() -> TokenError {
    TokenError::Transient {
        source_name: "scripted".into(),
        reason: "HTTP 410 from the endpoint".into(),
        status: Some(410),
        retry_after: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_410_that_outlasts_the_budget_ends_within_the_budget_plus_one_attempt() {
    let source = Scripted::new(Step::Fail(updating_410()));
    // Each attempt takes 100 ms: the last one starts before the budget is spent and ends after it.
    source.set_delay(Duration::from_millis(100));
    let policy = quick(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let err = fetch_with_retry(&source, OSSRDBMS_SCOPE, &policy)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= policy.get_budget() && elapsed <= policy.get_budget() + policy.get_attempt_timeout(),
        "ended {elapsed:?} after the start, not within the budget plus one attempt"
    );
    match &err {
        TokenError::RetriesExhausted {
            attempts, outcomes, ..
        } => {
            assert!(*attempts >= 3, "{attempts} attempts in 2 s of 50-400 ms backoff");
            assert_eq!(*attempts as usize, source.fetch_count());
            assert_eq!(outcomes.len(), *attempts as usize, "{outcomes:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_is_retried_when_the_server_says() {
    let throttled = TokenError::Transient {
        source_name: "scripted".into(),
        reason: "HTTP 429 from the endpoint".into(),
        status: Some(429),
        retry_after: Some(Duration::from_secs(1)),
    };
    let source = Scripted::tokens(Duration::from_secs(3600)).then(Step::Fail(throttled));
    fetch_with_retry(&source, OSSRDBMS_SCOPE, &quick(Duration::from_secs(30)))
        .await
        .unwrap();
    let times = source.fetch_times();
    assert_eq!(times.len(), 2);
    // The backoff's own draw (at most 50 ms after one failure) is below Retry-After, which wins.
    assert_eq!(times[1] - times[0], Duration::from_secs(1));
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
    let err = fetch_with_retry(&source, OSSRDBMS_SCOPE, &quick(Duration::from_secs(30)))
        .await
        .unwrap_err();
    // At once, without a retry: retrying would have spent the 30 s budget and ended in RetriesExhausted,
    // which is not an "unavailable" answer.
    assert!(err.is_unavailable(), "{err:?}");
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
