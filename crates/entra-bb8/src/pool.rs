//! [`EntraBb8Pool`] and its builder: an [`EntraConfig`] and bb8's sizing.

use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{BuildError, EntraConfig};
use entra_token::TokenHandle;

use crate::manager::{EntraConnectionManager, LogErrors};

/// bb8 has no unbounded wait; a century stands in for it.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A `wait_timeout` as bb8 takes it (it asserts a non-zero wait): `None` as good as forever, zero as
/// short as it allows (1 ms), so that zero fails at once as it does on the deadpool fronts.
fn bb8_wait(timeout: Option<Duration>) -> Duration {
    timeout.map_or(FOREVER, |t| t.max(Duration::from_millis(1)))
}

/// A `max_size` as bb8 takes it (it asserts a non-zero size): zero is a configuration error.
fn bb8_size(origin: &str, max_size: usize) -> Result<u32, BuildError> {
    if max_size == 0 {
        return Err(BuildError::Config(entra_postgres::ConfigError::Invalid {
            origin: origin.to_string(),
            value: "0".to_string(),
            problem: "a pool needs at least one connection: give 1 or more".to_string(),
        }));
    }
    Ok(u32::try_from(max_size).unwrap_or(u32::MAX))
}

/// Builds an [`EntraBb8Pool`]: the [`EntraConfig`] every front shares (where to connect, the identity
/// and its refresher, TLS), then bb8's own settings, in the words of the other fronts (`max_size`,
/// `wait_timeout`, `max_lifetime`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let pool = entra_bb8::EntraBb8Pool::builder()
///     .max_size(16)
///     .wait_timeout(Some(Duration::from_secs(10)))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct EntraBb8PoolBuilder {
    config: EntraConfig,
    builder: bb8::Builder<EntraConnectionManager>,
    /// Set by [`max_size`](Self::max_size), checked at build (bb8's builder panics on zero).
    max_size: Option<usize>,
}

impl std::fmt::Debug for EntraBb8PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraBb8PoolBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EntraBb8PoolBuilder {
    /// A bb8 pool of connections made by `config`, with the sizing the other fronts default to: 16
    /// connections, 30 s waits, connections retired after an hour (bb8's defaults otherwise: idle
    /// connections closed after 10 minutes, a connection tested at checkout). Errors bb8 keeps to
    /// itself are logged ([`LogErrors`]).
    pub fn new(config: EntraConfig) -> Self {
        EntraBb8PoolBuilder {
            config,
            builder: bb8::Pool::builder()
                .max_size(16)
                .connection_timeout(Duration::from_secs(30))
                .max_lifetime(Some(Duration::from_secs(3600)))
                .error_sink(Box::new(LogErrors)),
            max_size: None,
        }
    }

    /// bb8's own builder, for what this one does not name (`min_idle`, `idle_timeout`,
    /// `test_on_check_out`, `queue_strategy`, a `connection_customizer`, another error sink…). bb8
    /// checks what is set here itself, with assertions (a zero `max_size` or `connection_timeout`, a
    /// `min_idle` above `max_size` panic): this builder's own setters are checked and refused with an error.
    pub fn pool_builder(
        mut self,
        change: impl FnOnce(bb8::Builder<EntraConnectionManager>) -> bb8::Builder<EntraConnectionManager>,
    ) -> Self {
        self.builder = change(self.builder);
        self
    }

    /// The most connections the pool holds (default 16), as every front calls it.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = Some(max_size);
        self
    }

    /// How long `get()` waits for a connection, opening one included (bb8's `connection_timeout`;
    /// default 30 s; `None`: as good as forever), as every front calls it.
    pub fn wait_timeout(mut self, timeout: Option<Duration>) -> Self {
        let wait = bb8_wait(timeout);
        self.builder = self.builder.connection_timeout(wait);
        self
    }

    /// Retire connections older than this when they come back to the pool (default 1 h; `None`:
    /// never), so the pool rotates onto new tokens and, after a failover, onto the new server.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.builder = self.builder.max_lifetime(lifetime.filter(|l| !l.is_zero()));
        self
    }

    /// Checks the configuration, starts the refresher (the first fetch retried within its budget),
    /// settles the role and builds the pool; no connection is opened yet.
    pub async fn build(mut self) -> Result<EntraBb8Pool, BuildError> {
        if let Some(max_size) = self.max_size {
            self.builder = self
                .builder
                .max_size(bb8_size("EntraBb8PoolBuilder::max_size", max_size)?);
        }
        let connect = self.config.build_connector().await?;
        let role: Arc<str> = connect.plan().role().unwrap_or_default().into();
        let tokens = connect.tokens().cloned();
        tracing::info!(
            hosts = ?connect.plan().hosts(),
            user = &*role,
            tls = %connect.plan().tls().reason,
            "entra bb8 pool ready"
        );
        let pool = self.builder.build_unchecked(EntraConnectionManager::new(connect));
        Ok(EntraBb8Pool { pool, role, tokens })
    }
}

/// A `bb8::Pool` of `tokio_postgres::Client`s whose new connections sign in with the current Entra
/// token; `Deref`s to the pool (`get()`, `state()`…).
#[derive(Clone)]
pub struct EntraBb8Pool {
    pool: bb8::Pool<EntraConnectionManager>,
    role: Arc<str>,
    tokens: Option<TokenHandle>,
}

impl std::fmt::Debug for EntraBb8Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.pool.state();
        f.debug_struct("EntraBb8Pool")
            .field("role", &self.role)
            .field("connections", &state.connections)
            .field("idle", &state.idle_connections)
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl std::ops::Deref for EntraBb8Pool {
    type Target = bb8::Pool<EntraConnectionManager>;
    fn deref(&self) -> &Self::Target {
        &self.pool
    }
}

impl EntraBb8Pool {
    /// A builder reading the process's environment ([`EntraConfig::from_env`]): the one-line start.
    pub fn builder() -> EntraBb8PoolBuilder {
        EntraBb8PoolBuilder::new(EntraConfig::from_env())
    }

    /// The bb8 pool, for functions that take one.
    pub fn pool(&self) -> &bb8::Pool<EntraConnectionManager> {
        &self.pool
    }

    /// The role every connection signs in as.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The token handle connections sign in with (`None` in static-password mode).
    pub fn tokens(&self) -> Option<&TokenHandle> {
        self.tokens.as_ref()
    }
}
