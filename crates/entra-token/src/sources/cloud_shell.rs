//! [`CloudShellSource`]: the signed-in user's token inside Azure Cloud Shell (`azure-protocols.md` §3).

use url::Url;

use super::imds::parse_url;
use super::managed_identity::token_from_mi_response;
use super::UserAssignedId;
use crate::http::{traced_fetch, HttpClient, HttpOptions};
use crate::{scope_to_resource, AccessToken, Env, FetchFuture, TokenError, TokenSource};

const NAME: &str = "cloud-shell";

/// Fetches tokens from Cloud Shell's local endpoint: `POST {MSI_ENDPOINT}` with `Metadata: true` and the
/// form `resource=…`. Only the shell's own identity is available.
///
/// ```no_run
/// use entra_token::{CloudShellSource, TokenSource, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = CloudShellSource::builder().build()?;
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CloudShellSource {
    url: Url,
    http: HttpClient,
}

/// Builds a [`CloudShellSource`].
#[derive(Debug, Default)]
pub struct CloudShellSourceBuilder {
    endpoint: Option<String>,
    id: Option<UserAssignedId>,
    env: Option<Env>,
    http: HttpOptions,
}

impl CloudShellSourceBuilder {
    /// The endpoint; overrides `MSI_ENDPOINT`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Cloud Shell has no user-assigned identities: setting one makes [`build`](Self::build) fail.
    pub fn user_assigned(mut self, id: UserAssignedId) -> Self {
        self.id = Some(id);
        self
    }

    pub(crate) fn maybe_user_assigned(mut self, id: Option<UserAssignedId>) -> Self {
        self.id = id;
        self
    }

    /// Where to read `MSI_ENDPOINT` (default: the process environment).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Timeouts, body cap and extra roots.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// The source: [`TokenError::CredentialUnavailable`] without an endpoint,
    /// [`TokenError::UserAssignedUnsupported`] for a user-assigned identity, a URL error for an invalid
    /// endpoint.
    pub fn build(self) -> Result<CloudShellSource, TokenError> {
        if let Some(id) = self.id {
            return Err(TokenError::UserAssignedUnsupported {
                source_name: NAME.to_string(),
                serves: "the signed-in user's identity",
                identity: id,
            });
        }
        let env = self.env.unwrap_or_else(Env::process);
        let url = match (self.endpoint, env.var("MSI_ENDPOINT")) {
            (Some(endpoint), _) => parse_url("the Cloud Shell endpoint", &endpoint)?,
            (None, Some(endpoint)) => parse_url("MSI_ENDPOINT", &endpoint)?,
            (None, None) => {
                return Err(TokenError::unavailable(
                    NAME,
                    "MSI_ENDPOINT is not set (it is inside Azure Cloud Shell)",
                ))
            }
        };
        Ok(CloudShellSource {
            url,
            http: HttpClient::new(&self.http)?,
        })
    }
}

impl CloudShellSource {
    /// A builder reading `MSI_ENDPOINT` from the process environment.
    pub fn builder() -> CloudShellSourceBuilder {
        CloudShellSourceBuilder::default()
    }

    async fn fetch_token(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let request = self
            .http
            .inner()
            .post(self.url.clone())
            .header("Metadata", "true")
            .form(&[("resource", scope_to_resource(scope))]);
        let response = self.http.send(NAME, request).await?;
        token_from_mi_response(NAME, &response, None)
    }
}

impl TokenSource for CloudShellSource {
    fn name(&self) -> &str {
        NAME
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(traced_fetch(NAME, self.fetch_token(scope)))
    }
}
