//! [`StaticSource`]: a fixed token, for tests and for tokens obtained elsewhere.

use crate::{AccessToken, Env, FetchFuture, TokenError, TokenSource};
use std::time::{Duration, SystemTime};

/// Hands out one fixed token (for example from `AZURE_ACCESS_TOKEN`, or one minted by another tool).
/// It never refreshes: once the token expires, fetches fail with
/// [`TokenError::AuthenticationFailed`].
#[derive(Debug, Clone)]
pub struct StaticSource {
    token: AccessToken,
}

impl StaticSource {
    /// The variable [`from_env`](Self::from_env) reads.
    pub const ENV_VAR: &'static str = "AZURE_ACCESS_TOKEN";

    /// A source that always returns `token`.
    pub fn new(token: AccessToken) -> Self {
        StaticSource { token }
    }

    /// A token from `AZURE_ACCESS_TOKEN`; its expiry is read from the JWT's `exp` claim when it has one,
    /// else taken as one hour from now.
    pub fn from_env(env: &Env) -> Result<Self, TokenError> {
        let secret = env
            .var(Self::ENV_VAR)
            .ok_or_else(|| TokenError::unavailable("static", format!("{} is not set", Self::ENV_VAR)))?;
        let expires_on = jwt_exp(&secret).unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
        Ok(StaticSource::new(AccessToken::new(secret, expires_on)))
    }
}

/// The `exp` claim of a JWT, without verifying anything (only to know when to stop using it).
fn jwt_exp(jwt: &str) -> Option<SystemTime> {
    let exp = crate::unverified_claims(jwt)?.get("exp")?.as_u64()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
}

impl TokenSource for StaticSource {
    fn name(&self) -> &str {
        "static"
    }

    fn fetch<'a>(&'a self, _scope: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            if self.token.expires_on() <= SystemTime::now() {
                return Err(TokenError::auth_failed(
                    "static",
                    format!(
                        "the fixed token ({}) has expired; supply a new one",
                        self.token.fingerprint()
                    ),
                ));
            }
            Ok(self.token.clone())
        })
    }
}
