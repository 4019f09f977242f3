//! Entra ID v2: `POST /{tenant}/oauth2/v2.0/token`, the client-credentials grant with a client secret
//! (form or HTTP Basic) or a federated assertion (workload identity).

use std::time::SystemTime;

use base64::Engine;
use serde_json::json;

use super::token::{self, Principal, Shape};
use super::Handled;
use crate::identity::assertion::{self, AssertionError, TOKEN_EXCHANGE_AUDIENCE};
use crate::identity::http::{Request, Response};
use crate::identity::principal::{random_uuid, ServicePrincipal};
use crate::identity::state::Shared;
use crate::jwt::{epoch_secs, TEST_TENANT_ID};

const TOKEN_PATH_SUFFIX: &str = "/oauth2/v2.0/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const DEFAULT_SCOPE_SUFFIX: &str = "/.default";

/// The tenant segment of a token path `/{tenant}/oauth2/v2.0/token`.
pub(super) fn tenant_of(path: &str) -> Option<&str> {
    let tenant = path.strip_prefix('/')?.strip_suffix(TOKEN_PATH_SUFFIX)?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

/// Entra's error body: the `AADSTS` code in `error_codes` and at the start of the description, followed
/// by the trace lines Entra appends.
fn aad_error(status: u16, error: &str, code: u32, message: &str) -> Handled {
    let trace_id = random_uuid();
    let correlation_id = random_uuid();
    let timestamp = token::entra_timestamp(epoch_secs(SystemTime::now()));
    let description = format!(
        "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
    );
    Handled::refused(Response::json(
        status,
        &json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    ))
}

fn missing_parameter(name: &str) -> Handled {
    aad_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// Client id and secret from `Authorization: Basic`, each form-urlencoded as RFC 6749 §2.3.1 says.
fn basic_credentials(request: &Request) -> Option<(String, String)> {
    let encoded = request.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| -> String {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

pub(super) fn handle(shared: &Shared, request: &Request) -> Handled {
    if request.method != "POST" {
        return aad_error(
            400,
            "invalid_request",
            900561,
            &format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {} request.",
                request.method
            ),
        );
    }
    let path = request.path.trim_end_matches('/').to_ascii_lowercase();
    let tenant = tenant_of(&path).unwrap_or_default();
    if !tenant.eq_ignore_ascii_case(TEST_TENANT_ID) {
        return aad_error(
            400,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        );
    }
    let form = request.form();
    let field = |name: &str| {
        form.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let basic = basic_credentials(request);

    let Some(grant_type) = field("grant_type") else {
        return missing_parameter("grant_type");
    };
    if grant_type != "client_credentials" {
        return aad_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = field("client_id").or(basic.as_ref().map(|(id, _)| id.as_str())) else {
        return missing_parameter("client_id");
    };
    let app = shared
        .directory
        .lock()
        .apps
        .iter()
        .find(|app| app.client_id.eq_ignore_ascii_case(client_id))
        .cloned();
    let Some(app) = app else {
        return aad_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{TEST_TENANT_ID}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    };
    let Some(scope) = field("scope") else {
        return missing_parameter("scope");
    };
    let resource = match scope.strip_suffix(DEFAULT_SCOPE_SUFFIX) {
        Some(resource) if !resource.is_empty() && !scope.contains(char::is_whitespace) => resource,
        _ => {
            return aad_error(
                400,
                "invalid_scope",
                70011,
                &format!(
                    "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid. The client credentials flow accepts a single scope ending in /.default."
                ),
            )
        }
    };
    let secret = field("client_secret").or(basic.as_ref().map(|(_, s)| s.as_str()));
    let authenticated = match (field("client_assertion"), secret) {
        (Some(assertion), _) => check_assertion(shared, &app, field("client_assertion_type"), assertion),
        (None, Some(secret)) => check_secret(&app, secret),
        (None, None) => Err(aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
    };
    if let Err(refused) = authenticated {
        return refused;
    }
    let minted = token::mint(
        shared,
        &Principal {
            object_id: &app.object_id,
            client_id: &app.client_id,
            resource_id: None,
        },
        resource,
    );
    let format = shared.settings().number_format;
    let body = token::body(Shape::Entra, format, &minted, resource, &app.client_id);
    Handled::token(Response::json(200, &body))
}

fn check_secret(app: &ServicePrincipal, secret: &str) -> Result<(), Handled> {
    if app.secret.as_deref() == Some(secret) {
        return Ok(());
    }
    Err(aad_error(
        401,
        "invalid_client",
        7000215,
        &format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
            app.client_id
        ),
    ))
}

fn check_assertion(
    shared: &Shared,
    app: &ServicePrincipal,
    assertion_type: Option<&str>,
    assertion: &str,
) -> Result<(), Handled> {
    match assertion_type {
        None => return Err(missing_parameter("client_assertion_type")),
        Some(JWT_BEARER) => {}
        // Code invented: Entra's exact answer to a wrong assertion type is undocumented.
        Some(other) => {
            return Err(aad_error(
                400,
                "invalid_request",
                50027,
                &format!("Unsupported client_assertion_type '{other}'; use {JWT_BEARER}."),
            ))
        }
    }
    let claims = match assertion::verify(&shared.issuer, assertion) {
        Ok(claims) => claims,
        Err(AssertionError::BadSignature) => {
            return Err(aad_error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            ))
        }
        Err(AssertionError::Malformed) => {
            return Err(aad_error(
                400,
                "invalid_request",
                50027,
                "JWT token is invalid or malformed.",
            ))
        }
    };
    let now = epoch_secs(SystemTime::now());
    if claims.exp <= now || claims.nbf > now {
        return Err(aad_error(
            400,
            "invalid_client",
            700024,
            &format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                token::entra_timestamp(now),
                token::entra_timestamp(claims.nbf),
                token::entra_timestamp(claims.exp)
            ),
        ));
    }
    if !claims.has_audience(TOKEN_EXCHANGE_AUDIENCE) {
        return Err(aad_error(
            400,
            "invalid_client",
            700212,
            &format!(
                "No matching federated identity record found for presented assertion audience '{}'.",
                claims.aud
            ),
        ));
    }
    if app.federated_subject.as_deref() != Some(claims.sub.as_str()) {
        return Err(aad_error(
            400,
            "invalid_client",
            700213,
            &format!(
                "No matching federated identity record found for presented assertion subject '{}'. Please note that the matching is done using a case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
                claims.sub
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_paths_name_their_tenant() {
        assert_eq!(tenant_of("/abc/oauth2/v2.0/token"), Some("abc"));
        assert_eq!(tenant_of("/oauth2/v2.0/token"), None);
        assert_eq!(tenant_of("/a/b/oauth2/v2.0/token"), None);
        assert_eq!(tenant_of("/abc/oauth2/token"), None);
    }
}
