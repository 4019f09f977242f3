//! [`EntraConfig`]: the core every front shares, resolved once: the settings (builder calls, a connection
//! string, Service Connector's and libpq's variables), the identity and its token source, the refresh
//! policy, and TLS. It gives the connection plan, the token handle and the connector; each front (the
//! deadpool pool, the multiplexed pool, `entra-sqlx`, `entra-proxy`) takes it and adds only its own sizing
//! and behaviour.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entra_token::{
    AccessToken, Env, HttpOptions, RefreshPolicy, Refresher, ServicePrincipalSecret, SourceKind,
    SourceSelection, TokenHandle, TokenSource, UserAssignedId, OSSRDBMS_SCOPE,
};
use rustls::pki_types::CertificateDer;
use secrecy::SecretString;

use crate::config::{settings_from_env, ConfigError, Settings, Sourced, SslMode};
use crate::connect::{EntraConnect, DEFAULT_POOL_NAME, DEFAULT_TOKEN_WAIT};
use crate::error::BuildError;
use crate::plan::{ConnectionPlan, CredentialKind, PlanOptions};

/// Where Entra tokens come from, where connections go and how they are secured: everything a
/// connection needs, for every front.
///
/// Settings come from, highest precedence first: this configuration's calls, a connection string
/// ([`connection_string`](Self::connection_string), else `AZURE_POSTGRESQL_CONNECTIONSTRING`), Service
/// Connector's variables (`AZURE_POSTGRESQL_HOST`, `_PORT`, `_DATABASE`, `_USER`, `_CLIENTID`, `_SSL`,
/// `_TENANTID`, `_CLIENTSECRET`) and libpq's (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGSSLMODE`,
/// `PGSSLROOTCERT`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`). The token source follows the identity settings: a
/// client secret → that service principal; a client id → that user-assigned managed identity (through the
/// default chain); otherwise [`DefaultSource`](entra_token::DefaultSource).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use entra_postgres::{EntraConfig, PoolBuilder};
///
/// let config = EntraConfig::from_env().user("orders-api").application_name("orders");
/// let pool = PoolBuilder::new(config).max_size(16).build().await?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone)]
pub struct EntraConfig {
    env: Env,
    connection_string: Option<String>,
    layer: Settings,
    scope: String,
    source: Option<Arc<dyn TokenSource>>,
    source_kind: SourceKind,
    managed_identity: Option<UserAssignedId>,
    tokens: Option<TokenHandle>,
    static_password: Option<SecretString>,
    policy: RefreshPolicy,
    http: HttpOptions,
    plan_options: PlanOptions,
    token_wait: Duration,
    name: Arc<str>,
}

impl std::fmt::Debug for EntraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraConfig")
            .field("scope", &self.scope)
            .field("name", &self.name)
            .field("static_password", &self.static_password.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self::from_env()
    }
}

fn origin(call: &str) -> String {
    format!("EntraConfig::{call}")
}

impl EntraConfig {
    /// A configuration reading the process's environment (Service Connector's and libpq's variables)
    /// when it is resolved.
    pub fn from_env() -> Self {
        EntraConfig {
            env: Env::process(),
            connection_string: None,
            layer: Settings::default(),
            scope: OSSRDBMS_SCOPE.to_string(),
            source: None,
            source_kind: SourceKind::Auto,
            managed_identity: None,
            tokens: None,
            static_password: None,
            policy: RefreshPolicy::default(),
            http: HttpOptions::default(),
            plan_options: PlanOptions::default(),
            token_wait: DEFAULT_TOKEN_WAIT,
            name: DEFAULT_POOL_NAME.into(),
        }
    }

    /// A configuration with this connection string (`host=… dbname=…`, `postgres://…` or
    /// `Server=…;Database=…`), above the environment in precedence.
    pub fn from_connection_string(text: impl Into<String>) -> Self {
        Self::from_env().connection_string(text)
    }

    /// Sets the connection string.
    pub fn connection_string(mut self, text: impl Into<String>) -> Self {
        self.connection_string = Some(text.into());
        self
    }

    /// Reads variables from this environment instead of the process's (tests, or your own config system).
    pub fn env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }

    /// The server's host name (e.g. `myserver.postgres.database.azure.com`).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.layer.hosts = Some(Sourced {
            value: vec![host.into()],
            origin: origin("host"),
        });
        self
    }

    /// Connect to this address instead of resolving the host name; TLS still verifies the name.
    pub fn hostaddr(mut self, addr: std::net::IpAddr) -> Self {
        self.layer.hostaddrs = Some(Sourced {
            value: vec![addr],
            origin: origin("hostaddr"),
        });
        self
    }

    /// The server's port (default 5432; Azure's built-in PgBouncer listens on 6432).
    pub fn port(mut self, port: u16) -> Self {
        self.layer.ports = Some(Sourced::new(vec![port], origin("port")));
        self
    }

    /// Several servers, tried in order (libpq's multi-host form): `(host, port)` pairs. With
    /// [`target_session_attrs`](Self::target_session_attrs) the pool finds the writer or a reader among
    /// them on every new connection, so a promotion needs no restart.
    pub fn hosts<H: Into<String>>(mut self, hosts: impl IntoIterator<Item = (H, u16)>) -> Self {
        let (names, ports): (Vec<String>, Vec<u16>) = hosts.into_iter().map(|(h, p)| (h.into(), p)).unzip();
        self.layer.hosts = Some(Sourced::new(names, origin("hosts")));
        self.layer.ports = Some(Sourced::new(ports, origin("hosts")));
        self
    }

    /// Which of several servers to use (libpq's `target_session_attrs`; default any).
    pub fn target_session_attrs(mut self, attrs: crate::SessionAttrs) -> Self {
        self.layer.target_session_attrs = Some(Sourced::new(attrs, origin("target_session_attrs")));
        self
    }

    /// TCP keepalives on idle connections: first probe after `idle`, then every `interval`, dead after
    /// `count` unanswered (default 10 s, 5 s, 3: about 25 s). `None` turns keepalives off.
    pub fn tcp_keepalives(mut self, keepalives: Option<(Duration, Duration, u32)>) -> Self {
        let origin = origin("tcp_keepalives");
        self.layer.keepalives = Some(Sourced::new(keepalives.is_some(), &origin));
        if let Some((idle, interval, count)) = keepalives {
            self.layer.keepalives_idle = Some(Sourced::new(idle, &origin));
            self.layer.keepalives_interval = Some(Sourced::new(interval, &origin));
            self.layer.keepalives_count = Some(Sourced::new(count, origin));
        }
        self
    }

    /// How long sent data may go unacknowledged before a connection counts as dead (default 20 s;
    /// `Duration::ZERO` leaves it to the kernel, which waits about 15 minutes).
    pub fn tcp_user_timeout(mut self, timeout: Duration) -> Self {
        self.layer.tcp_user_timeout = Some(Sourced::new(timeout, origin("tcp_user_timeout")));
        self
    }

    /// The database (default `postgres`).
    pub fn dbname(mut self, dbname: impl Into<String>) -> Self {
        self.layer.dbname = Some(Sourced {
            value: dbname.into(),
            origin: origin("dbname"),
        });
        self
    }

    /// The role: the Entra principal's name. When unset everywhere, it is read from the token.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.layer.user = Some(Sourced {
            value: user.into(),
            origin: origin("user"),
        });
        self
    }

    /// TLS mode (default `verify-full`).
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.layer.sslmode = Some(Sourced {
            value: mode,
            origin: origin("ssl_mode"),
        });
        self
    }

    /// A PEM file of CA certificates that replaces the default roots (libpq's `sslrootcert`).
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.layer.sslrootcert = Some(Sourced {
            value: path.into(),
            origin: origin("ssl_root_cert"),
        });
        self
    }

    /// Trusts this CA certificate in addition to the roots.
    pub fn add_root_certificate(mut self, cert: CertificateDer<'static>) -> Self {
        self.plan_options = self.plan_options.add_root_certificate(cert);
        self
    }

    /// **Dangerous.** Lets `sslmode=require` skip certificate verification, as libpq's `require` does
    /// without a root file: the connection is encrypted, but whoever answers at the server's address
    /// (DNS spoofing, a hostile network) receives the token. Without this option `require` verifies (see
    /// [`ConnectionPlan`]); `entra-pg doctor` warns when it is in force.
    pub fn danger_accept_unverified_tls(mut self, accept: bool) -> Self {
        self.plan_options = self.plan_options.danger_accept_unverified_tls(accept);
        self
    }

    /// `application_name` (default `entra-pool`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.layer.application_name = Some(Sourced {
            value: name.into(),
            origin: origin("application_name"),
        });
        self
    }

    /// TCP connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.layer.connect_timeout = Some(Sourced {
            value: timeout,
            origin: origin("connect_timeout"),
        });
        self
    }

    /// Signs in as this user-assigned managed identity (its client id). Shorthand for
    /// [`managed_identity`](Self::managed_identity) with [`UserAssignedId::ClientId`].
    pub fn managed_identity_client_id(self, client_id: impl Into<String>) -> Self {
        self.managed_identity(UserAssignedId::ClientId(client_id.into()))
    }

    /// Signs in as this user-assigned managed identity, named by client id, object id or resource id
    /// (above `AZURE_POSTGRESQL_CLIENTID`).
    pub fn managed_identity(mut self, id: UserAssignedId) -> Self {
        self.managed_identity = Some(id);
        self
    }

    /// Which kind of token source to use (default [`SourceKind::Auto`]: a service principal's secret when
    /// configured, else the default chain with the configured managed identity).
    pub fn token_source_kind(mut self, kind: SourceKind) -> Self {
        self.source_kind = kind;
        self
    }

    /// Signs in as a service principal with a client secret.
    pub fn service_principal(
        mut self,
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        let origin = origin("service_principal");
        self.layer.tenant_id = Some(Sourced {
            value: tenant_id.into(),
            origin: origin.clone(),
        });
        self.layer.client_id = Some(Sourced {
            value: client_id.into(),
            origin: origin.clone(),
        });
        self.layer.client_secret = Some(Sourced {
            value: SecretString::from(secret.into()),
            origin,
        });
        self
    }

    /// Fetches tokens from this source (wrapped in a new refresher).
    pub fn token_source(mut self, source: impl TokenSource + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Uses an existing refresher's tokens (share one refresher between several pools).
    pub fn token_handle(mut self, tokens: TokenHandle) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The token scope (default the public cloud's `https://ossrdbms-aad.database.windows.net/.default`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The refresher's policy (renewal, backoff, start mode).
    pub fn refresh_policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Network settings of the token endpoints.
    pub fn http_options(mut self, http: HttpOptions) -> Self {
        self.http = http;
        self
    }

    /// **Static-password mode**: no Entra tokens; every connection uses this password. For tests,
    /// benchmarks and migrations; a password anywhere else in the configuration is an error.
    pub fn static_password(mut self, password: impl Into<String>) -> Self {
        self.static_password = Some(SecretString::from(password.into()));
        self
    }

    /// How long a new connection waits for a token before failing with
    /// [`ConnectError::Token`](crate::ConnectError::Token) (default 15 s).
    pub fn token_wait(mut self, wait: Duration) -> Self {
        self.token_wait = wait;
        self
    }

    /// The name metrics and logs give this configuration's connections (`db.client.connection.pool.name`,
    /// feature `metrics`; default `entra-pool`): tell a writer pool from a reader pool.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into().into();
        self
    }

    /// The name metrics and logs give this configuration's connections.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// The settings that will be used, merged from every layer, without connecting or checking them.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let from_env = settings_from_env(&self.env, self.connection_string.as_deref())?;
        Ok(from_env.overlaid_with(self.layer.clone()))
    }

    /// The connection plan: the merged settings checked against every rule (TLS, no token in
    /// cleartext, no password with tokens). Nothing is sent anywhere.
    pub fn plan(&self) -> Result<ConnectionPlan, ConfigError> {
        let credential = match self.static_password {
            Some(_) => CredentialKind::StaticPassword,
            None => CredentialKind::EntraToken,
        };
        let mut options = self.plan_options.clone();
        options.credential = credential;
        ConnectionPlan::new(&self.resolve()?, &options)
    }

    /// The token source the pool would use, chosen from the configuration: the one given to
    /// [`token_source`](Self::token_source), else by [`SourceSelection`] from the kind, the managed
    /// identity and the service principal configured.
    pub fn build_token_source(&self) -> Result<Arc<dyn TokenSource>, BuildError> {
        if let Some(source) = &self.source {
            return Ok(source.clone());
        }
        Ok(self.source_selection(&self.resolve()?)?.build()?)
    }

    /// Fetches one token as the pool would, retrying transient failures within the refresh policy's
    /// retry budget ([`entra_token::fetch_with_retry`]): for one-shot tools.
    pub async fn fetch_token(&self) -> Result<AccessToken, BuildError> {
        let source = self.build_token_source()?;
        Ok(entra_token::fetch_with_retry(source.as_ref(), &self.scope, self.policy.retry_policy()).await?)
    }

    /// The token scope.
    pub fn get_scope(&self) -> &str {
        &self.scope
    }

    /// The connector every front opens connections with: the plan checked, the credential ready (the
    /// refresher started, its first token fetched as the fail-fast start does, or the static password)
    /// and the role settled.
    pub async fn build_connector(&self) -> Result<EntraConnect, BuildError> {
        let plan = self.plan()?;
        let connect = match &self.static_password {
            Some(password) => {
                if plan.role().is_none() {
                    return Err(ConfigError::Missing {
                        setting: "user",
                        how: "EntraConfig::user or PGUSER",
                    }
                    .into());
                }
                EntraConnect::with_static_password(plan, password.clone())
            }
            None => {
                let tokens = self.start_tokens().await?;
                let plan = plan.resolve_role(&tokens).await?;
                EntraConnect::new(plan, tokens)?
            }
        };
        Ok(connect.token_wait(self.token_wait).pool_name(self.name.clone()))
    }

    /// Which source the settings name: the one place a client id, a service principal or an explicit
    /// managed identity becomes a token source.
    fn source_selection(&self, settings: &Settings) -> Result<SourceSelection, ConfigError> {
        let mut selection = SourceSelection::new(self.source_kind)
            .env(self.env.clone())
            .http_options(self.http.clone());
        if let Some(secret) = &settings.client_secret {
            let tenant = settings.tenant_id.as_ref().ok_or_else(|| {
                ConfigError::invalid(
                    &secret.origin,
                    "<redacted>",
                    "a client secret needs a tenant id too (AZURE_POSTGRESQL_TENANTID)",
                )
            })?;
            let client_id = settings.client_id.as_ref().ok_or_else(|| {
                ConfigError::invalid(
                    &secret.origin,
                    "<redacted>",
                    "a client secret needs a client id too (AZURE_POSTGRESQL_CLIENTID)",
                )
            })?;
            selection = selection.service_principal(ServicePrincipalSecret::new(
                &tenant.value,
                &client_id.value,
                secret.value.clone(),
            ));
        } else if let Some(client_id) = &settings.client_id {
            selection = selection.user_assigned(UserAssignedId::ClientId(client_id.value.clone()));
        }
        if let Some(id) = &self.managed_identity {
            selection = selection.user_assigned(id.clone());
        }
        Ok(selection)
    }

    /// The token handle connections sign in with: the one given to [`token_handle`](Self::token_handle),
    /// else a new refresher started on [`build_token_source`](Self::build_token_source)'s source (its
    /// first fetch retried within the budget in fail-fast mode).
    pub async fn start_tokens(&self) -> Result<TokenHandle, BuildError> {
        if let Some(tokens) = &self.tokens {
            return Ok(tokens.clone());
        }
        let source = self.build_token_source()?;
        Ok(Refresher::start(source, self.scope.clone(), self.policy.clone()).await?)
    }
}
