//! A token's claims, decoded for people (`token --json`, `doctor`). Nothing is verified: the server
//! does that; this only shows who the token says it is for.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

/// The claims shown; never the signature or the token itself.
const SHOWN: &[&str] = &[
    "aud",
    "iss",
    "tid",
    "oid",
    "appid",
    "azp",
    "sub",
    "upn",
    "preferred_username",
    "xms_mirid",
    "idtyp",
];
const DATES: &[&str] = &["exp", "iat", "nbf"];

/// The payload of a JWT, or `None` when the text is not one.
pub(crate) fn decode(jwt: &str) -> Option<Map<String, Value>> {
    entra_token::unverified_claims(jwt)
}

/// The claims worth showing, with `exp`/`iat`/`nbf` as RFC 3339 dates.
pub(crate) fn shown(claims: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for name in SHOWN {
        if let Some(v) = claims.get(*name) {
            out.insert((*name).to_string(), v.clone());
        }
    }
    for name in DATES {
        if let Some(secs) = claims.get(*name).and_then(Value::as_i64) {
            let text = epoch_to_rfc3339(secs).unwrap_or_else(|| secs.to_string());
            out.insert((*name).to_string(), Value::String(text));
        }
    }
    out
}

/// A claim as text (`aud` may be a list; its first entry is shown).
pub(crate) fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_string),
        other => Some(other.to_string()),
    }
}

pub(crate) fn epoch_to_rfc3339(secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

pub(crate) fn system_time_to_rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    epoch_to_rfc3339(secs).unwrap_or_else(|| format!("{secs} (epoch seconds)"))
}

/// `1h 02m`, `4m 05s`, `12s`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn jwt(claims: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", e.encode(r#"{"alg":"RS256"}"#), e.encode(claims))
    }

    #[test]
    fn shows_identity_claims_and_dates_but_nothing_else() {
        let claims = decode(&jwt(
            r#"{"aud":"https://ossrdbms-aad.database.windows.net","oid":"o","exp":0,"secret_thing":"x"}"#,
        ))
        .unwrap();
        let shown = shown(&claims);
        assert_eq!(shown["aud"], "https://ossrdbms-aad.database.windows.net");
        assert_eq!(shown["exp"], "1970-01-01T00:00:00Z");
        assert!(!shown.contains_key("secret_thing"));
    }

    #[test]
    fn non_jwts_decode_to_nothing() {
        assert!(decode("not-a-jwt").is_none());
        assert!(decode("a.bm90IGpzb24.c").is_none());
    }

    #[test]
    fn durations_read_like_a_person_wrote_them() {
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(245)), "4m 05s");
        assert_eq!(human(Duration::from_secs(3720)), "1h 02m");
    }
}
