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

/// Options for loopback tests: short, but far above anything a healthy local request takes.
pub fn http() -> HttpOptions {
    HttpOptions::default()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
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

/// Asserts the token expires about `lifetime` from now (a wide window: this is no timing test).
pub fn assert_lifetime(token: &AccessToken, lifetime: Duration) {
    let now = SystemTime::now();
    let low = now + lifetime - Duration::from_secs(120);
    let high = now + lifetime + Duration::from_secs(120);
    let at = token.expires_on();
    assert!(
        at > low && at < high,
        "expiry {:?} not about {lifetime:?} from now",
        at.duration_since(now)
    );
}

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
