//! Reading a token's claims without verifying it: for what the client may want to know (its expiry, the
//! name it signs in as), never for trust. The server verifies.

use serde_json::{Map, Value};

/// The claims (payload) of a JWT, or `None` when the text is not a JWT with a JSON-object payload.
/// Nothing is verified.
///
/// ```
/// use base64::Engine;
/// let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// let jwt = format!("{}.{}.sig", e.encode(r#"{"alg":"RS256"}"#), e.encode(r#"{"oid":"42"}"#));
/// let claims = entra_token::unverified_claims(&jwt).unwrap();
/// assert_eq!(claims["oid"], "42");
/// assert!(entra_token::unverified_claims("hunter2").is_none());
/// ```
pub fn unverified_claims(jwt: &str) -> Option<Map<String, Value>> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
