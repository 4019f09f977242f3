//! [`PoolBuilder`]: from configuration to a standard `deadpool_postgres::Pool` ([`EntraPool`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use entra_token::{
    AccessToken, Env, HttpOptions, RefreshPolicy, Refresher, ServicePrincipalSecret, SourceKind,
    SourceSelection, TokenHandle, TokenSource, UserAssignedId, OSSRDBMS_SCOPE,
};
use rustls::pki_types::CertificateDer;
use secrecy::SecretString;

use crate::config::{settings_from_env, ConfigError, Settings, Sourced, SslMode};
use crate::connect::{EntraConnect, DEFAULT_TOKEN_WAIT};
use crate::error::BuildError;
use crate::lifetime::Limits;
use crate::plan::{ConnectionPlan, CredentialKind, PlanOptions};
use crate::pool::EntraPool;

/// Builds a `deadpool_postgres::Pool` whose connections sign in with Entra ID tokens.
///
/// Settings come from, highest precedence first: this builder's calls, a connection string
/// ([`connection_string`](Self::connection_string), else `AZURE_POSTGRESQL_CONNECTIONSTRING`), Service
/// Connector's variables (`AZURE_POSTGRESQL_HOST`, `_PORT`, `_DATABASE`, `_USER`, `_CLIENTID`, `_SSL`,
/// `_TENANTID`, `_CLIENTSECRET`) and libpq's (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGSSLMODE`,
/// `PGSSLROOTCERT`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`). The token source follows the identity settings: a
/// client secret → that service principal; a client id → that user-assigned managed identity (through the
/// default chain); otherwise [`DefaultSource`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = entra_postgres::PoolBuilder::from_env().max_size(16).build().await?;
/// let client = pool.get().await?;
/// let row = client.query_one("SELECT current_user", &[]).await?;
/// println!("signed in as {}", row.get::<_, String>(0));
/// # Ok(()) }
/// ```
#[must_use]
pub struct PoolBuilder {
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
    max_size: usize,
    wait_timeout: Option<Duration>,
    create_timeout: Option<Duration>,
    recycle_timeout: Option<Duration>,
    token_wait: Duration,
    limits: Limits,
    reaper_interval: Option<Duration>,
    recycling_method: RecyclingMethod,
    transaction_pooling: bool,
    check_timeout: Duration,
    pool_name: Arc<str>,
    replace_ahead: usize,
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("scope", &self.scope)
            .field("max_size", &self.max_size)
            .field("static_password", &self.static_password.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::from_env()
    }
}

fn builder_origin(call: &str) -> String {
    format!("PoolBuilder::{call}")
}

impl PoolBuilder {
    /// A builder reading the process's environment (Service Connector's and libpq's variables) when it
    /// builds.
    pub fn from_env() -> Self {
        PoolBuilder {
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
            max_size: 16,
            wait_timeout: Some(Duration::from_secs(30)),
            create_timeout: Some(Duration::from_secs(30)),
            recycle_timeout: Some(Duration::from_secs(5)),
            token_wait: DEFAULT_TOKEN_WAIT,
            limits: Limits {
                max_lifetime: Some(Duration::from_secs(3600)),
                idle_timeout: None,
                jitter: 0.1,
            },
            reaper_interval: None,
            recycling_method: RecyclingMethod::Fast,
            transaction_pooling: false,
            check_timeout: Duration::from_secs(5),
            pool_name: crate::connect::DEFAULT_POOL_NAME.into(),
            replace_ahead: 0,
        }
    }

    /// A builder with this connection string (`host=… dbname=…`, `postgres://…` or
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
            origin: builder_origin("host"),
        });
        self
    }

    /// Connect to this address instead of resolving the host name; TLS still verifies the name.
    pub fn hostaddr(mut self, addr: std::net::IpAddr) -> Self {
        self.layer.hostaddrs = Some(Sourced {
            value: vec![addr],
            origin: builder_origin("hostaddr"),
        });
        self
    }

    /// The server's port (default 5432; Azure's built-in PgBouncer listens on 6432).
    pub fn port(mut self, port: u16) -> Self {
        self.layer.ports = Some(Sourced::new(vec![port], builder_origin("port")));
        self
    }

    /// Several servers, tried in order (libpq's multi-host form): `(host, port)` pairs. With
    /// [`target_session_attrs`](Self::target_session_attrs) the pool finds the writer or a reader among
    /// them on every new connection, so a promotion needs no restart.
    pub fn hosts<H: Into<String>>(mut self, hosts: impl IntoIterator<Item = (H, u16)>) -> Self {
        let (names, ports): (Vec<String>, Vec<u16>) = hosts.into_iter().map(|(h, p)| (h.into(), p)).unzip();
        self.layer.hosts = Some(Sourced::new(names, builder_origin("hosts")));
        self.layer.ports = Some(Sourced::new(ports, builder_origin("hosts")));
        self
    }

    /// Which of several servers to use (libpq's `target_session_attrs`; default any).
    pub fn target_session_attrs(mut self, attrs: crate::SessionAttrs) -> Self {
        self.layer.target_session_attrs = Some(Sourced::new(attrs, builder_origin("target_session_attrs")));
        self
    }

    /// TCP keepalives on idle connections: first probe after `idle`, then every `interval`, dead after
    /// `count` unanswered (default 10 s, 5 s, 3: about 25 s). `None` turns keepalives off.
    pub fn tcp_keepalives(mut self, keepalives: Option<(Duration, Duration, u32)>) -> Self {
        let origin = builder_origin("tcp_keepalives");
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
        self.layer.tcp_user_timeout = Some(Sourced::new(timeout, builder_origin("tcp_user_timeout")));
        self
    }

    /// The database (default `postgres`).
    pub fn dbname(mut self, dbname: impl Into<String>) -> Self {
        self.layer.dbname = Some(Sourced {
            value: dbname.into(),
            origin: builder_origin("dbname"),
        });
        self
    }

    /// The role: the Entra principal's name. When unset everywhere, it is read from the token.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.layer.user = Some(Sourced {
            value: user.into(),
            origin: builder_origin("user"),
        });
        self
    }

    /// TLS mode (default `verify-full`).
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.layer.sslmode = Some(Sourced {
            value: mode,
            origin: builder_origin("ssl_mode"),
        });
        self
    }

    /// A PEM file of CA certificates that replaces the default roots (libpq's `sslrootcert`).
    pub fn ssl_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.layer.sslrootcert = Some(Sourced {
            value: path.into(),
            origin: builder_origin("ssl_root_cert"),
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
            origin: builder_origin("application_name"),
        });
        self
    }

    /// TCP connect timeout (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.layer.connect_timeout = Some(Sourced {
            value: timeout,
            origin: builder_origin("connect_timeout"),
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
        let origin = builder_origin("service_principal");
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

    /// The most connections the pool holds (default 16). Keep the sum over all processes below the
    /// server's `max_connections` minus its reserved ones.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// How long `get()` waits for a free connection (default 30 s; `None`: forever).
    pub fn wait_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long creating a connection may take, token included (default 30 s).
    pub fn create_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// How long recycling a connection may take (default 5 s).
    pub fn recycle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.recycle_timeout = timeout;
        self
    }

    /// How long a new connection waits for a token before failing with
    /// [`ConnectError::Token`](crate::ConnectError::Token) (default 15 s).
    pub fn token_wait(mut self, wait: Duration) -> Self {
        self.token_wait = wait;
        self
    }

    /// Retire connections older than this, ±10 % per connection (default 1 h; `None`: never).
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.limits.max_lifetime = lifetime;
        self
    }

    /// Close connections unused for this long (default: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }

    /// How often the reaper looks for retired idle connections (default: a quarter of the shorter limit,
    /// between 1 s and 30 s).
    pub fn reaper_interval(mut self, every: Duration) -> Self {
        self.reaper_interval = Some(every);
        self
    }

    /// deadpool's recycling check (default [`RecyclingMethod::Fast`]).
    pub fn recycling_method(mut self, method: RecyclingMethod) -> Self {
        self.recycling_method = method;
        self
    }

    /// For a server reached through PgBouncer in **transaction** mode (Azure's port 6432 when so
    /// configured): forgets each connection's cached prepared statements when it returns to the pool, since
    /// the next checkout may run on another server connection where they do not exist. Inside one
    /// `client.transaction()`, `prepare_cached` then works; outside transactions use `query_typed` (unnamed
    /// statements) or `simple_query`. See `docs/pgbouncer.md`.
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.transaction_pooling = on;
        self
    }

    /// **Replace-ahead**: keep `spares` connections signed in, in the background, so that a `get()` that
    /// must open a connection (one retired by `max_lifetime`, or a pool growing) takes a ready one instead
    /// of waiting for TCP, TLS and the Entra sign-in (default 0: off). Spares are server connections
    /// beyond `max_size`; each waits at most two `max_lifetime`s before it is replaced. So that connections
    /// that would retire together (opened together at start-up) do not outrun the spares, a connection in
    /// the last 15 % of its lifetime retires early when a spare can take its place, at the pace spares are
    /// opened ([`ConnectionCounts::retired_early`](crate::ConnectionCounts::retired_early)).
    pub fn replace_ahead(mut self, spares: usize) -> Self {
        self.replace_ahead = spares;
        self
    }

    /// The pool's name in metrics (`db.client.connection.pool.name`, feature `metrics`; default
    /// `entra-pool`): tell a writer pool from a reader pool.
    pub fn pool_name(mut self, name: impl Into<String>) -> Self {
        self.pool_name = name.into().into();
        self
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

    /// Checks the configuration, starts the token refresher (in the default fail-fast start, the first
    /// fetch retries transient failures within the retry budget and fails on a definitive error), and
    /// builds the pool. No connection is opened yet.
    pub async fn build(self) -> Result<EntraPool, BuildError> {
        let plan = self.plan()?;
        let connect = self.connector(plan).await?;
        let user = connect.plan().role().unwrap_or_default().to_string();
        let tokens = connect.tokens().cloned();
        tracing::info!(
            hosts = ?connect.plan().hosts(),
            user,
            tls = %connect.plan().tls().reason,
            max_size = self.max_size,
            "entra pool ready"
        );
        let (connect, spares) = match self.replace_ahead {
            0 => (connect, None),
            n => {
                let spares = crate::spares::Spares::new(n, self.limits.max_lifetime);
                (connect.with_spares(spares.clone()), Some(spares))
            }
        };
        let warmer = spares.clone().map(|s| (connect.without_spares(), s));
        let counts = connect.clone();
        let pool = self.deadpool(connect, spares)?;
        if let Some((plain, spares)) = warmer {
            crate::spares::spawn_warmer(plain, spares, pool.weak());
        }
        self.start_reaper(&pool);
        crate::metrics::spawn_status_task(&pool, self.pool_name.clone());
        Ok(EntraPool {
            pool,
            tokens,
            user,
            check_timeout: self.check_timeout,
            name: self.pool_name.clone(),
            connector: counts,
        })
    }

    /// Builds a [`MultiplexedPool`](crate::MultiplexedPool): `connections` connections shared by every
    /// caller, statements pipelined on each, and, for transactions, the ordinary checkout pool this builder
    /// describes (same token handle). Its connections rotate by `max_lifetime`, with a replacement signed
    /// in before each retires. The first `connections` connections open before it returns.
    pub async fn build_multiplexed(self, connections: usize) -> Result<crate::MultiplexedPool, BuildError> {
        let max_lifetime = self.limits.max_lifetime;
        let unnamed = self.transaction_pooling;
        let wait = self.wait_timeout.unwrap_or(Duration::from_secs(30));
        let plan = self.plan()?;
        let connect = self.connector(plan).await?;
        let tokens = connect.tokens().cloned();
        let checkout = match tokens {
            Some(tokens) => {
                let mut same = self;
                same.tokens = Some(tokens);
                same.build().await?
            }
            None => self.build().await?,
        };
        crate::MultiplexedPool::start(connect, connections, max_lifetime, unnamed, wait, checkout)
            .await
            .map_err(BuildError::Connect)
    }

    /// The credential (a started refresher, or the static password) and the plan's role settled.
    /// The connector a pool would use, for paths that open sessions themselves (`entra-proxy`): the plan
    /// checked, the refresher started (its first token fetched as [`build`](Self::build) does) and the
    /// role settled.
    pub async fn build_connector(&self) -> Result<EntraConnect, BuildError> {
        self.connector(self.plan()?).await
    }

    async fn connector(&self, plan: ConnectionPlan) -> Result<EntraConnect, BuildError> {
        let connect = match &self.static_password {
            Some(password) => {
                if plan.role().is_none() {
                    return Err(ConfigError::Missing {
                        setting: "user",
                        how: "PoolBuilder::user or PGUSER",
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
        Ok(connect
            .token_wait(self.token_wait)
            .pool_name(self.pool_name.clone()))
    }

    /// The deadpool pool around the connector, with the lifetime and PgBouncer hooks.
    fn deadpool(
        &self,
        connect: EntraConnect,
        spares: Option<Arc<crate::spares::Spares>>,
    ) -> Result<Pool, BuildError> {
        let config = connect.plan().config().clone();
        let attrs = connect
            .plan()
            .settings()
            .target_session_attrs
            .as_ref()
            .map(|a| a.value)
            .unwrap_or_default();
        let manager = Manager::from_connect(
            config,
            connect,
            ManagerConfig {
                recycling_method: self.recycling_method.clone(),
            },
        );
        let mut builder = Pool::builder(manager)
            .max_size(self.max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(self.wait_timeout)
            .create_timeout(self.create_timeout)
            .recycle_timeout(self.recycle_timeout);
        if self.limits.is_active() {
            builder = builder.pre_recycle(self.limits.hook(self.pool_name.clone(), spares));
        }
        if let Some(hook) = crate::role_check::hook(attrs, self.pool_name.clone()) {
            builder = builder.pre_recycle(hook);
        }
        if self.transaction_pooling {
            builder = builder.post_recycle(deadpool_postgres::Hook::sync_fn(|client, _| {
                client.statement_cache.clear();
                Ok(())
            }));
        }
        builder.build().map_err(BuildError::Pool)
    }

    /// Starts the reaper that retires idle connections past their lifetime or idle timeout.
    fn start_reaper(&self, pool: &Pool) {
        if !self.limits.is_active() {
            return;
        }
        let shortest = [self.limits.max_lifetime, self.limits.idle_timeout]
            .into_iter()
            .flatten()
            .min();
        let every = self.reaper_interval.unwrap_or_else(|| {
            (shortest.unwrap_or(Duration::from_secs(120)) / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(30))
        });
        self.limits.spawn_reaper(pool, every, self.pool_name.clone());
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

    /// The token handle a pool would use: the one given to [`token_handle`](Self::token_handle), else a
    /// new refresher started on [`build_token_source`](Self::build_token_source)'s source (its first
    /// fetch retried within the budget in fail-fast mode). For adapters that build other pools (sqlx).
    pub async fn start_tokens(&self) -> Result<TokenHandle, BuildError> {
        if let Some(tokens) = &self.tokens {
            return Ok(tokens.clone());
        }
        let source = self.build_token_source()?;
        Ok(Refresher::start(source, self.scope.clone(), self.policy.clone()).await?)
    }
}
