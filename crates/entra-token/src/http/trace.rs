//! [`traced_fetch`]: the `token_fetch` span around one fetch of an HTTP source.

use std::future::Future;

use tracing::Instrument;

use crate::{AccessToken, TokenError};

/// Runs one fetch inside a `token_fetch` span recording the source, the outcome and the token's
/// remaining lifetime (never the token).
pub(crate) async fn traced_fetch<F>(source_name: &str, fetch: F) -> Result<AccessToken, TokenError>
where
    F: Future<Output = Result<AccessToken, TokenError>>,
{
    let span = tracing::info_span!(
        "token_fetch",
        source = source_name,
        outcome = tracing::field::Empty,
        expires_in = tracing::field::Empty,
    );
    let result = fetch.instrument(span.clone()).await;
    match &result {
        Ok(token) => {
            span.record("outcome", "ok");
            span.record("expires_in", token.expires_in().as_secs());
            tracing::debug!(parent: &span, token = %token.fingerprint(), "token fetched");
        }
        Err(e) => {
            span.record("outcome", error_outcome(e));
            tracing::debug!(parent: &span, error = %e, "token fetch failed");
        }
    }
    result
}

fn error_outcome(e: &TokenError) -> &'static str {
    match e {
        TokenError::CredentialUnavailable { .. } => "unavailable",
        TokenError::AuthenticationFailed { .. } => "auth_failed",
        TokenError::Transient { .. } => "transient",
        TokenError::InvalidResponse { .. } => "invalid_response",
        e if e.is_config() => "config",
        _ => "error",
    }
}
