//! [`PoolBuilder`]: an [`EntraConfig`] and deadpool's sizing, to a standard `deadpool_postgres::Pool`
//! ([`EntraPool`]); or, with [`build_multiplexed`](PoolBuilder::build_multiplexed), a
//! [`MultiplexedPool`](crate::MultiplexedPool).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::connect::EntraConnect;
use crate::entra_config::EntraConfig;
use crate::error::BuildError;
use crate::lifetime::Limits;
use crate::pool::EntraPool;

/// Builds a `deadpool_postgres::Pool` whose connections sign in with Entra ID tokens: the
/// [`EntraConfig`] every front shares (where to connect, the identity, the refresh policy, TLS), and the
/// pool's own sizing and behaviour (size, waits, lifetimes, recycling, replace-ahead).
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
#[derive(Debug)]
pub struct PoolBuilder {
    config: EntraConfig,
    max_size: usize,
    wait_timeout: Option<Duration>,
    create_timeout: Option<Duration>,
    recycle_timeout: Option<Duration>,
    limits: Limits,
    reaper_interval: Option<Duration>,
    recycling_method: RecyclingMethod,
    transaction_pooling: bool,
    check_timeout: Duration,
    replace_ahead: usize,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::from_env()
    }
}

/// The name the pool's metrics and log lines carry: the configuration's.
fn connect_name(config: &EntraConfig) -> Arc<str> {
    config.get_name().into()
}

impl PoolBuilder {
    /// A pool of connections made by `config`, with deadpool's defaults as this crate sets them (16
    /// connections, 30 s waits, connections retired after an hour).
    pub fn new(config: EntraConfig) -> Self {
        PoolBuilder {
            config,
            max_size: 16,
            wait_timeout: Some(Duration::from_secs(30)),
            create_timeout: Some(Duration::from_secs(30)),
            recycle_timeout: Some(Duration::from_secs(5)),
            limits: Limits {
                max_lifetime: Some(Duration::from_secs(3600)),
                idle_timeout: None,
                jitter: 0.1,
            },
            reaper_interval: None,
            recycling_method: RecyclingMethod::Fast,
            transaction_pooling: false,
            check_timeout: Duration::from_secs(5),
            replace_ahead: 0,
        }
    }

    /// A pool configured from the process's environment ([`EntraConfig::from_env`]): the one-line start.
    pub fn from_env() -> Self {
        Self::new(EntraConfig::from_env())
    }

    /// A pool configured by this connection string ([`EntraConfig::from_connection_string`]).
    pub fn from_connection_string(text: impl Into<String>) -> Self {
        Self::new(EntraConfig::from_connection_string(text))
    }

    /// The configuration connections are made by.
    pub fn config(&self) -> &EntraConfig {
        &self.config
    }

    /// Changes the configuration connections are made by: `builder.with_config(|c| c.user("orders-api"))`.
    pub fn with_config(mut self, change: impl FnOnce(EntraConfig) -> EntraConfig) -> Self {
        self.config = change(self.config);
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

    /// Checks the configuration, starts the token refresher (in the default fail-fast start, the first
    /// fetch retries transient failures within the retry budget and fails on a definitive error), and
    /// builds the pool. No connection is opened yet.
    pub async fn build(self) -> Result<EntraPool, BuildError> {
        let connect = self.config.build_connector().await?;
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
        crate::metrics::spawn_status_task(&pool, connect_name(&self.config));
        Ok(EntraPool {
            pool,
            tokens,
            user,
            check_timeout: self.check_timeout,
            name: connect_name(&self.config),
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
        let connect = self.config.build_connector().await?;
        let tokens = connect.tokens().cloned();
        let checkout = match tokens {
            Some(tokens) => {
                let mut same = self;
                same.config = same.config.token_handle(tokens);
                same.build().await?
            }
            None => self.build().await?,
        };
        crate::MultiplexedPool::start(connect, connections, max_lifetime, unnamed, wait, checkout)
            .await
            .map_err(BuildError::Connect)
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
            builder = builder.pre_recycle(self.limits.hook(connect_name(&self.config), spares));
        }
        if let Some(hook) = crate::role_check::hook(attrs, connect_name(&self.config)) {
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
        self.limits.spawn_reaper(pool, every, connect_name(&self.config));
    }
}
