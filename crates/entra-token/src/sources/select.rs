//! [`SourceSelection`]: which source a service or a command uses, decided in one place.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::{
    AppServiceSource, AzureCliSource, ClientSecretSource, DefaultSource, ImdsSource, UserAssignedId,
    WorkloadIdentitySource,
};
use crate::{Env, HttpOptions, TokenError, TokenSource};

/// Where a token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SourceKind {
    /// A service principal's secret when one is given, else [`DefaultSource`]: client secret in the
    /// environment, workload identity, managed identity (as detected), Azure CLI.
    #[default]
    Auto,
    /// The VM's Instance Metadata Service.
    Imds,
    /// App Service, Functions or Container Apps (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
    AppService,
    /// AKS workload identity (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// `az account get-access-token`, after `az login`.
    AzureCli,
    /// A service principal's secret (given, else `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
    /// `AZURE_CLIENT_SECRET`).
    ClientSecret,
}

/// A service principal's credentials.
#[derive(Clone)]
pub struct ServicePrincipalSecret {
    tenant_id: String,
    client_id: String,
    secret: SecretString,
}

impl ServicePrincipalSecret {
    /// The credentials of an app registration.
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>, secret: SecretString) -> Self {
        ServicePrincipalSecret {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
            secret,
        }
    }
}

impl fmt::Debug for ServicePrincipalSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePrincipalSecret")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Which token source to build: the kind, the identity, the environment and the HTTP options.
///
/// `entra-postgres`'s pool builder and every `entra-pg` command choose their source through this, so a
/// flag such as `--object-id` and the builder's [`UserAssignedId`] mean the same thing everywhere.
///
/// ```
/// use entra_token::{Env, SourceKind, SourceSelection, TokenSource, UserAssignedId};
///
/// let source = SourceSelection::new(SourceKind::Imds)
///     .user_assigned(UserAssignedId::ObjectId("00000000-0000-0000-0000-000000000001".into()))
///     .env(Env::from_pairs([("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")]))
///     .build()
///     .unwrap();
/// assert_eq!(source.name(), "imds");
/// ```
#[derive(Debug, Clone, Default)]
pub struct SourceSelection {
    kind: SourceKind,
    user_assigned: Option<UserAssignedId>,
    service_principal: Option<ServicePrincipalSecret>,
    env: Option<Env>,
    http: HttpOptions,
}

impl SourceSelection {
    /// A selection of this kind, with no identity named.
    pub fn new(kind: SourceKind) -> Self {
        SourceSelection {
            kind,
            ..SourceSelection::default()
        }
    }

    /// The kind of source.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Signs in as this user-assigned managed identity (managed-identity kinds; for workload identity a
    /// client id overrides `AZURE_CLIENT_ID`).
    pub fn user_assigned(mut self, id: UserAssignedId) -> Self {
        self.user_assigned = Some(id);
        self
    }

    /// The user-assigned identity, if one is named.
    pub fn get_user_assigned(&self) -> Option<&UserAssignedId> {
        self.user_assigned.as_ref()
    }

    /// Signs in as this service principal (kinds `Auto` and `ClientSecret`).
    pub fn service_principal(mut self, credentials: ServicePrincipalSecret) -> Self {
        self.service_principal = Some(credentials);
        self
    }

    /// Reads the Azure SDKs' variables from this environment (default: the process's).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Network settings of the token requests.
    pub fn http_options(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }

    /// Builds the source; a configuration error ([`TokenError::is_config`]) or an unavailable error
    /// names what is missing or wrong.
    pub fn build(&self) -> Result<Arc<dyn TokenSource>, TokenError> {
        let env = self.env.clone().unwrap_or_else(Env::process);
        let http = self.http.clone();
        let id = self.user_assigned.clone();
        let secret_source = |sp: &ServicePrincipalSecret| {
            ClientSecretSource::builder()
                .tenant_id(&sp.tenant_id)
                .client_id(&sp.client_id)
                .secret(sp.secret.expose_secret())
                .env(env.clone())
                .http_options(http.clone())
                .build()
        };
        Ok(match self.kind {
            SourceKind::Auto => match (&self.service_principal, &id) {
                (Some(sp), None) => Arc::new(secret_source(sp)?),
                _ => {
                    let mut chain = DefaultSource::builder().env(env.clone()).http_options(http);
                    if let Some(id) = id {
                        chain = chain.managed_identity(id);
                    }
                    Arc::new(chain.build())
                }
            },
            SourceKind::Imds => {
                let mut b = ImdsSource::builder().env(env).http_options(http);
                if let Some(id) = id {
                    b = b.user_assigned(id);
                }
                Arc::new(b.build()?)
            }
            SourceKind::AppService => {
                let mut b = AppServiceSource::builder().env(env).http_options(http);
                if let Some(id) = id {
                    b = b.user_assigned(id);
                }
                Arc::new(b.build()?)
            }
            SourceKind::WorkloadIdentity => match id {
                Some(UserAssignedId::ClientId(client_id)) => {
                    // The id overrides AZURE_CLIENT_ID; the rest still comes from the webhook's variables.
                    let mut b = WorkloadIdentitySource::builder()
                        .client_id(client_id)
                        .env(env.clone())
                        .http_options(http);
                    if let Some(tenant) = env.var("AZURE_TENANT_ID") {
                        b = b.tenant_id(tenant);
                    }
                    if let Some(file) = env.var("AZURE_FEDERATED_TOKEN_FILE") {
                        b = b.token_file(file);
                    }
                    Arc::new(b.build()?)
                }
                Some(other) => {
                    return Err(TokenError::ClientIdRequired {
                        source_name: "workload-identity".to_string(),
                        identity: other,
                    })
                }
                None => Arc::new(WorkloadIdentitySource::from_env(&env, http)?),
            },
            SourceKind::AzureCli => {
                let mut cli = AzureCliSource::new().env(env.clone());
                if let Some(tenant) = env.var("AZURE_TENANT_ID") {
                    cli = cli.tenant(tenant);
                }
                Arc::new(cli)
            }
            SourceKind::ClientSecret => match &self.service_principal {
                Some(sp) => Arc::new(secret_source(sp)?),
                None => Arc::new(ClientSecretSource::from_env(&env, http)?),
            },
        })
    }
}
