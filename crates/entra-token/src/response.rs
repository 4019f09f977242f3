//! Token responses of every endpoint: the access token, its expiry and the issuer's refresh advice.
//!
//! The endpoints disagree on shapes (IMDS sends every number as a JSON string, Entra v2 sends numbers,
//! legacy App Service sends `expires_on` as a date), so each numeric field is accepted as a number or a
//! string and `expires_on` also as any of the dates the Azure SDKs parse.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::{AccessToken, TokenError};

/// Parses a token response body into an [`AccessToken`], taking `now` as the moment it was received.
///
/// Expiry is `expires_on` when present, else `now + expires_in`; `refresh_in`, when present, gives the
/// refresh time. Unknown fields are ignored. A missing token or expiry, or a field of the wrong type, is
/// [`TokenError::InvalidResponse`] naming the field; the message never quotes the token.
pub(crate) fn parse_token_response(
    source_name: &str,
    body: &str,
    now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let mut value: Value = serde_json::from_str(body).map_err(|e| {
        TokenError::invalid_response(
            source_name,
            format!(
                "the body is not JSON ({e}): {}",
                crate::redact::redacted_snippet(body)
            ),
        )
    })?;
    let result = match &value {
        Value::Object(fields) => token_from_fields(source_name, fields, now),
        _ => Err(TokenError::invalid_response(
            source_name,
            "the body is JSON but not an object",
        )),
    };
    zeroize_strings(&mut value);
    result
}

/// Overwrites every string of a parsed body (the token among them) before it is freed.
pub(crate) fn zeroize_strings(value: &mut Value) {
    use zeroize::Zeroize;
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        Value::Object(fields) => fields.values_mut().for_each(zeroize_strings),
        _ => {}
    }
}

fn token_from_fields(
    source_name: &str,
    fields: &Map<String, Value>,
    now: SystemTime,
) -> Result<AccessToken, TokenError> {
    let invalid = |reason: String| TokenError::invalid_response(source_name, reason);

    let secret = match fields.get("access_token") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim(),
        Some(Value::String(_)) => return Err(invalid("\"access_token\" is empty".into())),
        Some(other) => {
            return Err(invalid(format!(
                "\"access_token\" must be a string, not {}",
                type_name(other)
            )))
        }
        None => return Err(invalid("the response has no \"access_token\"".into())),
    };

    let expires_in = seconds_field(fields, "expires_in").map_err(invalid)?;
    let refresh_in = seconds_field(fields, "refresh_in").map_err(invalid)?;
    // Not used to decide anything, but a malformed one says the response is not what we think it is.
    seconds_field(fields, "not_before").map_err(invalid)?;
    let expires_on = match fields.get("expires_on") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(epoch)
                .ok_or_else(|| invalid(format!("\"expires_on\" is not a valid epoch time: {n}")))?,
        ),
        Some(Value::String(s)) => Some(parse_expiry(s).ok_or_else(|| {
            invalid(format!(
                "\"expires_on\" is neither epoch seconds nor a known date format: {:?}",
                cap(s, 64)
            ))
        })?),
        Some(other) => {
            return Err(invalid(format!(
                "\"expires_on\" must be a number or a string, not {}",
                type_name(other)
            )))
        }
    };

    let expires_on = match (expires_on, expires_in) {
        (Some(at), _) => at,
        (None, Some(secs)) => now
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| invalid(format!("\"expires_in\" is out of range: {secs}")))?,
        (None, None) => {
            return Err(invalid(
                "the response has neither \"expires_on\" nor \"expires_in\"".into(),
            ))
        }
    };
    let refresh_on = match refresh_in {
        Some(secs) => Some(
            now.checked_add(Duration::from_secs(secs))
                .ok_or_else(|| invalid(format!("\"refresh_in\" is out of range: {secs}")))?,
        ),
        None => None,
    };
    Ok(AccessToken::with_refresh_on(secret, expires_on, refresh_on))
}

/// A whole number of seconds sent as a JSON number or a string; `Ok(None)` when absent or null.
fn seconds_field(fields: &Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                // Some proxies re-serialise integers as floats (3599.0): accept whole values only.
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e15)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| format!("\"{name}\" must be a whole number of seconds, not {n}")),
        Some(Value::String(s)) => parse_seconds(s).map(Some).ok_or_else(|| {
            format!(
                "\"{name}\" must be a whole number of seconds, not {:?}",
                cap(s, 32)
            )
        }),
        Some(other) => Err(format!(
            "\"{name}\" must be a number or a string, not {}",
            type_name(other)
        )),
    }
}

fn parse_seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn epoch(secs: u64) -> Option<SystemTime> {
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn cap(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Parses a token expiry as the Azure endpoints and tools send it.
///
/// Accepted forms:
/// - epoch seconds: `"1767312000"`;
/// - legacy App Service dates: `"01/02/2006 15:04:05"`, `"1/2/2006 3:04:05 PM"`, either optionally
///   followed by an offset such as `" +00:00"`;
/// - `"2006-01-02 15:04:05"` (optionally with fractional seconds);
/// - RFC 3339: `"2006-01-02T15:04:05Z"`, `"2006-01-02T15:04:05.5+02:00"`.
///
/// Dates without an offset are taken as UTC, as MSAL does; the Azure CLI's `expiresOn` is local time, so
/// prefer its `expires_on` epoch field. Returns `None` for anything else: `"11/23/2026 3:04:05 PM +00:00"`
/// and `"2026-11-23T15:04:05Z"` are the same instant, `"60"` is a minute after the epoch.
pub(crate) fn parse_expiry(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Some(secs) = parse_seconds(value) {
        return epoch(secs);
    }
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t.into());
    }
    let (local, offset) = split_offset(value);
    let formats: [&[time::format_description::BorrowedFormatItem<'_>]; 4] = [
        format_description!(
            "[month padding:none]/[day padding:none]/[year] [hour padding:none repr:12]:[minute]:[second] [period case_sensitive:false]"
        ),
        format_description!(
            "[month padding:none]/[day padding:none]/[year] [hour padding:none]:[minute]:[second]"
        ),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"),
    ];
    formats.iter().find_map(|format| {
        PrimitiveDateTime::parse(local, format)
            .ok()
            .map(|t| t.assume_offset(offset).into())
    })
}

/// Splits a trailing `" +hh:mm"` / `" -hh:mm"` / `" Z"` offset off a date, defaulting to UTC.
fn split_offset(value: &str) -> (&str, UtcOffset) {
    if let Some((local, suffix)) = value.rsplit_once(' ') {
        if suffix.eq_ignore_ascii_case("z") || suffix.eq_ignore_ascii_case("utc") {
            return (local.trim_end(), UtcOffset::UTC);
        }
        let format = format_description!("[offset_hour sign:mandatory]:[offset_minute]");
        if let Ok(offset) = UtcOffset::parse(suffix, format) {
            return (local.trim_end(), offset);
        }
    }
    (value, UtcOffset::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_SECS: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn parse(body: &str) -> Result<AccessToken, TokenError> {
        parse_token_response("test", body, now())
    }

    fn invalid_reason(body: &str) -> String {
        match parse(body) {
            Err(TokenError::InvalidResponse { reason, .. }) => reason,
            other => panic!("expected InvalidResponse for {body}, got {other:?}"),
        }
    }

    #[test]
    fn imds_shape_with_every_number_a_string() {
        let t = parse(
            r#"{"access_token":"tok","refresh_token":"","expires_in":"86399","expires_on":"1800086399",
               "not_before":"1799999700","resource":"https://x","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(t.secret(), "tok");
        assert_eq!(t.expires_on(), at(1_800_086_399));
        assert_eq!(t.refresh_on(), None);
    }

    #[test]
    fn entra_shape_with_numbers_and_refresh_in() {
        let t = parse(r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"refresh_in":1800,"access_token":"tok"}"#)
            .unwrap();
        assert_eq!(t.expires_on(), at(NOW_SECS + 3599));
        assert_eq!(t.refresh_on(), Some(at(NOW_SECS + 1800)));
    }

    #[test]
    fn numbers_and_strings_are_interchangeable_for_every_numeric_field() {
        for (expires_in, refresh_in) in [
            ("3600", "1800"),
            ("\"3600\"", "\"1800\""),
            ("3600", "\"1800\""),
            ("\" 3600 \"", "1800"),
            ("3600.0", "1800.0"),
        ] {
            let body = format!(
                r#"{{"access_token":"t","expires_in":{expires_in},"refresh_in":{refresh_in},"not_before":"1"}}"#
            );
            let t = parse(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(t.expires_on(), at(NOW_SECS + 3600), "{body}");
            assert_eq!(t.refresh_on(), Some(at(NOW_SECS + 1800)), "{body}");
        }
    }

    #[test]
    fn expires_on_wins_over_expires_in() {
        let t = parse(r#"{"access_token":"t","expires_in":10,"expires_on":1900000000}"#).unwrap();
        assert_eq!(t.expires_on(), at(1_900_000_000));
    }

    #[test]
    fn legacy_app_service_date_is_parsed() {
        let t = parse(r#"{"access_token":"t","expires_on":"11/23/2026 3:04:05 PM +00:00"}"#).unwrap();
        assert_eq!(t.expires_on(), parse_expiry("2026-11-23T15:04:05Z").unwrap());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let t =
            parse(r#"{"access_token":"t","expires_in":"60","client_id":"abc","extra":{"a":[1,2]}}"#).unwrap();
        assert_eq!(t.expires_on(), at(NOW_SECS + 60));
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let cases = [
            (r#"{"expires_in":60}"#, "access_token"),
            (r#"{"access_token":"","expires_in":60}"#, "access_token"),
            (r#"{"access_token":42,"expires_in":60}"#, "access_token"),
            (r#"{"access_token":"t"}"#, "expires_in"),
            (r#"{"access_token":"t","expires_in":true}"#, "expires_in"),
            (r#"{"access_token":"t","expires_in":"soon"}"#, "expires_in"),
            (r#"{"access_token":"t","expires_in":-5}"#, "expires_in"),
            (r#"{"access_token":"t","expires_in":1.5}"#, "expires_in"),
            (r#"{"access_token":"t","expires_on":"yesterday"}"#, "expires_on"),
            (r#"{"access_token":"t","expires_on":[1]}"#, "expires_on"),
            (r#"{"access_token":"t","expires_on":-1}"#, "expires_on"),
            (
                r#"{"access_token":"t","expires_in":60,"refresh_in":{}}"#,
                "refresh_in",
            ),
            (
                r#"{"access_token":"t","expires_in":60,"not_before":"x"}"#,
                "not_before",
            ),
        ];
        for (body, field) in cases {
            let reason = invalid_reason(body);
            assert!(reason.contains(field), "{body}: {reason}");
        }
    }

    #[test]
    fn errors_never_quote_the_token() {
        for body in [
            r#"{"access_token":"SECRET-TOKEN-TEXT","expires_in":"never"}"#,
            r#"{"access_token":"SECRET-TOKEN-TEXT"}"#,
            r#"{"access_token":"SECRET-TOKEN-TEXT","expires_on":"whenever"}"#,
            r#"{"access_token":"SECRET-TOKEN-TEXT","expires_in":"#,
            r#"not json "access_token":"SECRET-TOKEN-TEXT""#,
        ] {
            let err = parse(body).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("SECRET-TOKEN-TEXT"), "{shown}");
        }
    }

    #[test]
    fn non_json_and_non_objects_are_invalid() {
        for body in ["", "<html>hi</html>", "[1,2]", "\"tok\"", "{\"access_token\":"] {
            invalid_reason(body);
        }
    }

    #[test]
    fn out_of_range_numbers_do_not_panic() {
        for body in [
            r#"{"access_token":"t","expires_in":18446744073709551615}"#,
            r#"{"access_token":"t","expires_on":"18446744073709551615"}"#,
            r#"{"access_token":"t","expires_in":"99999999999999999999999"}"#,
            r#"{"access_token":"t","expires_in":60,"refresh_in":18446744073709551615}"#,
            r#"{"access_token":"t","expires_in":1e300}"#,
        ] {
            invalid_reason(body);
        }
    }

    #[test]
    fn every_date_form_names_the_same_instant() {
        let expected = OffsetDateTime::parse("2026-11-23T15:04:05Z", &Rfc3339)
            .unwrap()
            .unix_timestamp() as u64;
        for form in [
            "1795446245",
            " 1795446245 ",
            "11/23/2026 15:04:05",
            "11/23/2026 15:04:05 +00:00",
            "11/23/2026 3:04:05 PM",
            "11/23/2026 3:04:05 PM +00:00",
            "11/23/2026 03:04:05 pm +00:00",
            "11/23/2026 5:04:05 PM +02:00",
            "11/23/2026 10:04:05 AM -05:00",
            "2026-11-23 15:04:05",
            "2026-11-23 15:04:05.000000",
            "2026-11-23 15:04:05 Z",
            "2026-11-23T15:04:05Z",
            "2026-11-23T15:04:05.000+00:00",
            "2026-11-23T16:04:05+01:00",
        ] {
            assert_eq!(parse_expiry(form), Some(at(expected)), "{form}");
        }
    }

    #[test]
    fn twelve_hour_clock_edges() {
        let cases = [
            ("01/02/2006 12:00:00 AM", "2006-01-02T00:00:00Z"),
            ("01/02/2006 12:00:00 PM", "2006-01-02T12:00:00Z"),
            ("1/2/2006 11:59:59 PM", "2006-01-02T23:59:59Z"),
            ("1/2/2006 1:00:00 AM +00:00", "2006-01-02T01:00:00Z"),
        ];
        for (form, rfc) in cases {
            assert_eq!(parse_expiry(form), parse_expiry(rfc), "{form}");
            assert!(parse_expiry(form).is_some(), "{form}");
        }
    }

    #[test]
    fn unpadded_and_padded_month_day_agree_for_every_day_of_a_year() {
        let mut t = OffsetDateTime::parse("2027-01-01T00:00:00Z", &Rfc3339).unwrap();
        for _ in 0..365 {
            let (m, d, y) = (u8::from(t.month()), t.day(), t.year());
            let hour24 = (d as u32 * 7) % 24;
            let (h12, period) = match hour24 {
                0 => (12, "AM"),
                1..=11 => (hour24, "AM"),
                12 => (12, "PM"),
                _ => (hour24 - 12, "PM"),
            };
            let expected = t + time::Duration::hours(hour24.into()) + time::Duration::seconds(61);
            let expected = Some(SystemTime::from(expected));
            for form in [
                format!("{m}/{d}/{y} {hour24}:01:01"),
                format!("{m:02}/{d:02}/{y} {hour24:02}:01:01 +00:00"),
                format!("{m}/{d}/{y} {h12}:01:01 {period}"),
                format!("{y}-{m:02}-{d:02} {hour24:02}:01:01"),
                format!("{y}-{m:02}-{d:02}T{hour24:02}:01:01Z"),
            ] {
                assert_eq!(parse_expiry(&form), expected, "{form}");
            }
            t += time::Duration::days(1);
        }
    }

    #[test]
    fn garbage_dates_are_rejected() {
        for form in [
            "",
            "soon",
            "-1",
            "12.5",
            "13/01/2026 10:00:00",
            "02/30/2026 10:00:00",
            "11/23/2026 13:04:05 PM",
            "11/23/2026 25:04:05",
            "2026-11-23",
            "2026-11-23 15:04",
            "11/23/2026 3:04:05 PM +99:00",
            "2026-11-23T15:04:05",
        ] {
            assert_eq!(parse_expiry(form), None, "{form:?}");
        }
    }

    #[test]
    fn epoch_round_trips_for_many_values() {
        let mut x: u64 = 1;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let secs = x % 4_000_000_000;
            assert_eq!(parse_expiry(&secs.to_string()), Some(at(secs)));
            let body = format!(r#"{{"access_token":"t","expires_on":{secs}}}"#);
            assert_eq!(parse(&body).unwrap().expires_on(), at(secs));
            let body = format!(r#"{{"access_token":"t","expires_in":"{secs}"}}"#);
            assert_eq!(parse(&body).unwrap().expires_on(), at(NOW_SECS + secs));
        }
    }
}
