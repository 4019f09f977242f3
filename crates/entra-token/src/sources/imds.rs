//! [`ImdsSource`]: the Instance Metadata Service of Azure VMs and scale sets (`azure-protocols.md` §1).

use std::sync::atomic::{AtomicBool, Ordering};

use url::Url;

use super::managed_identity::token_from_mi_response;
use super::UserAssignedId;
use crate::http::{traced_fetch, FailureKind, HttpClient, HttpOptions};
use crate::{scope_to_resource, AccessToken, Env, FetchFuture, TokenError, TokenSource};

const NAME: &str = "imds";
const DEFAULT_BASE: &str = "http://169.254.169.254";
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const API_VERSION: &str = "2018-02-01";

/// Fetches tokens from the VM's Instance Metadata Service.
///
/// `GET http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=…` with
/// `Metadata: true`. The endpoint can be moved, in this order of precedence, by
/// [`ImdsSourceBuilder::endpoint`], `AZURE_POD_IDENTITY_AUTHORITY_HOST` (a base URL; the token path is
/// appended) or `MSAL_MANAGED_IDENTITY_ENDPOINT` (the full token URL).
///
/// Errors: an identity that is not assigned is [`TokenError::IdentityNotFound`] (for the system identity
/// a chain moves on, as [`TokenError::is_unavailable`] says; for a user-assigned one it stops); IMDS
/// updating (404, 410), throttling and 5xx are [`TokenError::Transient`]. Nothing listening at the
/// endpoint is `CredentialUnavailable` until IMDS has answered once, and `Transient` afterwards.
///
/// ```no_run
/// use entra_token::{ImdsSource, TokenSource, UserAssignedId, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = ImdsSource::builder()
///     .user_assigned(UserAssignedId::ClientId("00000000-0000-0000-0000-000000000000".into()))
///     .build()?;
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ImdsSource {
    url: Url,
    id: Option<UserAssignedId>,
    http: HttpClient,
    /// Whether IMDS has ever answered: afterwards a refused connection is a blip, not an absence.
    seen_response: AtomicBool,
}

/// Builds an [`ImdsSource`].
#[derive(Debug, Default)]
pub struct ImdsSourceBuilder {
    endpoint: Option<String>,
    id: Option<UserAssignedId>,
    env: Option<Env>,
    http: HttpOptions,
}

impl ImdsSourceBuilder {
    /// The IMDS to ask: a base URL (`http://127.0.0.1:8080`, the token path is appended) or a full token
    /// URL. Overrides the environment.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Ask for this user-assigned identity instead of the system-assigned one.
    pub fn user_assigned(mut self, id: UserAssignedId) -> Self {
        self.id = Some(id);
        self
    }

    pub(crate) fn maybe_user_assigned(mut self, id: Option<UserAssignedId>) -> Self {
        self.id = id;
        self
    }

    /// Where to read `AZURE_POD_IDENTITY_AUTHORITY_HOST` and `MSAL_MANAGED_IDENTITY_ENDPOINT` (default:
    /// the process environment).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Timeouts, body cap and extra roots.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// The source; [`TokenError::MalformedUrl`] or [`TokenError::UrlNotAllowed`] when an endpoint is
    /// not a valid http(s) URL.
    pub fn build(self) -> Result<ImdsSource, TokenError> {
        let env = self.env.unwrap_or_else(Env::process);
        let url = if let Some(endpoint) = self.endpoint {
            let url = parse_url("the IMDS endpoint", &endpoint)?;
            if url.path().trim_end_matches('/').is_empty() {
                with_token_path(url)
            } else {
                url
            }
        } else if let Some(host) = env.var("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
            with_token_path(parse_url("AZURE_POD_IDENTITY_AUTHORITY_HOST", &host)?)
        } else if let Some(endpoint) = env.var("MSAL_MANAGED_IDENTITY_ENDPOINT") {
            parse_url("MSAL_MANAGED_IDENTITY_ENDPOINT", &endpoint)?
        } else {
            with_token_path(parse_url("the default IMDS endpoint", DEFAULT_BASE)?)
        };
        Ok(ImdsSource {
            url,
            id: self.id,
            http: HttpClient::new(&self.http)?,
            seen_response: AtomicBool::new(false),
        })
    }
}

/// Parses an endpoint URL, which must be http or https; the error names where it came from.
pub(super) fn parse_url(what: &'static str, value: &str) -> Result<Url, TokenError> {
    let url = Url::parse(value.trim()).map_err(|error| TokenError::MalformedUrl {
        setting: what,
        value: value.to_string(),
        error,
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TokenError::UrlNotAllowed {
            setting: what,
            value: value.to_string(),
            required: "an http(s) URL with a host",
        });
    }
    Ok(url)
}

fn with_token_path(mut url: Url) -> Url {
    let path = format!("{}{TOKEN_PATH}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

impl ImdsSource {
    /// A builder; without any setting it asks the system-assigned identity of the standard IMDS
    /// (or the one the environment points at).
    pub fn builder() -> ImdsSourceBuilder {
        ImdsSourceBuilder::default()
    }

    /// The token URL requests go to (without the query).
    pub fn endpoint(&self) -> &str {
        self.url.as_str()
    }

    async fn fetch_token(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let mut query = vec![
            ("api-version", API_VERSION),
            ("resource", scope_to_resource(scope)),
        ];
        match &self.id {
            Some(UserAssignedId::ClientId(id)) => query.push(("client_id", id)),
            Some(UserAssignedId::ObjectId(id)) => query.push(("object_id", id)),
            Some(UserAssignedId::ResourceId(id)) => query.push(("msi_res_id", id)),
            None => {}
        }
        let request = self
            .http
            .inner()
            .get(self.url.clone())
            .header("Metadata", "true")
            .query(&query);
        let response = match self.http.send(NAME, request).await {
            Ok(response) => response,
            Err(e) if e.kind == FailureKind::NoConnection && !self.seen_response.load(Ordering::Relaxed) => {
                return Err(TokenError::unavailable(
                    NAME,
                    format!(
                        "no IMDS endpoint at {} ({}); not an Azure VM, or set \
                         AZURE_POD_IDENTITY_AUTHORITY_HOST",
                        self.url, e.error
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        self.seen_response.store(true, Ordering::Relaxed);
        token_from_mi_response(NAME, &response, self.id.as_ref())
    }
}

impl TokenSource for ImdsSource {
    fn name(&self) -> &str {
        NAME
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(traced_fetch(NAME, self.fetch_token(scope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(builder: ImdsSourceBuilder, pairs: &[(&str, &str)]) -> String {
        builder
            .env(Env::from_pairs(pairs.iter().copied()))
            .build()
            .unwrap()
            .endpoint()
            .to_string()
    }

    #[test]
    fn endpoint_precedence() {
        let pod = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:8080/");
        let msal = (
            "MSAL_MANAGED_IDENTITY_ENDPOINT",
            "http://127.0.0.1:9090/custom/token",
        );
        assert_eq!(
            url_of(ImdsSource::builder().endpoint("http://127.0.0.1:7"), &[pod, msal]),
            "http://127.0.0.1:7/metadata/identity/oauth2/token"
        );
        assert_eq!(
            url_of(
                ImdsSource::builder().endpoint("http://127.0.0.1:7/x/token"),
                &[pod]
            ),
            "http://127.0.0.1:7/x/token"
        );
        assert_eq!(
            url_of(ImdsSource::builder(), &[pod, msal]),
            "http://127.0.0.1:8080/metadata/identity/oauth2/token"
        );
        assert_eq!(
            url_of(ImdsSource::builder(), &[msal]),
            "http://127.0.0.1:9090/custom/token"
        );
        assert_eq!(
            url_of(ImdsSource::builder(), &[]),
            "http://169.254.169.254/metadata/identity/oauth2/token"
        );
    }

    #[test]
    fn bad_endpoints_are_config_errors_naming_the_variable() {
        for (name, value) in [
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "not a url"),
            ("MSAL_MANAGED_IDENTITY_ENDPOINT", "ftp://host/x"),
        ] {
            let err = ImdsSource::builder()
                .env(Env::from_pairs([(name, value)]))
                .build()
                .unwrap_err();
            assert!(
                matches!(
                    &err,
                    TokenError::MalformedUrl { .. } | TokenError::UrlNotAllowed { .. }
                ) && err.to_string().contains(name),
                "{err:?}"
            );
        }
    }
}
