//! [`WorkloadIdentitySource`]: AKS workload identity, a federated Kubernetes token exchanged for an
//! Entra token (`azure-protocols.md` §4).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::entra_endpoint::EntraEndpoint;
use crate::http::{traced_fetch, HttpOptions};
use crate::{AccessToken, Env, FetchFuture, TokenError, TokenSource};

const NAME: &str = "workload-identity";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra's code for an expired client assertion: the kubelet may have rotated the file meanwhile.
const EXPIRED_ASSERTION: &str = "AADSTS700024";

/// Exchanges the pod's projected service-account token (`AZURE_FEDERATED_TOKEN_FILE`) for an Entra
/// token of the app `AZURE_CLIENT_ID` in `AZURE_TENANT_ID`, at `AZURE_AUTHORITY_HOST` (default
/// `https://login.microsoftonline.com`, must be https).
///
/// The file is read on every fetch, since the kubelet rotates it; if Entra says the assertion expired
/// (`AADSTS700024`), the file is read once more and the request repeated once.
///
/// ```no_run
/// use entra_token::{Env, HttpOptions, TokenSource, WorkloadIdentitySource, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = WorkloadIdentitySource::from_env(&Env::process(), HttpOptions::default())?;
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WorkloadIdentitySource {
    client_id: String,
    token_file: PathBuf,
    endpoint: EntraEndpoint,
}

/// Builds a [`WorkloadIdentitySource`] from explicit settings.
#[derive(Debug, Default)]
pub struct WorkloadIdentitySourceBuilder {
    client_id: Option<String>,
    tenant_id: Option<String>,
    token_file: Option<PathBuf>,
    authority_host: Option<String>,
    env: Option<Env>,
    http: HttpOptions,
}

impl WorkloadIdentitySourceBuilder {
    /// The app registration (or user-assigned identity) the federated credential belongs to.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The tenant: a GUID or a domain name.
    pub fn tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The file holding the federated token.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
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
    pub fn build(self) -> Result<WorkloadIdentitySource, TokenError> {
        let missing = |setting, set_by| TokenError::MissingSetting {
            source_name: NAME.to_string(),
            setting,
            set_by,
        };
        let client_id = self.client_id.ok_or_else(|| {
            missing(
                "a client id",
                "WorkloadIdentitySourceBuilder::client_id or AZURE_CLIENT_ID",
            )
        })?;
        let tenant_id = self.tenant_id.ok_or_else(|| {
            missing(
                "a tenant id",
                "WorkloadIdentitySourceBuilder::tenant_id or AZURE_TENANT_ID",
            )
        })?;
        let token_file = self.token_file.ok_or_else(|| {
            missing(
                "a token file",
                "WorkloadIdentitySourceBuilder::token_file or AZURE_FEDERATED_TOKEN_FILE",
            )
        })?;
        let env = self.env.unwrap_or_else(Env::process);
        let endpoint = EntraEndpoint::new(self.authority_host.as_deref(), &env, &tenant_id, &self.http)?;
        Ok(WorkloadIdentitySource {
            client_id,
            token_file,
            endpoint,
        })
    }
}

impl WorkloadIdentitySource {
    /// A builder for explicit settings.
    pub fn builder() -> WorkloadIdentitySourceBuilder {
        WorkloadIdentitySourceBuilder::default()
    }

    /// The source the workload-identity webhook configures: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
    /// `AZURE_FEDERATED_TOKEN_FILE` and optionally `AZURE_AUTHORITY_HOST`.
    ///
    /// [`TokenError::CredentialUnavailable`] names the variables that are not set.
    pub fn from_env(env: &Env, http: HttpOptions) -> Result<Self, TokenError> {
        let vars = ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"];
        let [client_id, tenant_id, token_file] = vars.map(|name| env.var(name));
        let (Some(client_id), Some(tenant_id), Some(token_file)) = (client_id, tenant_id, token_file) else {
            let missing: Vec<&str> = vars.into_iter().filter(|name| env.var(name).is_none()).collect();
            return Err(TokenError::unavailable(
                NAME,
                format!(
                    "{} not set (the AKS workload-identity webhook sets them when the pod's service \
                     account is annotated with a client id)",
                    missing.join(", ")
                ),
            ));
        };
        Self::builder()
            .client_id(client_id)
            .tenant_id(tenant_id)
            .token_file(token_file)
            .env(env.clone())
            .http_options(http)
            .build()
    }

    async fn fetch_token(&self, scope: &str) -> Result<AccessToken, TokenError> {
        match self.exchange(scope).await {
            Err(TokenError::AuthenticationFailed {
                error_code: Some(code),
                ..
            }) if code == EXPIRED_ASSERTION => {
                tracing::debug!("federated assertion expired; re-reading the token file once");
                self.exchange(scope).await
            }
            other => other,
        }
    }

    async fn exchange(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let assertion = read_assertion(&self.token_file).await?;
        let form = [
            ("client_assertion", assertion.as_str()),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_id", self.client_id.as_str()),
            ("grant_type", "client_credentials"),
            ("scope", scope),
        ];
        self.endpoint.request(NAME, &form).await
    }
}

async fn read_assertion(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| TokenError::FederatedTokenUnreadable {
            path: path.to_path_buf(),
            error: Arc::new(e),
        })?;
    let text = Zeroizing::new(text);
    let assertion = Zeroizing::new(text.trim().to_string());
    if assertion.is_empty() {
        return Err(TokenError::FederatedTokenEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(assertion)
}

impl TokenSource for WorkloadIdentitySource {
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
    fn missing_variables_are_named() {
        let env = Env::from_pairs([("AZURE_CLIENT_ID", "c")]);
        let err = WorkloadIdentitySource::from_env(&env, HttpOptions::default()).unwrap_err();
        assert!(err.is_unavailable());
        let text = err.to_string();
        assert!(text.contains("AZURE_TENANT_ID") && text.contains("AZURE_FEDERATED_TOKEN_FILE"));
        assert!(!text.contains("AZURE_CLIENT_ID,"), "{text}");
    }

    #[test]
    fn bad_tenant_is_a_config_error() {
        let env = Env::from_pairs([
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_TENANT_ID", "a/b"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/nonexistent"),
        ]);
        let err = WorkloadIdentitySource::from_env(&env, HttpOptions::default()).unwrap_err();
        assert!(
            matches!(&err, TokenError::InvalidTenantId { .. }) && err.to_string().contains("AZURE_TENANT_ID")
        );
    }

    #[tokio::test]
    async fn unreadable_or_empty_files_are_config_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty-token");
        std::fs::write(&empty, "  \n").unwrap();
        let missing = dir.path().join("missing-token");
        for path in [&empty, &missing] {
            let err = read_assertion(path).await.unwrap_err();
            assert!(
                matches!(
                    &err,
                    TokenError::FederatedTokenEmpty { .. } | TokenError::FederatedTokenUnreadable { .. }
                ) && err.to_string().contains(&path.display().to_string()),
                "{err:?}"
            );
        }
    }
}
