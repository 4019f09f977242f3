//! A raw session's parameters applied after sign-in (what the proxy's warm sessions do): the server
//! takes them as `SET` would, reports them back into the greeting, and refuses what it only takes at
//! connection start; a session the server ended is seen as closed.

use entra_emulator::Emulator;
use entra_postgres::{RawSession, SessionError};
use entra_testkit::bounded;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn session(emulator: &Emulator) -> RawSession {
    let connector = entra_testkit::config(emulator).build_connector().await.unwrap();
    bounded(60, "open_session", connector.open_session(&[]))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_applied_after_sign_in_are_reported_in_the_greeting_once_each() {
    let emulator = Emulator::start().await.unwrap();
    let mut session = session(&emulator).await;
    let before = session.greeting().len();
    assert_ne!(session.parameter("TimeZone"), Some("Pacific/Chatham"));
    let wanted = params(&[
        ("application_name", "it's \"quoted\"; DROP TABLE x"),
        ("TimeZone", "Pacific/Chatham"),
        ("DateStyle", "SQL, DMY"),
        ("client_encoding", "UTF8"),
    ]);
    bounded(60, "apply", session.apply_parameters(&wanted))
        .await
        .unwrap();
    // Bound values, not SQL: the quotes and the semicolon are the value.
    assert_eq!(
        session.parameter("application_name"),
        Some("it's \"quoted\"; DROP TABLE x")
    );
    assert_eq!(session.parameter("TimeZone"), Some("Pacific/Chatham"));
    assert_eq!(session.parameter("DateStyle"), Some("SQL, DMY"));
    let names: Vec<&str> = session.parameters().iter().map(|(k, _)| k.as_str()).collect();
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(names.len(), unique.len(), "each parameter once: {names:?}");
    assert!(session.greeting().len() > before);
    assert!(session.is_open());
    // An empty set is still a round trip that proves the session open.
    bounded(60, "apply nothing", session.apply_parameters(&[]))
        .await
        .unwrap();
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_the_server_takes_only_at_start_or_refuses_fails_with_its_error() {
    let emulator = Emulator::start().await.unwrap();
    for (name, value) in [
        ("options", "-c search_path=x"),
        ("no_such_parameter", "1"),
        ("DateStyle", "access token"),
    ] {
        let mut session = session(&emulator).await;
        let err = bounded(60, "apply", session.apply_parameters(&params(&[(name, value)])))
            .await
            .unwrap_err();
        match &err {
            SessionError::Server { severity, code, .. } => {
                assert_eq!(severity, "ERROR", "{name}: {err}");
                assert!(!code.is_empty(), "{name}: {err}");
            }
            other => panic!("{name}: not the server's refusal: {other}"),
        }
        session.close().await;
    }
    let mut session = session(&emulator).await;
    let err = session
        .apply_parameters(&params(&[("user", "someone_else")]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SessionError::ReservedParameter(ref p) if p == "user"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_ended_is_closed_and_cannot_take_parameters() {
    let emulator = Emulator::start().await.unwrap();
    let mut session = session(&emulator).await;
    entra_testkit::terminate_sessions(emulator.gate(), emulator.user(), 1, 60).await;
    // The server's FATAL and the end of the stream arrive when they arrive; the round trip sees either.
    let err = bounded(60, "apply", session.apply_parameters(&[]))
        .await
        .unwrap_err();
    match &err {
        SessionError::Server { severity, .. } => assert_eq!(severity, "FATAL", "{err}"),
        SessionError::Protocol { .. } => {}
        other => panic!("{other}"),
    }
    entra_testkit::until(60, "the end of the stream seen", || !session.is_open()).await;
}
