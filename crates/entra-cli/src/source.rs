//! Which token source a command uses, and how it is refreshed: through the library's `EntraConfig`, so a
//! flag means what the library's setting means and the retry rule is the library's.

use std::time::Duration;

use clap::{Args, ValueEnum};
use entra_postgres::EntraConfig;
use entra_token::{Env, HttpOptions, RefreshPolicy, RetryPolicy, SourceKind, UserAssignedId, OSSRDBMS_SCOPE};

use crate::exit::Exit;

/// Where a token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SourceFlag {
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

impl SourceFlag {
    fn kind(self) -> SourceKind {
        match self {
            SourceFlag::Auto => SourceKind::Auto,
            SourceFlag::Imds => SourceKind::Imds,
            SourceFlag::AppService => SourceKind::AppService,
            SourceFlag::Workload => SourceKind::WorkloadIdentity,
            SourceFlag::Cli => SourceKind::AzureCli,
            SourceFlag::Secret => SourceKind::ClientSecret,
        }
    }
}

/// Flags that pick the identity a token is for, and how long to keep trying.
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
    #[arg(long, value_enum, default_value_t = SourceFlag::Auto)]
    pub(crate) source: SourceFlag,
    /// How long to keep retrying transient answers of the identity endpoint (throttling, IMDS
    /// updating, 5xx, timeouts) before giving up, in seconds; definitive answers fail at once.
    #[arg(long, value_name = "SECS", default_value_t = 70)]
    pub(crate) retry_budget: u64,
    /// Renew the token at least this long before it expires, in seconds (default 300; the issuer's
    /// `refresh_in` and half-life renewal of long tokens still apply). For long-running commands.
    #[arg(long, value_name = "SECS")]
    pub(crate) refresh_margin: Option<u64>,
    /// The longest wait between renewal attempts while the identity endpoint fails, in seconds
    /// (default 60; `Retry-After` still applies). For long-running commands.
    #[arg(long, value_name = "SECS")]
    pub(crate) backoff_cap: Option<u64>,
}

impl IdentityArgs {
    fn user_assigned(&self) -> Option<UserAssignedId> {
        if let Some(id) = &self.client_id {
            return Some(UserAssignedId::ClientId(id.clone()));
        }
        if let Some(id) = &self.object_id {
            return Some(UserAssignedId::ObjectId(id.clone()));
        }
        self.resource_id.clone().map(UserAssignedId::ResourceId)
    }

    /// The configuration reading `env`, with the identity, scope, retry budget and refresh policy these
    /// flags name: the one path every command takes to a token source and a connection plan.
    pub(crate) fn config(&self, env: &Env) -> EntraConfig {
        let mut config = EntraConfig::from_env()
            .env(env.clone())
            .scope(&self.scope)
            .token_source_kind(self.source.kind())
            .http_options(http_options())
            .refresh_policy(self.refresh_policy());
        if let Some(id) = self.user_assigned() {
            config = config.managed_identity(id);
        }
        config
    }

    /// The refresh policy the flags name (the library's defaults where they name nothing).
    fn refresh_policy(&self) -> RefreshPolicy {
        let retry = RetryPolicy::default().budget(Duration::from_secs(self.retry_budget));
        let mut policy = RefreshPolicy::default().retry(retry);
        if let Some(margin) = self.refresh_margin {
            policy = policy.refresh_margin(Duration::from_secs(margin));
        }
        if let Some(cap) = self.backoff_cap {
            policy = policy.backoff(
                Duration::from_secs(1).min(Duration::from_secs(cap)),
                Duration::from_secs(cap),
            );
        }
        policy
    }
}

/// Network settings for token requests: short enough that one attempt never seems to hang.
pub(crate) fn http_options() -> HttpOptions {
    HttpOptions::default()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(20))
}

/// Exit code for a token failure (configuration mistakes are usage errors).
pub(crate) fn token_exit(e: &entra_token::TokenError) -> Exit {
    if e.is_config() {
        Exit::Usage
    } else {
        Exit::Token
    }
}
