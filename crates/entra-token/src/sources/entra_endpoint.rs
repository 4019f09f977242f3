//! The Entra ID v2 token endpoint that workload identity and client secrets share
//! (`azure-protocols.md` §4–5): where it is, how to ask, and what its errors mean.

use std::time::SystemTime;

use url::Url;

use super::managed_identity::ErrorBody;
use crate::http::{HttpClient, HttpOptions, HttpResponse};
use crate::response::parse_token_response;
use crate::{AccessToken, Env, TokenError};

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// `POST {authority}/{tenant}/oauth2/v2.0/token` for one tenant.
#[derive(Debug)]
pub(super) struct EntraEndpoint {
    token_url: Url,
    http: HttpClient,
}

impl EntraEndpoint {
    /// The endpoint of `tenant` at the authority given explicitly, else `AZURE_AUTHORITY_HOST`, else the
    /// public cloud's. The authority must be https ([`TokenError::MalformedUrl`],
    /// [`TokenError::UrlNotAllowed`]) and the tenant id well-formed ([`TokenError::InvalidTenantId`]).
    pub(super) fn new(
        authority: Option<&str>,
        env: &Env,
        tenant: &str,
        http: &HttpOptions,
    ) -> Result<Self, TokenError> {
        validate_tenant(tenant)?;
        let (what, authority) = match (authority, env.var("AZURE_AUTHORITY_HOST")) {
            (Some(a), _) => ("the authority host", a.to_string()),
            (None, Some(a)) => ("AZURE_AUTHORITY_HOST", a),
            (None, None) => ("the default authority host", DEFAULT_AUTHORITY.to_string()),
        };
        let base = Url::parse(authority.trim()).map_err(|error| TokenError::MalformedUrl {
            setting: what,
            value: authority.clone(),
            error,
        })?;
        if base.scheme() != "https" || base.host().is_none() {
            return Err(TokenError::UrlNotAllowed {
                setting: what,
                value: authority,
                required: "an https URL with a host (secrets are sent to it)",
            });
        }
        let token_url = format!(
            "{}/{tenant}/oauth2/v2.0/token",
            base.as_str().trim_end_matches('/')
        );
        let token_url = Url::parse(&token_url).map_err(|error| TokenError::MalformedUrl {
            setting: what,
            value: token_url.clone(),
            error,
        })?;
        Ok(EntraEndpoint {
            token_url,
            http: HttpClient::new(http)?,
        })
    }

    /// Posts the form and maps the answer to a token or a classified error.
    pub(super) async fn request(
        &self,
        source_name: &str,
        form: &[(&str, &str)],
    ) -> Result<AccessToken, TokenError> {
        let request = self.http.inner().post(self.token_url.clone()).form(form);
        let response = self.http.send(source_name, request).await?;
        token_from_entra_response(source_name, &response)
    }
}

/// Tenant ids are GUIDs or domain names; anything else would change the URL's path.
pub(super) fn validate_tenant(tenant: &str) -> Result<(), TokenError> {
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(TokenError::InvalidTenantId {
            tenant: crate::redact::cap_chars(tenant, 100),
        });
    }
    Ok(())
}

/// Maps an Entra v2 token response by `azure-protocols.md` §4: 400/401 (and any other client error) are
/// authentication failures carrying `AADSTS<n>`, 429 and 5xx are transient.
pub(super) fn token_from_entra_response(
    source_name: &str,
    response: &HttpResponse,
) -> Result<AccessToken, TokenError> {
    let status = response.status;
    if response.is_success() {
        return parse_token_response(source_name, &response.body, SystemTime::now());
    }
    let body = ErrorBody::parse(&response.body);
    let message = body.message(response);
    match status {
        429 | 500..=599 => Err(TokenError::Transient {
            source_name: source_name.to_string(),
            reason: format!("Entra ID is unavailable for now: {message}"),
            status: Some(status),
            retry_after: response.retry_after(),
        }),
        400..=499 => Err(TokenError::AuthenticationFailed {
            source_name: source_name.to_string(),
            reason: message,
            status: Some(status),
            error_code: aadsts_code(&body).or(body.error),
        }),
        _ => Err(TokenError::invalid_response(
            source_name,
            format!("unexpected HTTP {status}: {}", response.snippet()),
        )),
    }
}

/// `AADSTS<n>` from `error_codes`, else from the description's text.
fn aadsts_code(body: &ErrorBody) -> Option<String> {
    if let Some(code) = body.codes.first() {
        return Some(format!("AADSTS{code}"));
    }
    let description = body.description.as_deref()?;
    let start = description.find("AADSTS")? + "AADSTS".len();
    let digits: String = description[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use std::time::Duration;

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: HeaderMap::new(),
            body: body.to_string().into(),
        }
    }

    fn code_of(err: &TokenError) -> Option<&str> {
        match err {
            TokenError::AuthenticationFailed { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn client_errors_carry_the_aadsts_code() {
        let cases = [
            (
                400,
                r#"{"error":"invalid_scope","error_description":"AADSTS70011: bad scope","error_codes":[70011]}"#,
                "AADSTS70011",
            ),
            (
                401,
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#,
                "AADSTS7000215",
            ),
            (
                400,
                r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.","error_codes":[700024]}"#,
                "AADSTS700024",
            ),
            (400, r#"{"error":"unauthorized_client"}"#, "unauthorized_client"),
        ];
        for (status, body, code) in cases {
            let err = token_from_entra_response("t", &response(status, body)).unwrap_err();
            assert_eq!(code_of(&err), Some(code), "{body}: {err:?}");
            assert!(!err.is_retryable());
        }
        let err = token_from_entra_response(
            "t",
            &response(400, r#"{"error_description":"AADSTS90002: Tenant not found"}"#),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Tenant not found"), "{err}");
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for status in [429, 500, 503] {
            let mut r = response(status, "oops");
            r.headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
            let err = token_from_entra_response("t", &r).unwrap_err();
            assert!(matches!(err, TokenError::Transient { status: Some(s), .. } if s == status));
            assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        }
    }

    #[test]
    fn tenant_ids_are_validated() {
        for ok in [
            "contoso.onmicrosoft.com",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "organizations",
        ] {
            validate_tenant(ok).unwrap();
        }
        for bad in ["", "a/b", "../x", "t?x=1", "t#", "t t", "tenanté"] {
            let err = validate_tenant(bad).unwrap_err();
            assert!(
                matches!(&err, TokenError::InvalidTenantId { .. })
                    && err.to_string().contains("AZURE_TENANT_ID"),
                "{bad}"
            );
        }
    }

    #[test]
    fn authority_must_be_https() {
        let env = Env::from_pairs([("AZURE_AUTHORITY_HOST", "http://127.0.0.1:1")]);
        let err = EntraEndpoint::new(None, &env, "t", &HttpOptions::default()).unwrap_err();
        assert!(
            matches!(&err, TokenError::UrlNotAllowed { .. })
                && err.to_string().contains("AZURE_AUTHORITY_HOST")
                && err.to_string().contains("https"),
            "{err:?}"
        );
        let err = EntraEndpoint::new(Some("ftp://x"), &env, "t", &HttpOptions::default()).unwrap_err();
        assert!(matches!(err, TokenError::UrlNotAllowed { .. }));
    }

    #[test]
    fn token_url_joins_authority_and_tenant() {
        let env = Env::from_pairs([("AZURE_AUTHORITY_HOST", "https://login.example.com/")]);
        let e = EntraEndpoint::new(None, &env, "tid", &HttpOptions::default()).unwrap();
        assert_eq!(
            e.token_url.as_str(),
            "https://login.example.com/tid/oauth2/v2.0/token"
        );
        let e = EntraEndpoint::new(
            Some("https://other.example"),
            &env,
            "tid",
            &HttpOptions::default(),
        )
        .unwrap();
        assert_eq!(
            e.token_url.as_str(),
            "https://other.example/tid/oauth2/v2.0/token"
        );
        let e = EntraEndpoint::new(
            None,
            &Env::from_pairs::<&str, &str>([]),
            "tid",
            &HttpOptions::default(),
        )
        .unwrap();
        assert_eq!(
            e.token_url.as_str(),
            "https://login.microsoftonline.com/tid/oauth2/v2.0/token"
        );
    }
}
