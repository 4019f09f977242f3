//! [`ClientSecretSource`]: a service principal signing in with a client secret (`azure-protocols.md` §5).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use super::entra_endpoint::EntraEndpoint;
use crate::http::{traced_fetch, HttpOptions};
use crate::{AccessToken, Env, FetchFuture, TokenError, TokenSource};

const NAME: &str = "client-secret";

/// Signs in as an app registration with its client secret, at the Entra v2 token endpoint of its
/// tenant (`AZURE_AUTHORITY_HOST`, default `https://login.microsoftonline.com`, must be https).
///
/// The secret is held in a [`SecretString`]: `Debug` never shows it and it is zeroized on drop.
///
/// ```no_run
/// use entra_token::{ClientSecretSource, TokenSource, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = ClientSecretSource::new(
///     "contoso.onmicrosoft.com",
///     "00000000-0000-0000-0000-000000000000",
///     "the-secret",
/// )?;
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
pub struct ClientSecretSource {
    client_id: String,
    secret: SecretString,
    endpoint: EntraEndpoint,
}

impl fmt::Debug for ClientSecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretSource")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Builds a [`ClientSecretSource`] from explicit settings.
#[derive(Default)]
pub struct ClientSecretSourceBuilder {
    tenant_id: Option<String>,
    client_id: Option<String>,
    secret: Option<SecretString>,
    authority_host: Option<String>,
    env: Option<Env>,
    http: HttpOptions,
}

impl fmt::Debug for ClientSecretSourceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecretSourceBuilder")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("authority_host", &self.authority_host)
            .finish_non_exhaustive()
    }
}

impl ClientSecretSourceBuilder {
    /// The tenant: a GUID or a domain name.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The app registration's client id.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The client secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(SecretString::from(secret.into()));
        self
    }

    /// The Entra authority (https); overrides `AZURE_AUTHORITY_HOST`.
    pub fn authority_host(mut self, url: impl Into<String>) -> Self {
        self.authority_host = Some(url.into());
        self
    }

    /// Where to read `AZURE_AUTHORITY_HOST` (default: the process environment).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Timeouts, body cap and extra roots.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// The source; [`TokenError::MissingSetting`] names a missing setting, and the URL and tenant
    /// variants ([`TokenError::is_config`]) an invalid one.
    pub fn build(self) -> Result<ClientSecretSource, TokenError> {
        let missing = |setting, set_by| TokenError::MissingSetting {
            source_name: NAME.to_string(),
            setting,
            set_by,
        };
        const SET_SECRET: &str = "ClientSecretSourceBuilder::secret or AZURE_CLIENT_SECRET";
        let tenant_id = self.tenant_id.ok_or_else(|| {
            missing(
                "a tenant id",
                "ClientSecretSourceBuilder::tenant_id or AZURE_TENANT_ID",
            )
        })?;
        let client_id = self.client_id.ok_or_else(|| {
            missing(
                "a client id",
                "ClientSecretSourceBuilder::client_id or AZURE_CLIENT_ID",
            )
        })?;
        let secret = self.secret.ok_or_else(|| missing("a secret", SET_SECRET))?;
        if secret.expose_secret().is_empty() {
            return Err(missing("a non-empty secret", SET_SECRET));
        }
        let env = self.env.unwrap_or_else(Env::process);
        let endpoint = EntraEndpoint::new(self.authority_host.as_deref(), &env, &tenant_id, &self.http)?;
        Ok(ClientSecretSource {
            client_id,
            secret,
            endpoint,
        })
    }
}

impl ClientSecretSource {
    /// A source for this app; the authority comes from `AZURE_AUTHORITY_HOST` in the process
    /// environment or is the public cloud's. [`TokenError::InvalidTenantId`] for an invalid tenant id.
    pub fn new(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Result<Self, TokenError> {
        Self::builder()
            .tenant_id(tenant_id)
            .client_id(client_id)
            .secret(secret)
            .build()
    }

    /// A builder for explicit settings.
    pub fn builder() -> ClientSecretSourceBuilder {
        ClientSecretSourceBuilder::default()
    }

    /// The source `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` describe (and
    /// `AZURE_AUTHORITY_HOST`, optionally). [`TokenError::CredentialUnavailable`] names the variables
    /// that are not set.
    pub fn from_env(env: &Env, http: HttpOptions) -> Result<Self, TokenError> {
        let vars = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"];
        let [tenant_id, client_id, secret] = vars.map(|name| env.var(name));
        let (Some(tenant_id), Some(client_id), Some(secret)) = (tenant_id, client_id, secret) else {
            let missing: Vec<&str> = vars.into_iter().filter(|name| env.var(name).is_none()).collect();
            return Err(TokenError::unavailable(
                NAME,
                format!("{} not set", missing.join(", ")),
            ));
        };
        Self::builder()
            .tenant_id(tenant_id)
            .client_id(client_id)
            .secret(secret)
            .env(env.clone())
            .http_options(http)
            .build()
    }

    async fn fetch_token(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose_secret()),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ];
        self.endpoint.request(NAME, &form).await
    }
}

impl TokenSource for ClientSecretSource {
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

    #[test]
    fn missing_variables_are_unavailable_and_named() {
        let env = Env::from_pairs([("AZURE_TENANT_ID", "t")]);
        let err = ClientSecretSource::from_env(&env, HttpOptions::default()).unwrap_err();
        assert!(err.is_unavailable());
        let text = err.to_string();
        assert!(text.contains("AZURE_CLIENT_ID, AZURE_CLIENT_SECRET"), "{text}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let env = Env::from_pairs([
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "hunter2-very-secret"),
        ]);
        let source = ClientSecretSource::from_env(&env, HttpOptions::default()).unwrap();
        assert!(!format!("{source:?}").contains("hunter2"));
        let builder = ClientSecretSource::builder().secret("hunter2-very-secret");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }

    #[test]
    fn invalid_tenant_is_a_config_error() {
        let err = ClientSecretSource::new("bad/tenant", "c", "s").unwrap_err();
        assert!(
            matches!(&err, TokenError::InvalidTenantId { .. }) && err.to_string().contains("AZURE_TENANT_ID")
        );
    }
}
