//! What a refusal does to the token, through the emulator: only a refusal of the token itself (in answer
//! to the password where we drive the handshake; under 28000/28P01 where a client library does) drops
//! the cached token. A client's own startup parameters, whatever their text, never do (issue 19).

use std::time::Duration;

use entra_emulator::{Emulator, Fault, RejectReason};
use entra_postgres::{AzureRefusal, ConnectError, Phase, SessionError};
use entra_testkit::{bounded, pool_builder};
use entra_token::{Env, TokenState};

/// A DateStyle value carrying the words the old text rule took for a token refusal.
const HOSTILE_DATESTYLE: &str = "access token";

/// Older than the refresh policy's `min_invalidate_interval` (200 ms in `short_lived`), so that a
/// refusal read as a token problem would make the refresher refetch.
async fn past_min_invalidate_interval() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_sessions_datestyle_refused_after_sign_in_keeps_the_token() {
    let emulator = Emulator::start().await.unwrap();
    let connector = entra_testkit::config(&emulator).build_connector().await.unwrap();
    past_min_invalidate_interval().await;
    let parameters = [("DateStyle".to_string(), HOSTILE_DATESTYLE.to_string())];
    let err = bounded(60, "open_session", connector.open_session(&parameters))
        .await
        .unwrap_err();
    match &err {
        SessionError::Server { phase, code, .. } => {
            assert_eq!(*phase, Phase::AfterAuthentication, "{err}");
            assert_eq!(code, "22023", "{err}");
        }
        other => panic!("expected the server's own refusal, got {other:?}"),
    }
    assert_eq!(err.refusal(), Some(AzureRefusal::Other));
    assert_eq!(emulator.identity().token_requests(), 1, "no refetch");
    let refused_tokens: Vec<_> = emulator
        .gate()
        .rejections()
        .into_iter()
        .filter(|r| r.reason != RejectReason::Upstream)
        .collect();
    assert!(
        refused_tokens.is_empty(),
        "the gate accepted the token: {refused_tokens:?}"
    );
    let tokens = connector.tokens().unwrap();
    assert_eq!(tokens.status().state, TokenState::Valid);
    // The same token signs the next session in.
    bounded(60, "open_session", connector.open_session(&[]))
        .await
        .unwrap();
    assert_eq!(emulator.identity().token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connections_datestyle_refused_by_the_server_keeps_the_token() {
    let emulator = Emulator::start().await.unwrap();
    let mut env = emulator.env_vars();
    env.push((
        "PGOPTIONS".into(),
        format!("-c DateStyle={}", HOSTILE_DATESTYLE.replace(' ', "\\ ")),
    ));
    let pool = pool_builder(&emulator)
        .with_config(|c| c.env(Env::from_pairs(env)))
        .build()
        .await
        .unwrap();
    past_min_invalidate_interval().await;
    let err = bounded(60, "get", pool.get()).await.unwrap_err();
    assert!(
        ConnectError::find(&err).is_none(),
        "not a token refusal: {}",
        entra_postgres::report(&err)
    );
    let text = entra_postgres::report(&err);
    assert!(text.contains("DateStyle"), "the server's own message: {text}");
    assert_eq!(emulator.identity().token_requests(), 1, "no refetch");
    assert_eq!(pool.tokens().unwrap().status().state, TokenState::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_identity_outage_a_hostile_session_does_not_cost_the_cached_token() {
    let emulator = Emulator::start().await.unwrap();
    let connector = entra_testkit::config(&emulator).build_connector().await.unwrap();
    past_min_invalidate_interval().await;
    emulator.identity().set_persistent_fault(Some(Fault::status(503)));
    let parameters = [("DateStyle".to_string(), HOSTILE_DATESTYLE.to_string())];
    let hostile = bounded(60, "open_session", connector.open_session(&parameters)).await;
    assert!(matches!(hostile, Err(SessionError::Server { .. })), "{hostile:?}");
    // Every later session still signs in with the cached token, which has about an hour left.
    for _ in 0..3 {
        bounded(60, "open_session", connector.open_session(&[]))
            .await
            .unwrap();
    }
    assert_eq!(emulator.identity().token_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_known_by_its_phase_in_a_raw_session() {
    let emulator = Emulator::start().await.unwrap();
    let connector = entra_testkit::config(&emulator).build_connector().await.unwrap();
    past_min_invalidate_interval().await;
    emulator.gate().revoke_principal(emulator.user());
    let err = bounded(60, "open_session", connector.open_session(&[]))
        .await
        .unwrap_err();
    match &err {
        SessionError::Token(ConnectError::TokenRejected { kind, code, .. }) => {
            assert_eq!(*kind, AzureRefusal::TokenRefused);
            assert_eq!(code, "28P01");
        }
        other => panic!("expected a refused token, got {other:?}"),
    }
    assert_eq!(
        emulator.identity().token_requests(),
        2,
        "one refetch, then the fresh token was refused too"
    );
}
