//! Which token source a command uses: chosen by flags, else as entra-pool's `PoolBuilder` would choose.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use entra_postgres::PoolBuilder;
use entra_token::{
    AppServiceSource, AzureCliSource, ClientSecretSource, DefaultSource, Env, HttpOptions, ImdsSource,
    TokenSource, UserAssignedId, WorkloadIdentitySource, OSSRDBMS_SCOPE,
};
use secrecy::ExposeSecret;

use crate::exit::{CliError, Exit};

/// Where a token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SourceKind {
    /// The Azure SDKs' order: client secret in the environment, workload identity, managed identity
    /// (IMDS, App Service… as detected), Azure CLI.
    Auto,
    /// The VM's Instance Metadata Service.
    Imds,
    /// App Service / Functions / Container Apps (IDENTITY_ENDPOINT + IDENTITY_HEADER).
    AppService,
    /// AKS workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE).
    Workload,
    /// `az account get-access-token` (after `az login`).
    Cli,
    /// A service principal's secret (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET).
    Secret,
}

/// Flags that pick the identity a token is for.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdentityArgs {
    /// Client id of a user-assigned managed identity (default: AZURE_POSTGRESQL_CLIENTID, then
    /// AZURE_CLIENT_ID, else the system-assigned identity).
    #[arg(long, value_name = "ID", conflicts_with_all = ["object_id", "resource_id"])]
    pub(crate) client_id: Option<String>,
    /// Object (principal) id of a user-assigned managed identity.
    #[arg(long, value_name = "ID", conflicts_with = "resource_id")]
    pub(crate) object_id: Option<String>,
    /// Azure resource id of a user-assigned managed identity.
    #[arg(long, value_name = "ID")]
    pub(crate) resource_id: Option<String>,
    /// The scope to ask for (sovereign clouds have their own host).
    #[arg(long, default_value = OSSRDBMS_SCOPE)]
    pub(crate) scope: String,
    /// Where to get the token.
    #[arg(long, value_enum, default_value_t = SourceKind::Auto)]
    pub(crate) source: SourceKind,
}

impl IdentityArgs {
    fn user_assigned(&self, env: &Env) -> Option<UserAssignedId> {
        if let Some(id) = &self.client_id {
            return Some(UserAssignedId::ClientId(id.clone()));
        }
        if let Some(id) = &self.object_id {
            return Some(UserAssignedId::ObjectId(id.clone()));
        }
        if let Some(id) = &self.resource_id {
            return Some(UserAssignedId::ResourceId(id.clone()));
        }
        env.var("AZURE_POSTGRESQL_CLIENTID")
            .map(|id| UserAssignedId::ClientId(id.trim().to_string()))
    }
}

/// Network settings for token requests: short enough that a command never seems to hang.
pub(crate) fn http_options() -> HttpOptions {
    HttpOptions {
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(20),
        ..HttpOptions::default()
    }
}

/// The source the flags ask for. `auto` follows `PoolBuilder`: a service principal's secret in
/// Service Connector's variables, else the default chain (with the user-assigned identity the flags or
/// `AZURE_POSTGRESQL_CLIENTID` name).
pub(crate) fn build(args: &IdentityArgs, env: &Env) -> Result<Arc<dyn TokenSource>, CliError> {
    let http = http_options();
    let id = args.user_assigned(env);
    let source: Arc<dyn TokenSource> = match args.source {
        SourceKind::Auto => {
            let settings = PoolBuilder::from_env().env(env.clone()).resolve()?;
            match (&settings.client_secret, &settings.tenant_id, &settings.client_id) {
                (Some(secret), Some(tenant), Some(client)) if !explicit_id(args) => Arc::new(
                    ClientSecretSource::builder()
                        .tenant_id(&tenant.value)
                        .client_id(&client.value)
                        .secret(secret.value.expose_secret())
                        .env(env.clone())
                        .http_options(http)
                        .build()?,
                ),
                _ => {
                    let mut chain = DefaultSource::builder().env(env.clone()).http_options(http);
                    if let Some(id) = id {
                        chain = chain.managed_identity(id);
                    }
                    Arc::new(chain.build())
                }
            }
        }
        SourceKind::Imds => {
            let mut b = ImdsSource::builder().env(env.clone()).http_options(http);
            if let Some(id) = id {
                b = b.user_assigned(id);
            }
            Arc::new(b.build()?)
        }
        SourceKind::AppService => {
            let mut b = AppServiceSource::builder().env(env.clone()).http_options(http);
            if let Some(id) = id {
                b = b.user_assigned(id);
            }
            Arc::new(b.build()?)
        }
        SourceKind::Workload => {
            let mut source = WorkloadIdentitySource::from_env(env, http.clone());
            if let Some(client_id) = &args.client_id {
                // The flag overrides AZURE_CLIENT_ID; the rest still comes from the webhook's variables.
                let mut b = WorkloadIdentitySource::builder()
                    .client_id(client_id)
                    .env(env.clone())
                    .http_options(http);
                if let Some(t) = env.var("AZURE_TENANT_ID") {
                    b = b.tenant_id(t);
                }
                if let Some(f) = env.var("AZURE_FEDERATED_TOKEN_FILE") {
                    b = b.token_file(f);
                }
                source = b.build();
            }
            Arc::new(source?)
        }
        SourceKind::Cli => {
            let mut cli = AzureCliSource::new().env(env.clone());
            if let Some(tenant) = env.var("AZURE_TENANT_ID") {
                cli = cli.tenant(tenant);
            }
            Arc::new(cli)
        }
        SourceKind::Secret => Arc::new(ClientSecretSource::from_env(env, http)?),
    };
    Ok(source)
}

fn explicit_id(args: &IdentityArgs) -> bool {
    args.client_id.is_some() || args.object_id.is_some() || args.resource_id.is_some()
}

/// Fetches once, bounded so a dead endpoint cannot hang the command.
pub(crate) async fn fetch_once(
    source: &dyn TokenSource,
    scope: &str,
) -> Result<entra_token::AccessToken, entra_token::TokenError> {
    match tokio::time::timeout(Duration::from_secs(60), source.fetch(scope)).await {
        Ok(result) => result,
        Err(_) => Err(entra_token::TokenError::transient(
            source.name(),
            "no answer within 60 s",
        )),
    }
}

/// Exit code for a token failure (configuration mistakes are usage errors).
pub(crate) fn token_exit(e: &entra_token::TokenError) -> Exit {
    match e {
        entra_token::TokenError::Config(_) => Exit::Usage,
        _ => Exit::Token,
    }
}
