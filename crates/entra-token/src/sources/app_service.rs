//! [`AppServiceSource`]: the managed-identity endpoint of App Service, Functions and Container Apps
//! (`azure-protocols.md` §2), including the legacy 2017-09-01 API that Azure ML still serves.

use super::imds::parse_url;
use super::managed_identity::{token_from_mi_response, ManagedIdentityKind};
use super::UserAssignedId;
use crate::http::{traced_fetch, HttpClient, HttpOptions};
use crate::{scope_to_resource, AccessToken, Env, FetchFuture, TokenError, TokenSource};

/// Fetches tokens from the App Service managed-identity endpoint.
///
/// `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER:
/// {IDENTITY_HEADER}`. Both variables are read from the [`Env`] on every request because the platform
/// rotates the header. Without them, `MSI_ENDPOINT` + `MSI_SECRET` select the legacy 2017-09-01 API
/// (`secret` header, `clientid` parameter, `expires_on` as a date).
///
/// A user-assigned identity is selected by `client_id`, `principal_id` or `mi_res_id`; the legacy API
/// knows only client ids. Errors are classified as for [`ImdsSource`](crate::ImdsSource).
///
/// ```no_run
/// use entra_token::{AppServiceSource, Env, TokenSource, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = AppServiceSource::builder().env(Env::process()).build()?;
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AppServiceSource {
    api: Api,
    env: Env,
    id: Option<UserAssignedId>,
    http: HttpClient,
}

/// The two generations of the App Service API: their variables, version, header and id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Modern,
    Legacy,
}

impl Api {
    fn endpoint_var(self) -> &'static str {
        match self {
            Api::Modern => "IDENTITY_ENDPOINT",
            Api::Legacy => "MSI_ENDPOINT",
        }
    }

    fn secret_var(self) -> &'static str {
        match self {
            Api::Modern => "IDENTITY_HEADER",
            Api::Legacy => "MSI_SECRET",
        }
    }

    fn secret_header(self) -> &'static str {
        match self {
            Api::Modern => "X-IDENTITY-HEADER",
            Api::Legacy => "secret",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Api::Modern => "2019-08-01",
            Api::Legacy => "2017-09-01",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Api::Modern => "app-service",
            Api::Legacy => "app-service-legacy",
        }
    }

    /// The query parameter selecting a user-assigned identity, or `None` when this API cannot.
    fn id_param(self, id: &UserAssignedId) -> Option<(&'static str, &str)> {
        match (self, id) {
            (Api::Modern, UserAssignedId::ClientId(v)) => Some(("client_id", v)),
            (Api::Modern, UserAssignedId::ObjectId(v)) => Some(("principal_id", v)),
            // Not `msi_res_id` (IMDS's name), which App Service rejects.
            (Api::Modern, UserAssignedId::ResourceId(v)) => Some(("mi_res_id", v)),
            (Api::Legacy, UserAssignedId::ClientId(v)) => Some(("clientid", v)),
            (Api::Legacy, _) => None,
        }
    }
}

/// Builds an [`AppServiceSource`].
#[derive(Debug, Default)]
pub struct AppServiceSourceBuilder {
    api: Option<Api>,
    id: Option<UserAssignedId>,
    env: Option<Env>,
    http: HttpOptions,
}

impl AppServiceSourceBuilder {
    /// Ask for this user-assigned identity instead of the system-assigned one.
    pub fn user_assigned(mut self, id: UserAssignedId) -> Self {
        self.id = Some(id);
        self
    }

    pub(crate) fn maybe_user_assigned(mut self, id: Option<UserAssignedId>) -> Self {
        self.id = id;
        self
    }

    /// Where to read the endpoint variables, at every request (default: the process environment).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Timeouts, body cap and extra roots.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// Use the 2019-08-01 API (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) even if the legacy variables
    /// are set too. By default the modern API is used when its variables are set.
    pub fn modern(mut self) -> Self {
        self.api = Some(Api::Modern);
        self
    }

    /// Use the legacy 2017-09-01 API (`MSI_ENDPOINT` + `MSI_SECRET`).
    pub fn legacy(mut self) -> Self {
        self.api = Some(Api::Legacy);
        self
    }

    /// The source.
    ///
    /// [`TokenError::CredentialUnavailable`] when the API's variables are not set;
    /// [`TokenError::MalformedUrl`] or [`TokenError::UrlNotAllowed`] when the endpoint is not an
    /// http(s) URL; [`TokenError::ClientIdRequired`] when the legacy API is asked for an identity by
    /// anything but its client id.
    pub fn build(self) -> Result<AppServiceSource, TokenError> {
        let env = self.env.unwrap_or_else(Env::process);
        let set = |api: Api| env.var(api.endpoint_var()).is_some() && env.var(api.secret_var()).is_some();
        let api = match self.api {
            Some(api) => api,
            None if set(Api::Modern) => Api::Modern,
            None if set(Api::Legacy) => Api::Legacy,
            None => Api::Modern,
        };
        let source = AppServiceSource {
            api,
            env,
            id: self.id,
            http: HttpClient::new(&self.http)?,
        };
        // Fail now rather than at the first fetch when the host plainly is not App Service.
        source.endpoint_and_secret()?;
        if let Some(id) = &source.id {
            if api.id_param(id).is_none() {
                return Err(TokenError::ClientIdRequired {
                    source_name: api.name().to_string(),
                    identity: id.clone(),
                });
            }
        }
        Ok(source)
    }
}

impl AppServiceSource {
    /// A builder; by default it reads the process environment and asks for the system identity.
    pub fn builder() -> AppServiceSourceBuilder {
        AppServiceSourceBuilder::default()
    }

    /// Which API this source speaks.
    pub fn kind(&self) -> ManagedIdentityKind {
        match self.api {
            Api::Modern => ManagedIdentityKind::AppService,
            Api::Legacy => ManagedIdentityKind::AppServiceLegacy,
        }
    }

    /// The endpoint and its secret header as the environment has them now.
    fn endpoint_and_secret(&self) -> Result<(url::Url, String), TokenError> {
        let endpoint_var = self.api.endpoint_var();
        let secret_var = self.api.secret_var();
        let (Some(endpoint), Some(secret)) = (self.env.var(endpoint_var), self.env.var(secret_var)) else {
            return Err(TokenError::unavailable(
                self.api.name(),
                format!("{endpoint_var} and {secret_var} must both be set (they are on App Service with a managed identity enabled)"),
            ));
        };
        Ok((parse_url(endpoint_var, &endpoint)?, secret))
    }

    async fn fetch_token(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let name = self.api.name();
        let (url, secret) = self.endpoint_and_secret()?;
        let mut query = vec![
            ("api-version", self.api.api_version()),
            ("resource", scope_to_resource(scope)),
        ];
        if let Some(id) = &self.id {
            // Checked when built.
            if let Some(param) = self.api.id_param(id) {
                query.push(param);
            }
        }
        let request = self
            .http
            .inner()
            .get(url)
            .header(self.api.secret_header(), secret)
            .query(&query);
        let response = self.http.send(name, request).await?;
        token_from_mi_response(name, &response, self.id.as_ref())
    }
}

impl TokenSource for AppServiceSource {
    fn name(&self) -> &str {
        self.api.name()
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(traced_fetch(self.api.name(), self.fetch_token(scope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_variables_are_unavailable_and_named() {
        let err = AppServiceSource::builder()
            .env(Env::from_pairs([("IDENTITY_ENDPOINT", "http://127.0.0.1:1")]))
            .build()
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(err.to_string().contains("IDENTITY_HEADER"), "{err}");
    }

    #[test]
    fn picks_the_api_from_the_variables() {
        let legacy = AppServiceSource::builder()
            .env(Env::from_pairs([
                ("MSI_ENDPOINT", "http://127.0.0.1:1"),
                ("MSI_SECRET", "s"),
            ]))
            .build()
            .unwrap();
        assert_eq!(legacy.kind(), ManagedIdentityKind::AppServiceLegacy);
        assert_eq!(legacy.name(), "app-service-legacy");
        let modern = AppServiceSource::builder()
            .env(Env::from_pairs([
                ("MSI_ENDPOINT", "http://127.0.0.1:1"),
                ("MSI_SECRET", "s"),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:2"),
                ("IDENTITY_HEADER", "h"),
            ]))
            .build()
            .unwrap();
        assert_eq!(modern.kind(), ManagedIdentityKind::AppService);
    }

    #[test]
    fn legacy_api_accepts_only_client_ids() {
        let env = Env::from_pairs([("MSI_ENDPOINT", "http://127.0.0.1:1"), ("MSI_SECRET", "s")]);
        for id in [
            UserAssignedId::ObjectId("o".into()),
            UserAssignedId::ResourceId("/r".into()),
        ] {
            let err = AppServiceSource::builder()
                .env(env.clone())
                .user_assigned(id)
                .build()
                .unwrap_err();
            assert!(matches!(err, TokenError::ClientIdRequired { .. }), "{err:?}");
        }
        AppServiceSource::builder()
            .env(env)
            .user_assigned(UserAssignedId::ClientId("c".into()))
            .build()
            .unwrap();
    }

    #[test]
    fn debug_does_not_show_the_header() {
        let s = AppServiceSource::builder()
            .env(Env::from_pairs([
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:2"),
                ("IDENTITY_HEADER", "HEADER-SECRET"),
            ]))
            .build()
            .unwrap();
        assert!(!format!("{s:?}").contains("HEADER-SECRET"));
    }
}
