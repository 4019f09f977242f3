//! The chain: order, unavailable vs failed, the aggregated error, reuse of the first success.

mod scripted;

use std::time::Duration;

use entra_token::{ChainSource, TokenError, TokenSource, OSSRDBMS_SCOPE};
use scripted::{transient, Scripted, Step};

fn unavailable(name: &str) -> Step {
    Step::Fail(TokenError::unavailable(
        name,
        format!("{name} is not configured here"),
    ))
}

#[tokio::test]
async fn skips_unavailable_sources_and_reuses_the_first_success() {
    let a = Scripted::new(unavailable("a"));
    let b = Scripted::tokens(Duration::from_secs(3600));
    let c = Scripted::tokens(Duration::from_secs(3600));
    let chain = ChainSource::new().with(a.clone()).with(b.clone()).with(c.clone());
    chain.fetch(OSSRDBMS_SCOPE).await.unwrap();
    chain.fetch(OSSRDBMS_SCOPE).await.unwrap();
    assert_eq!((a.fetch_count(), b.fetch_count(), c.fetch_count()), (1, 2, 0));
    assert_eq!(chain.chosen().as_deref(), Some("scripted"));
}

#[tokio::test]
async fn authentication_failure_stops_the_chain_with_earlier_reasons() {
    let a = Scripted::new(unavailable("a"));
    let b = Scripted::new(Step::Fail(TokenError::AuthenticationFailed {
        source_name: "b".into(),
        reason: "Identity not found".into(),
        status: Some(400),
        error_code: Some("invalid_request".into()),
    }));
    let c = Scripted::tokens(Duration::from_secs(3600));
    let chain = ChainSource::new().with(a).with(b).with(c.clone());
    let err = chain.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert_eq!(
        c.fetch_count(),
        0,
        "the chain must stop at an authentication failure"
    );
    let text = err.to_string();
    assert!(
        text.contains("a is not configured here") && text.contains("Identity not found"),
        "{text}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_transient_failure_stops_the_chain_and_stays_retryable() {
    let a = Scripted::new(Step::Fail(transient()));
    let b = Scripted::tokens(Duration::from_secs(3600));
    let chain = ChainSource::new().with(a).with(b.clone());
    let err = chain.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(b.fetch_count(), 0);
}

#[tokio::test]
async fn when_all_are_unavailable_one_error_lists_every_reason() {
    let chain = ChainSource::new()
        .with(Scripted::new(unavailable("environment")))
        .with_unconfigured(
            "workload-identity",
            TokenError::unavailable("workload-identity", "AZURE_FEDERATED_TOKEN_FILE is not set"),
        )
        .with(Scripted::new(unavailable("azure-cli")));
    let err = chain.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    let text = err.to_string();
    for needle in [
        "environment is not configured",
        "AZURE_FEDERATED_TOKEN_FILE is not set",
        "azure-cli is not configured",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(matches!(err, TokenError::ChainFailed(ref v) if v.len() == 3));
}

#[tokio::test]
async fn an_unconfigured_source_with_a_config_error_stops_the_chain() {
    let after = Scripted::tokens(Duration::from_secs(3600));
    let chain = ChainSource::new()
        .with_unconfigured(
            "workload-identity",
            TokenError::InvalidTenantId { tenant: "a/b".into() },
        )
        .with(after.clone());
    let err = chain.fetch(OSSRDBMS_SCOPE).await.unwrap_err();
    assert!(err.to_string().contains("AZURE_TENANT_ID"), "{err}");
    assert_eq!(after.fetch_count(), 0);
}
