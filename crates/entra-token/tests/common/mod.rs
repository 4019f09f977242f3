//! Helpers shared by the HTTP source tests: environments, options and token checks against
//! `entra_emulator::FakeIdentity`.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use entra_emulator::{Claims, FakeIdentity, OSSRDBMS_RESOURCE};
use entra_token::{AccessToken, Env, HttpOptions, ImdsSource, TokenError};

/// An environment of exactly these variables.
pub fn env(pairs: &[(&str, String)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())))
}

/// Options for loopback tests. Their timeouts are hang bounds: far above anything a local request
/// takes, even on a busy machine (tests of the timeouts themselves set their own).
pub fn http() -> HttpOptions {
    HttpOptions::default()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(30))
}

/// An IMDS source for the fake's system identity, found as on a VM whose IMDS address was moved.
pub fn imds(fake: &FakeIdentity) -> ImdsSource {
    ImdsSource::builder()
        .env(env(&[(
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            fake.imds_authority(),
        )]))
        .http_options(http())
        .build()
        .expect("an http URL")
}

/// [`http`] trusting the fake's CA (the fake must have been started with TLS).
pub fn tls_http(fake: &FakeIdentity) -> HttpOptions {
    http()
        .with_ca_pem(&fake.ca_pem().expect("the fake was started with .tls(true)"))
        .expect("the fake's CA is valid PEM")
}

/// The claims of a token the fake issued, verified with its key.
pub fn claims(fake: &FakeIdentity, token: &AccessToken) -> Claims {
    fake.issuer()
        .verify(token.secret(), OSSRDBMS_RESOURCE, Duration::from_secs(60))
        .expect("the token is one the fake signed")
}

/// Asserts the token expires `lifetime` after it was issued. The moment of issue is bracketed by two
/// readings of the wall clock: `before`, taken before the fetch, and one taken now, after it; no window is
/// allowed beyond that bracket, except that an expiry sent as a date or as Unix seconds is cut to the
/// whole second, which can put it up to 1 s before `before + lifetime`.
pub fn assert_lifetime(before: SystemTime, token: &AccessToken, lifetime: Duration) {
    let after = SystemTime::now();
    let earliest = before + lifetime - WHOLE_SECOND;
    let latest = after + lifetime;
    let at = token.expires_on();
    assert!(
        at >= earliest && at <= latest,
        "expiry {:?} after the fetch began, not {lifetime:?} after a moment of the fetch ({:?} long)",
        at.duration_since(before).unwrap_or_default(),
        after.duration_since(before).unwrap_or_default()
    );
}

/// The resolution of an expiry sent as a date or as Unix seconds.
pub const WHOLE_SECOND: Duration = Duration::from_secs(1);

/// Asserts neither the error's `Display` nor its `Debug` quotes `secret`.
pub fn assert_hides(err: &TokenError, secret: &str) {
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "the error quotes a secret: {shown}");
}

pub fn status_of(err: &TokenError) -> Option<u16> {
    match err {
        TokenError::Transient { status, .. } | TokenError::AuthenticationFailed { status, .. } => *status,
        _ => None,
    }
}

/// An [`ImdsSource`](entra_token::ImdsSource) asking the fake's IMDS for the system identity, with
/// loopback [`http`] options.
pub fn imds_source(fake: &FakeIdentity) -> entra_token::ImdsSource {
    entra_token::ImdsSource::builder()
        .endpoint(fake.imds_authority())
        .http_options(http())
        .build()
        .expect("a loopback IMDS endpoint is a valid configuration")
}
