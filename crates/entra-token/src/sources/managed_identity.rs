//! [`ManagedIdentitySource`]: picks the managed-identity endpoint of the host from its environment, and
//! the error table the managed-identity endpoints share.

use std::fmt;
use std::path::Path;

use serde_json::Value;

use super::{AppServiceSource, AzureArcSource, CloudShellSource, ImdsSource};
use crate::http::{HttpOptions, HttpResponse};
use crate::response::parse_token_response;
use crate::{AccessToken, Env, FetchFuture, TokenError, TokenSource};

/// Which user-assigned managed identity to ask for. Without one, a source asks for the host's
/// system-assigned identity.
///
/// Each endpoint names the ids differently (IMDS: `client_id`, `object_id`, `msi_res_id`; App Service:
/// `client_id`, `principal_id`, `mi_res_id`); the sources translate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserAssignedId {
    /// The identity's client (application) id.
    ClientId(String),
    /// The identity's object (principal) id.
    ObjectId(String),
    /// The identity's Azure resource id
    /// (`/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/…`).
    ResourceId(String),
}

impl fmt::Display for UserAssignedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserAssignedId::ClientId(id) => write!(f, "client id {id}"),
            UserAssignedId::ObjectId(id) => write!(f, "object id {id}"),
            UserAssignedId::ResourceId(id) => write!(f, "resource id {id}"),
        }
    }
}

/// The kinds of managed-identity endpoint [`ManagedIdentitySource::detect`] can pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ManagedIdentityKind {
    /// The VM/VMSS Instance Metadata Service.
    Imds,
    /// App Service, Functions or Container Apps (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService,
    /// The 2017-09-01 App Service API (`MSI_ENDPOINT` + `MSI_SECRET`), still used by Azure ML.
    AppServiceLegacy,
    /// An Azure Arc-enabled server's agent.
    AzureArc,
    /// Azure Cloud Shell.
    CloudShell,
}

impl ManagedIdentityKind {
    /// A short name for logs: `imds`, `app-service`, `app-service-legacy`, `azure-arc`, `cloud-shell`.
    pub fn as_str(self) -> &'static str {
        match self {
            ManagedIdentityKind::Imds => "imds",
            ManagedIdentityKind::AppService => "app-service",
            ManagedIdentityKind::AppServiceLegacy => "app-service-legacy",
            ManagedIdentityKind::AzureArc => "azure-arc",
            ManagedIdentityKind::CloudShell => "cloud-shell",
        }
    }
}

impl fmt::Display for ManagedIdentityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The managed identity of wherever this process runs: a VM, App Service, Arc, Cloud Shell…
///
/// [`detect`](Self::detect) inspects the environment the way the Azure SDKs do and wraps the matching
/// source; fetches go to it.
///
/// ```no_run
/// use entra_token::{Env, HttpOptions, ManagedIdentitySource, TokenSource, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = ManagedIdentitySource::detect(&Env::process(), None, HttpOptions::default())?;
/// println!("using {}", source.kind());
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ManagedIdentitySource {
    inner: Inner,
    name: String,
}

#[derive(Debug)]
enum Inner {
    Imds(ImdsSource),
    AppService(AppServiceSource),
    Arc(AzureArcSource),
    CloudShell(CloudShellSource),
}

/// Where the Arc agent is installed on Linux: its presence means an Arc-enabled server even when the
/// agent's variables are missing from this process's environment.
const HIMDS_PATH: &str = "/opt/azcmagent/bin/himds";

impl ManagedIdentitySource {
    /// Picks the endpoint from the environment; the first match wins:
    ///
    /// 1. `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` + `IDENTITY_SERVER_THUMBPRINT`: Service Fabric, which
    ///    is not supported ([`TokenError::CredentialUnavailable`]);
    /// 2. `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`: App Service;
    /// 3. `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`: Azure Arc;
    /// 4. `MSI_ENDPOINT` + `MSI_SECRET`: the legacy App Service API (Azure ML);
    /// 5. `MSI_ENDPOINT`: Cloud Shell;
    /// 6. the Arc agent installed (`/opt/azcmagent/bin/himds`): Azure Arc;
    /// 7. otherwise IMDS.
    ///
    /// `id` selects a user-assigned identity; Arc and Cloud Shell support only the system identity and
    /// fail with [`TokenError::UserAssignedUnsupported`] when given one.
    pub fn detect(env: &Env, id: Option<UserAssignedId>, http: HttpOptions) -> Result<Self, TokenError> {
        Self::detect_with(env, id, http, Path::new(HIMDS_PATH).exists())
    }

    fn detect_with(
        env: &Env,
        id: Option<UserAssignedId>,
        http: HttpOptions,
        himds_installed: bool,
    ) -> Result<Self, TokenError> {
        let has = |name: &str| env.var(name).is_some();
        let inner = if has("IDENTITY_ENDPOINT") && has("IDENTITY_HEADER") && has("IDENTITY_SERVER_THUMBPRINT")
        {
            return Err(TokenError::unavailable(
                "managed-identity(service-fabric)",
                "IDENTITY_SERVER_THUMBPRINT is set, so this is a Service Fabric cluster, whose managed \
                 identity is not supported; use workload identity or a service principal instead",
            ));
        } else if has("IDENTITY_ENDPOINT") && has("IDENTITY_HEADER") {
            Inner::AppService(
                AppServiceSource::builder()
                    .env(env.clone())
                    .maybe_user_assigned(id)
                    .http_options(http)
                    .modern()
                    .build()?,
            )
        } else if has("IDENTITY_ENDPOINT") && has("IMDS_ENDPOINT") {
            Inner::Arc(Self::arc(env, id, http)?)
        } else if has("MSI_ENDPOINT") && has("MSI_SECRET") {
            Inner::AppService(
                AppServiceSource::builder()
                    .env(env.clone())
                    .maybe_user_assigned(id)
                    .http_options(http)
                    .legacy()
                    .build()?,
            )
        } else if has("MSI_ENDPOINT") {
            Inner::CloudShell(
                CloudShellSource::builder()
                    .env(env.clone())
                    .maybe_user_assigned(id)
                    .http_options(http)
                    .build()?,
            )
        } else if himds_installed {
            Inner::Arc(Self::arc(env, id, http)?)
        } else {
            Inner::Imds(
                ImdsSource::builder()
                    .env(env.clone())
                    .maybe_user_assigned(id)
                    .http_options(http)
                    .build()?,
            )
        };
        Ok(Self::wrap(inner))
    }

    fn arc(env: &Env, id: Option<UserAssignedId>, http: HttpOptions) -> Result<AzureArcSource, TokenError> {
        AzureArcSource::builder()
            .env(env.clone())
            .maybe_user_assigned(id)
            .http_options(http)
            .build()
    }

    fn wrap(inner: Inner) -> Self {
        let mut source = ManagedIdentitySource {
            inner,
            name: String::new(),
        };
        source.name = format!("managed-identity({})", source.kind());
        source
    }

    /// Which endpoint was picked.
    pub fn kind(&self) -> ManagedIdentityKind {
        match &self.inner {
            Inner::Imds(_) => ManagedIdentityKind::Imds,
            Inner::AppService(s) => s.kind(),
            Inner::Arc(_) => ManagedIdentityKind::AzureArc,
            Inner::CloudShell(_) => ManagedIdentityKind::CloudShell,
        }
    }
}

impl From<ImdsSource> for ManagedIdentitySource {
    fn from(source: ImdsSource) -> Self {
        Self::wrap(Inner::Imds(source))
    }
}

impl From<AppServiceSource> for ManagedIdentitySource {
    fn from(source: AppServiceSource) -> Self {
        Self::wrap(Inner::AppService(source))
    }
}

impl From<AzureArcSource> for ManagedIdentitySource {
    fn from(source: AzureArcSource) -> Self {
        Self::wrap(Inner::Arc(source))
    }
}

impl From<CloudShellSource> for ManagedIdentitySource {
    fn from(source: CloudShellSource) -> Self {
        Self::wrap(Inner::CloudShell(source))
    }
}

impl TokenSource for ManagedIdentitySource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        match &self.inner {
            Inner::Imds(s) => s.fetch(scope),
            Inner::AppService(s) => s.fetch(scope),
            Inner::Arc(s) => s.fetch(scope),
            Inner::CloudShell(s) => s.fetch(scope),
        }
    }
}

/// The `error` and `error_description` of a managed-identity or Entra error body, when it has them.
pub(super) struct ErrorBody {
    pub(super) error: Option<String>,
    pub(super) description: Option<String>,
    pub(super) codes: Vec<u64>,
    app_service_message: Option<String>,
}

impl ErrorBody {
    pub(super) fn parse(body: &str) -> Self {
        let value: Option<Value> = serde_json::from_str(body).ok();
        let text = |key: &str| {
            value
                .as_ref()
                .and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let codes = value
            .as_ref()
            .and_then(|v| v.get("error_codes"))
            .and_then(Value::as_array)
            .map(|codes| codes.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        ErrorBody {
            error: text("error"),
            description: text("error_description"),
            codes,
            app_service_message: text("message"),
        }
    }

    /// What to show of the refusal: the description when there is one, else the (redacted) body.
    pub(super) fn message(&self, response: &HttpResponse) -> String {
        let text = self
            .description
            .as_deref()
            .or(self.app_service_message.as_deref())
            .or(self.error.as_deref());
        match text {
            Some(text) => crate::redact::redacted_snippet(text),
            None if response.body.trim().is_empty() => "(empty body)".to_string(),
            None => response.snippet(),
        }
    }
}

/// Maps a managed-identity endpoint's answer to a token or an error, by the table of
/// `azure-protocols.md` §1, which App Service, Arc and Cloud Shell share.
///
/// Decisions rest on the status and the `error` code, never on `error_description`, which is only
/// passed through.
pub(super) fn token_from_mi_response(
    source_name: &str,
    response: &HttpResponse,
    id: Option<&UserAssignedId>,
) -> Result<AccessToken, TokenError> {
    let status = response.status;
    if response.is_success() {
        return parse_token_response(source_name, &response.body, std::time::SystemTime::now());
    }
    let body = ErrorBody::parse(&response.body);
    let message = body.message(response);
    let auth_failed = |reason: String| TokenError::AuthenticationFailed {
        source_name: source_name.to_string(),
        reason,
        status: Some(status),
        error_code: body.error.clone(),
    };
    match status {
        // "Identity not found": IMDS and Arc say `invalid_request`, App Service sends no `error` code
        // at all (`{"statusCode":400,"message":…}`). Other codes (`bad_request_102`,
        // `invalid_resource`…) are mistakes in the request. With no identity configured, a host whose
        // identity is not assigned simply has none, which a chain should skip.
        400 if matches!(body.error.as_deref(), None | Some("invalid_request")) => {
            Err(TokenError::IdentityNotFound {
                source_name: source_name.to_string(),
                identity: id.map(ToString::to_string),
                message,
            })
        }
        403 if response.body.contains("unreachable") => Err(TokenError::unavailable(
            source_name,
            format!(
                "the endpoint is not a real managed-identity endpoint (HTTP 403: {})",
                response.snippet()
            ),
        )),
        status if crate::retry::is_transient_status(status) => Err(TokenError::Transient {
            source_name: source_name.to_string(),
            reason: format!("the endpoint is unavailable for now: {message}"),
            status: Some(status),
            retry_after: response.retry_after(),
        }),
        400..=499 => Err(auth_failed(format!(
            "the endpoint refused the request: {message}"
        ))),
        _ => Err(TokenError::invalid_response(
            source_name,
            format!("unexpected HTTP {status}: {}", response.snippet()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: HeaderMap::new(),
            body: body.to_string().into(),
        }
    }

    const NOT_FOUND: &str = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;

    #[test]
    fn identity_not_found_is_unavailable_for_the_system_identity() {
        let err = token_from_mi_response("imds", &response(400, NOT_FOUND), None).unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(err.to_string().contains("Identity not found"), "{err}");
    }

    #[test]
    fn app_service_identity_not_found_shape_is_recognised() {
        let body = r#"{"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"x"}"#;
        let err = token_from_mi_response("app-service", &response(400, body), None).unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(err.to_string().contains("Unable to load"), "{err}");
        let id = UserAssignedId::ResourceId("/r".into());
        let err = token_from_mi_response("app-service", &response(400, body), Some(&id)).unwrap_err();
        assert!(
            matches!(
                err,
                TokenError::IdentityNotFound {
                    identity: Some(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            !err.is_unavailable(),
            "a chain stops at a missing user-assigned identity"
        );
    }

    #[test]
    fn identity_not_found_names_the_user_assigned_identity_and_stops_a_chain() {
        let id = UserAssignedId::ClientId("abc".into());
        let err = token_from_mi_response("imds", &response(400, NOT_FOUND), Some(&id)).unwrap_err();
        match &err {
            TokenError::IdentityNotFound { identity, .. } => {
                assert_eq!(identity.as_deref(), Some("client id abc"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.status(), Some(400));
        assert!(!err.is_unavailable() && !err.is_retryable());
    }

    #[test]
    fn other_client_errors_are_auth_failed_and_not_retried() {
        for (status, body) in [
            (
                400,
                r#"{"error":"invalid_resource","error_description":"AADSTS500011"}"#,
            ),
            (
                400,
                r#"{"error":"bad_request_102","error_description":"Required metadata header not specified"}"#,
            ),
            (
                401,
                r#"{"statusCode":401,"message":"The X-IDENTITY-HEADER value is not valid"}"#,
            ),
            (403, "forbidden"),
            (405, "{}"),
        ] {
            let err = token_from_mi_response("imds", &response(status, body), None).unwrap_err();
            assert!(
                matches!(err, TokenError::AuthenticationFailed { status: Some(s), .. } if s == status),
                "{status} {body}: {err:?}"
            );
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn updating_throttled_and_server_errors_are_transient_with_retry_after() {
        for status in [404, 410, 429, 500, 502, 503, 504, 511, 599] {
            let mut r = response(status, r#"{"error":"x","error_description":"later"}"#);
            r.headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
            let err = token_from_mi_response("imds", &r, None).unwrap_err();
            assert!(
                matches!(err, TokenError::Transient { status: Some(s), .. } if s == status),
                "{status}: {err:?}"
            );
            assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(7)));
        }
    }

    #[test]
    fn docker_desktop_unreachable_is_unavailable() {
        let body = "connecting to 169.254.169.254:80: connecting to 169.254.169.254:80: dial tcp 169.254.169.254:80: connectex: A socket operation was attempted to an unreachable network.";
        let err = token_from_mi_response("imds", &response(403, body), None).unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    }

    #[test]
    fn success_that_is_not_json_is_invalid() {
        let err = token_from_mi_response("imds", &response(200, "<html>"), None).unwrap_err();
        assert!(matches!(err, TokenError::InvalidResponse { .. }), "{err:?}");
    }

    #[test]
    fn error_bodies_with_tokens_are_redacted() {
        let body = r#"{"error":"x","access_token":"SECRET-IN-ERROR"}"#;
        for status in [400, 403, 500, 302, 101] {
            let err = token_from_mi_response("imds", &response(status, body), None).unwrap_err();
            assert!(!format!("{err} {err:?}").contains("SECRET-IN-ERROR"));
        }
    }

    fn kind_of(pairs: &[(&str, &str)], himds: bool) -> Result<ManagedIdentityKind, TokenError> {
        let env = Env::from_pairs(pairs.iter().copied());
        ManagedIdentitySource::detect_with(&env, None, HttpOptions::default(), himds).map(|s| s.kind())
    }

    #[test]
    fn detection_follows_the_sdk_order() {
        use ManagedIdentityKind::*;
        let ep = ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/token");
        let header = ("IDENTITY_HEADER", "h");
        let thumb = ("IDENTITY_SERVER_THUMBPRINT", "t");
        let imds = ("IMDS_ENDPOINT", "http://127.0.0.1:2");
        let msi = ("MSI_ENDPOINT", "http://127.0.0.1:3/msi");
        let secret = ("MSI_SECRET", "s");

        let err = kind_of(&[ep, header, thumb, msi, secret], false).unwrap_err();
        assert!(
            err.is_unavailable() && err.to_string().contains("Service Fabric"),
            "{err}"
        );
        assert_eq!(
            kind_of(&[ep, header, imds, msi, secret], true).unwrap(),
            AppService
        );
        assert_eq!(kind_of(&[ep, imds, msi, secret], false).unwrap(), AzureArc);
        assert_eq!(kind_of(&[msi, secret, imds], true).unwrap(), AppServiceLegacy);
        assert_eq!(kind_of(&[msi], true).unwrap(), CloudShell);
        assert_eq!(kind_of(&[], true).unwrap(), AzureArc);
        assert_eq!(kind_of(&[ep], false).unwrap(), Imds);
        assert_eq!(kind_of(&[], false).unwrap(), Imds);
    }

    #[test]
    fn names_say_which_endpoint() {
        let env = Env::from_pairs([("MSI_ENDPOINT", "http://127.0.0.1:3/msi")]);
        let s = ManagedIdentitySource::detect_with(&env, None, HttpOptions::default(), false).unwrap();
        assert_eq!(s.name(), "managed-identity(cloud-shell)");
        let s = ManagedIdentitySource::detect_with(
            &Env::from_pairs::<&str, &str>([]),
            None,
            HttpOptions::default(),
            false,
        )
        .unwrap();
        assert_eq!(s.name(), "managed-identity(imds)");
    }

    #[test]
    fn arc_and_cloud_shell_refuse_user_assigned_identities() {
        let id = Some(UserAssignedId::ClientId("c".into()));
        for pairs in [
            vec![("MSI_ENDPOINT", "http://127.0.0.1:3/msi")],
            vec![
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1"),
                ("IMDS_ENDPOINT", "http://127.0.0.1:2"),
            ],
        ] {
            let env = Env::from_pairs(pairs);
            let err = ManagedIdentitySource::detect_with(&env, id.clone(), HttpOptions::default(), false)
                .unwrap_err();
            assert!(
                matches!(err, TokenError::UserAssignedUnsupported { .. }),
                "{err:?}"
            );
        }
    }
}
