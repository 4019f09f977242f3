//! Minting access tokens and shaping the 200 bodies of each endpoint, numbers and dates included.

use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::identity::fault::NumberFormat;
use crate::identity::state::Shared;
use crate::jwt::Claims;

/// Who a token is for.
pub(crate) struct Principal<'a> {
    pub(crate) object_id: &'a str,
    pub(crate) client_id: &'a str,
    /// The managed identity's resource id (`xms_mirid`); `None` for apps.
    pub(crate) resource_id: Option<&'a str>,
}

/// A signed token and the times it carries.
pub(crate) struct Minted {
    pub(crate) access_token: String,
    pub(crate) expires_on: u64,
    pub(crate) expires_in: u64,
    pub(crate) not_before: u64,
}

/// Signs a token for `principal` with `aud` = `resource`, with the current lifetime and padding.
pub(crate) fn mint(shared: &Shared, principal: &Principal<'_>, resource: &str) -> Minted {
    let settings = shared.settings();
    let mut claims = Claims::new(principal.object_id, settings.lifetime);
    claims.aud = resource.to_string();
    claims.appid = Some(principal.client_id.to_string());
    claims.xms_mirid = principal.resource_id.map(str::to_string);
    if settings.padding > 0 {
        claims = claims.padded_to(settings.padding);
    }
    Minted {
        access_token: shared.issuer.sign(&claims),
        expires_on: claims.exp,
        expires_in: claims.exp.saturating_sub(claims.iat),
        not_before: claims.nbf,
    }
}

/// Which endpoint's 200 body to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// IMDS, Arc and Cloud Shell: every number a string, with `expires_in` and `refresh_token`.
    Imds,
    /// App Service 2019-08-01: `expires_on` as a string of epoch seconds, no `expires_in`.
    AppService,
    /// App Service 2017-09-01: `expires_on` as a date.
    AppServiceLegacy,
    /// Entra v2: numbers.
    Entra,
}

/// The 200 body for `minted`, in `shape`, with numbers as `format` says.
pub(crate) fn body(
    shape: Shape,
    format: NumberFormat,
    minted: &Minted,
    resource: &str,
    client_id: &str,
) -> Value {
    let spec_strings = shape != Shape::Entra;
    let number = |n: u64| -> Value {
        let as_string = match format {
            NumberFormat::Strings => true,
            NumberFormat::Numbers => false,
            NumberFormat::AsSpec | NumberFormat::Dates => spec_strings,
        };
        if as_string {
            Value::String(n.to_string())
        } else {
            json!(n)
        }
    };
    let expires_on = match format {
        NumberFormat::Dates => Value::String(legacy_date(minted.expires_on)),
        NumberFormat::AsSpec if shape == Shape::AppServiceLegacy => {
            Value::String(legacy_date(minted.expires_on))
        }
        _ => number(minted.expires_on),
    };
    let mut body = Map::new();
    body.insert("access_token".into(), json!(minted.access_token));
    match shape {
        Shape::Imds => {
            body.insert("refresh_token".into(), json!(""));
            body.insert("expires_in".into(), number(minted.expires_in));
            body.insert("expires_on".into(), expires_on);
            body.insert("not_before".into(), number(minted.not_before));
            body.insert("resource".into(), json!(resource));
            body.insert("token_type".into(), json!("Bearer"));
            body.insert("client_id".into(), json!(client_id));
        }
        Shape::AppService => {
            body.insert("expires_on".into(), expires_on);
            body.insert("not_before".into(), number(minted.not_before));
            body.insert("resource".into(), json!(resource));
            body.insert("token_type".into(), json!("Bearer"));
            body.insert("client_id".into(), json!(client_id));
        }
        Shape::AppServiceLegacy => {
            body.insert("expires_on".into(), expires_on);
            body.insert("resource".into(), json!(resource));
            body.insert("token_type".into(), json!("Bearer"));
        }
        Shape::Entra => {
            body.insert("token_type".into(), json!("Bearer"));
            body.insert("expires_in".into(), number(minted.expires_in));
            body.insert("ext_expires_in".into(), number(minted.expires_in));
            if format == NumberFormat::Dates {
                // Entra sends no expires_on; with Dates a test asks for one anyway.
                body.insert("expires_on".into(), expires_on);
            }
        }
    }
    Value::Object(body)
}

/// `epoch` as the legacy App Service date, `MM/DD/YYYY HH:MM:SS +00:00`.
pub(crate) fn legacy_date(epoch: u64) -> String {
    let format = time::macros::format_description!("[month]/[day]/[year] [hour]:[minute]:[second] +00:00");
    format_epoch(epoch, format)
}

/// `epoch` as Entra's error timestamp, `YYYY-MM-DD HH:MM:SSZ`.
pub(crate) fn entra_timestamp(epoch: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    format_epoch(epoch, format)
}

fn format_epoch(epoch: u64, format: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    i64::try_from(epoch)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted() -> Minted {
        Minted {
            access_token: "tok".into(),
            expires_on: 1_795_446_245,
            expires_in: 3600,
            not_before: 1_795_442_345,
        }
    }

    #[test]
    fn legacy_dates_are_month_first_utc() {
        assert_eq!(legacy_date(1_795_446_245), "11/23/2026 15:04:05 +00:00");
        assert_eq!(entra_timestamp(1_795_446_245), "2026-11-23 15:04:05Z");
    }

    #[test]
    fn managed_identity_numbers_are_strings_and_entra_numbers_are_numbers() {
        let imds = body(Shape::Imds, NumberFormat::AsSpec, &minted(), "r", "c");
        assert_eq!(imds["expires_in"], json!("3600"));
        assert_eq!(imds["expires_on"], json!("1795446245"));
        assert_eq!(imds["refresh_token"], json!(""));
        let entra = body(Shape::Entra, NumberFormat::AsSpec, &minted(), "r", "c");
        assert_eq!(entra["expires_in"], json!(3600));
        assert!(entra.get("expires_on").is_none());
        let legacy = body(Shape::AppServiceLegacy, NumberFormat::AsSpec, &minted(), "r", "c");
        assert_eq!(legacy["expires_on"], json!("11/23/2026 15:04:05 +00:00"));
    }

    #[test]
    fn number_format_overrides_the_spec() {
        let numbers = body(Shape::Imds, NumberFormat::Numbers, &minted(), "r", "c");
        assert_eq!(numbers["expires_on"], json!(1_795_446_245u64));
        let strings = body(Shape::Entra, NumberFormat::Strings, &minted(), "r", "c");
        assert_eq!(strings["expires_in"], json!("3600"));
        let dates = body(Shape::AppService, NumberFormat::Dates, &minted(), "r", "c");
        assert_eq!(dates["expires_on"], json!("11/23/2026 15:04:05 +00:00"));
        assert_eq!(dates["not_before"], json!("1795442345"));
    }
}
