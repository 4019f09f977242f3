//! Property tests of token response parsing and `parse_expiry`: no input panics, every accepted form
//! means what it says, and no error ever quotes the token.

use std::time::{Duration, SystemTime};

use entra_token::__fuzz::parse_expiry;
use entra_token::__fuzz::parse_token_response;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NOW_SECS: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn at_signed(secs: i64, nanos: u32) -> SystemTime {
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    base + Duration::from_nanos(nanos.into())
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm), computed independently of the
/// `time` crate the parser uses.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A valid date-time with an offset in minutes east of UTC and a fraction of a second (as digits).
#[derive(Debug, Clone)]
struct Instant {
    y: i64,
    mo: i64,
    d: i64,
    h: i64,
    mi: i64,
    s: i64,
    offset_min: i64,
    fraction: String,
}

impl Instant {
    fn expected(&self, with_offset: bool, with_fraction: bool) -> SystemTime {
        let offset = if with_offset { self.offset_min } else { 0 };
        let secs = days_from_civil(self.y, self.mo, self.d) * 86_400 + self.h * 3600 + self.mi * 60 + self.s
            - offset * 60;
        let nanos = if with_fraction {
            format!("{:0<9}", self.fraction).parse::<u32>().unwrap()
        } else {
            0
        };
        at_signed(secs, nanos)
    }

    fn offset_text(&self) -> String {
        let sign = if self.offset_min < 0 { '-' } else { '+' };
        let abs = self.offset_min.abs();
        format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
    }
}

fn instants() -> impl Strategy<Value = Instant> {
    (1971i64..=9998, 1i64..=12)
        .prop_flat_map(|(y, mo)| {
            (
                Just(y),
                Just(mo),
                1..=days_in_month(y, mo),
                0i64..24,
                0i64..60,
                0i64..60,
                -(23 * 60 + 59)..=(23 * 60 + 59i64),
                "[0-9]{1,9}",
            )
        })
        .prop_map(|(y, mo, d, h, mi, s, offset_min, fraction)| Instant {
            y,
            mo,
            d,
            h,
            mi,
            s,
            offset_min,
            fraction,
        })
}

/// Text with the shape of a token (a JWT's alphabet), long enough not to occur by chance elsewhere.
fn token_text() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_~+/=-]{8,24}\\.[A-Za-z0-9_-]{8,24}\\.[A-Za-z0-9_-]{8,24}".prop_map(|t| format!("SECRET{t}"))
}

fn json_values() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KNOWN: &[&str] = &[
    "access_token",
    "expires_in",
    "expires_on",
    "refresh_in",
    "not_before",
];

fn extra_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(
        "[A-Za-z_]{1,16}".prop_filter("not a field the parser reads", |k| !KNOWN.contains(&k.as_str())),
        json_values(),
        0..6,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// 256 cases; `PROPTEST_CASES` and `PROPTEST_RNG_SEED` (fixed by `.ci/run`) override (TESTING.md).
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(body in ".{0,200}") {
        let _ = parse_token_response(&body, now());
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_values(), extra in extra_fields()) {
        let _ = parse_token_response(&value.to_string(), now());
        // Also with the known fields holding arbitrary values.
        let mut fields = extra;
        for (i, name) in KNOWN.iter().enumerate() {
            if let Value::Object(m) = &value {
                if let Some(v) = m.values().nth(i) {
                    fields.insert((*name).to_string(), v.clone());
                }
            }
        }
        let _ = parse_token_response(&Value::Object(fields).to_string(), now());
    }

    #[test]
    fn arbitrary_text_never_panics_parse_expiry(text in ".{0,64}") {
        let _ = parse_expiry(&text);
    }

    #[test]
    fn date_shaped_garbage_never_panics_parse_expiry(
        text in "[0-9]{1,20}[-/ :T.]{0,2}[0-9]{0,4}[-/ :T.]{0,2}[0-9]{0,4}[ :.]{0,2}[0-9]{0,12}( ?[AaPp][Mm])?( ?[+-Z][0-9:]{0,6})?"
    ) {
        let _ = parse_expiry(&text);
    }

    #[test]
    fn extra_fields_are_ignored(
        token in token_text(),
        expires_in in 1u64..=100_000,
        refresh_in in proptest::option::of(1u64..=100_000),
        extra in extra_fields(),
    ) {
        let mut fields = extra;
        fields.insert("access_token".into(), json!(token));
        fields.insert("expires_in".into(), json!(expires_in));
        if let Some(r) = refresh_in {
            fields.insert("refresh_in".into(), json!(r));
        }
        let parsed = parse_token_response(&Value::Object(fields).to_string(), now())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.secret(), token.as_str());
        prop_assert_eq!(parsed.expires_on(), now() + Duration::from_secs(expires_in));
        prop_assert_eq!(parsed.refresh_on(), refresh_in.map(|r| now() + Duration::from_secs(r)));
    }

    #[test]
    fn epoch_seconds_as_number_and_as_string_agree(
        secs in 0u64..=253_402_300_799,
        expires_in in 0u64..=1_000_000_000,
        pad_left in " {0,2}",
        pad_right in " {0,2}",
    ) {
        let on_number = parse_token_response(&json!({"access_token": "t", "expires_on": secs}).to_string(), now());
        let on_string = parse_token_response(
            &json!({"access_token": "t", "expires_on": format!("{pad_left}{secs}{pad_right}")}).to_string(),
            now(),
        );
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        prop_assert_eq!(on_number.map(|t| t.expires_on()).ok(), Some(want));
        prop_assert_eq!(on_string.map(|t| t.expires_on()).ok(), Some(want));
        prop_assert_eq!(parse_expiry(&format!("{pad_left}{secs}{pad_right}")), Some(want));

        let in_number = parse_token_response(&json!({"access_token": "t", "expires_in": expires_in}).to_string(), now());
        let in_string =
            parse_token_response(&json!({"access_token": "t", "expires_in": expires_in.to_string()}).to_string(), now());
        let want = now() + Duration::from_secs(expires_in);
        prop_assert_eq!(in_number.map(|t| t.expires_on()).ok(), Some(want));
        prop_assert_eq!(in_string.map(|t| t.expires_on()).ok(), Some(want));
    }

    #[test]
    fn every_listed_date_form_names_the_generated_instant(i in instants(), lower_period in any::<bool>()) {
        let (y, mo, d, h, mi, s) = (i.y, i.mo, i.d, i.h, i.mi, i.s);
        let (h12, period) = match h {
            0 => (12, "AM"),
            1..=11 => (h, "AM"),
            12 => (12, "PM"),
            _ => (h - 12, "PM"),
        };
        let period = if lower_period { period.to_ascii_lowercase() } else { period.to_string() };
        let off = i.offset_text();
        let frac = &i.fraction;
        let cases = [
            // (text, has offset, has fraction)
            (format!("{mo}/{d}/{y} {h12}:{mi:02}:{s:02} {period}"), false, false),
            (format!("{mo:02}/{d:02}/{y} {h12:02}:{mi:02}:{s:02} {period} {off}"), true, false),
            (format!("{mo}/{d}/{y} {h}:{mi:02}:{s:02}"), false, false),
            (format!("{mo:02}/{d:02}/{y} {h:02}:{mi:02}:{s:02} {off}"), true, false),
            (format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"), false, false),
            (format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} Z"), false, false),
            (format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} {off}"), true, false),
            (format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{frac}"), false, true),
            (format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"), false, false),
            (format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{off}"), true, false),
            (format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac}{off}"), true, true),
        ];
        for (text, with_offset, with_fraction) in cases {
            let want = i.expected(with_offset, with_fraction);
            prop_assert_eq!(parse_expiry(&text), Some(want), "{}", text);
            let body = json!({"access_token": "t", "expires_on": text}).to_string();
            let parsed = parse_token_response(&body, now()).map(|t| t.expires_on()).ok();
            prop_assert_eq!(parsed, Some(want), "{}", body);
        }
    }

    #[test]
    fn errors_never_quote_the_token(
        token in token_text(),
        expiry in prop_oneof![
            Just(None),
            Just(Some(json!("soon"))),
            Just(Some(json!(-1))),
            Just(Some(json!([1]))),
            ".{0,12}".prop_map(|s| Some(json!(s))),
        ],
        extra in extra_fields(),
        cut in any::<prop::sample::Index>(),
        spaced in any::<bool>(),
    ) {
        let mut fields = extra;
        if let Some(e) = expiry {
            fields.insert("expires_on".into(), e);
        }
        fields.insert("access_token".into(), json!(token));
        let whole = if spaced {
            serde_json::to_string_pretty(&Value::Object(fields)).unwrap()
        } else {
            Value::Object(fields).to_string()
        };
        // The body as received, and cut short at any character (a truncated response).
        let chars: Vec<char> = whole.chars().collect();
        let truncated: String = chars[..cut.index(chars.len())].iter().collect();
        for body in [&whole, &truncated] {
            if let Err(e) = parse_token_response(body, now()) {
                let shown = format!("{e} {e:?}");
                prop_assert!(!shown.contains(&token), "{} leaks the token: {}", body, shown);
            }
        }
    }
}
