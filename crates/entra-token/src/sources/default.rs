//! [`DefaultSource`]: the chain a service wants without thinking about it.

use crate::{
    AzureCliSource, ChainSource, ClientSecretSource, Env, FetchFuture, HttpOptions, ManagedIdentitySource,
    TokenSource, UserAssignedId, WorkloadIdentitySource,
};

/// The Azure SDKs' default credential order: **environment** (a service principal's secret in
/// `AZURE_TENANT_ID`/`AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`) → **AKS workload identity** → **managed
/// identity** (the endpoint [`ManagedIdentitySource::detect`] finds; user-assigned when `AZURE_CLIENT_ID`
/// or [`DefaultSourceBuilder::managed_identity`] names one) → **Azure CLI**.
///
/// Sources that are not configured here are skipped; the first that succeeds is used from then on (see
/// [`ChainSource`]); when none does, the error lists every source's reason.
///
/// ```no_run
/// # async fn demo() -> Result<(), entra_token::TokenError> {
/// use entra_token::{DefaultSource, Refresher, RefreshPolicy, OSSRDBMS_SCOPE};
/// let tokens = Refresher::start(DefaultSource::from_env(), OSSRDBMS_SCOPE, RefreshPolicy::default()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DefaultSource {
    chain: ChainSource,
}

/// Options of a [`DefaultSource`].
#[derive(Debug, Default)]
pub struct DefaultSourceBuilder {
    env: Option<Env>,
    managed_identity: Option<UserAssignedId>,
    http: HttpOptions,
    exclude_cli: bool,
}

impl DefaultSourceBuilder {
    /// Reads variables from this environment instead of the process's.
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Uses this user-assigned managed identity (else `AZURE_CLIENT_ID`, else the system-assigned one).
    pub fn managed_identity(mut self, id: UserAssignedId) -> Self {
        self.managed_identity = Some(id);
        self
    }

    /// Network settings of the HTTP sources.
    pub fn http_options(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }

    /// Leaves the Azure CLI out (services in production should not pick up a developer's login).
    pub fn exclude_cli(mut self, exclude: bool) -> Self {
        self.exclude_cli = exclude;
        self
    }

    /// Builds the chain. Never fails: a source that cannot be built here carries its reason into the
    /// chain's error.
    pub fn build(self) -> DefaultSource {
        let env = self.env.unwrap_or_else(Env::process);
        let managed_id = self
            .managed_identity
            .or_else(|| env.var("AZURE_CLIENT_ID").map(UserAssignedId::ClientId));
        let mut chain = ChainSource::new()
            .with_result(
                "environment",
                ClientSecretSource::from_env(&env, self.http.clone()),
            )
            .with_result(
                "workload-identity",
                WorkloadIdentitySource::from_env(&env, self.http.clone()),
            )
            .with_result(
                "managed-identity",
                ManagedIdentitySource::detect(&env, managed_id, self.http.clone()),
            );
        if !self.exclude_cli {
            let mut cli = AzureCliSource::new().env(env.clone());
            if let Some(tenant) = env.var("AZURE_TENANT_ID") {
                cli = cli.tenant(tenant);
            }
            chain = chain.with(cli);
        }
        DefaultSource { chain }
    }
}

impl DefaultSource {
    /// The default chain, configured from the process's environment.
    pub fn from_env() -> Self {
        Self::builder().build()
    }

    /// Options for the default chain.
    pub fn builder() -> DefaultSourceBuilder {
        DefaultSourceBuilder::default()
    }

    /// The sources in order.
    pub fn names(&self) -> Vec<String> {
        self.chain.names()
    }

    /// The source that succeeded first, once one has.
    pub fn chosen(&self) -> Option<String> {
        self.chain.chosen()
    }
}

impl TokenSource for DefaultSource {
    fn name(&self) -> &str {
        "default"
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        self.chain.fetch(scope)
    }
}
