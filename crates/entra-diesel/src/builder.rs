//! [`EntraDieselPoolBuilder`]: an [`EntraConfig`] and a pool's sizing, to diesel-async's deadpool or bb8
//! pool.

use std::sync::Arc;
use std::time::Duration;

use entra_postgres::{BuildError, EntraConfig, EntraConnect};
use entra_token::TokenHandle;

/// bb8 has no unbounded wait; a century stands in for it.
#[cfg(feature = "bb8")]
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Builds an [`EntraDieselPool`] of diesel-async `AsyncPgConnection`s: the [`EntraConfig`] every front
/// shares (where to connect, the identity and its refresher, TLS), and the pool's sizing in the words of
/// the other fronts (`max_size`, `wait_timeout`, `max_lifetime`); then `build_deadpool` (feature
/// `deadpool`) or `build_bb8` (feature `bb8`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let pool = entra_diesel::EntraDieselPoolBuilder::from_env()
///     .max_size(16)
///     .wait_timeout(Some(Duration::from_secs(10)))
///     .build_deadpool()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Debug)]
pub struct EntraDieselPoolBuilder {
    config: EntraConfig,
    max_size: usize,
    wait_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
}

impl EntraDieselPoolBuilder {
    /// A pool of connections made by `config`, sized as the other fronts are by default: 16
    /// connections, 30 s waits, connections retired after an hour.
    pub fn new(config: EntraConfig) -> Self {
        EntraDieselPoolBuilder {
            config,
            max_size: 16,
            wait_timeout: Some(Duration::from_secs(30)),
            max_lifetime: Some(Duration::from_secs(3600)),
        }
    }

    /// A pool configured from the process's environment ([`EntraConfig::from_env`]).
    pub fn from_env() -> Self {
        Self::new(EntraConfig::from_env())
    }

    /// The most connections the pool holds (default 16).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// How long `get()` waits for a connection, opening one included (default 30 s; `None`: forever).
    /// deadpool bounds the wait for a free slot and the opening each by it; bb8 bounds the whole `get()`.
    pub fn wait_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Retire connections older than this when they come back to the pool (default 1 h; `None`:
    /// never), so the pool rotates onto new tokens and, after a failover, onto the new server.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The connector, the role and the tokens: the configuration checked and the refresher started
    /// (its first fetch retried within the budget).
    async fn connector(&self) -> Result<(EntraConnect, Arc<str>, Option<TokenHandle>), BuildError> {
        let connect = self.config.build_connector().await?;
        let role: Arc<str> = connect.plan().role().unwrap_or_default().into();
        let tokens = connect.tokens().cloned();
        tracing::info!(
            hosts = ?connect.plan().hosts(),
            user = &*role,
            tls = %connect.plan().tls().reason,
            "entra diesel pool ready"
        );
        Ok((connect, role, tokens))
    }

    /// diesel-async's deadpool pool (`diesel_async::pooled_connection::deadpool::Pool`); no connection
    /// is opened yet. deadpool's `get()` returns a connection that could not be opened as
    /// `PoolError::Backend(ConnectionError(BadConnection(report)))`.
    #[cfg(feature = "deadpool")]
    pub async fn build_deadpool(
        self,
    ) -> Result<EntraDieselPool<diesel_async::pooled_connection::deadpool::Pool<AsyncPgConnection>>, BuildError>
    {
        use diesel_async::pooled_connection::deadpool::{Hook, HookError, Pool};

        let (connect, role, tokens) = self.connector().await?;
        let mut builder = Pool::builder(crate::setup::manager(connect))
            .max_size(self.max_size)
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(self.wait_timeout)
            // deadpool's wait covers a free slot only: the opening gets the same bound.
            .create_timeout(self.wait_timeout);
        if let Some(lifetime) = self.max_lifetime {
            builder = builder.pre_recycle(Hook::sync_fn(move |_, metrics| {
                if metrics.age() > lifetime {
                    Err(HookError::Message("past its max_lifetime".into()))
                } else {
                    Ok(())
                }
            }));
        }
        // The same deadpool (0.13) as deadpool-postgres's, so the same error type.
        let pool = builder.build().map_err(BuildError::Pool)?;
        Ok(EntraDieselPool { pool, role, tokens })
    }

    /// diesel-async's bb8 pool (`diesel_async::pooled_connection::bb8::Pool`); no connection is opened
    /// yet. bb8 opens connections in the background: its `get()` reports one that could not be opened
    /// only as `RunError::TimedOut` after `wait_timeout`, and logs the cause.
    #[cfg(feature = "bb8")]
    pub async fn build_bb8(
        self,
    ) -> Result<EntraDieselPool<diesel_async::pooled_connection::bb8::Pool<AsyncPgConnection>>, BuildError>
    {
        // bb8's builder panics on zero: refused here, as deadpool refuses it.
        if self.max_size == 0 {
            return Err(BuildError::Config(entra_postgres::ConfigError::Invalid {
                origin: "EntraDieselPoolBuilder::max_size".to_string(),
                value: "0".to_string(),
                problem: "a pool needs at least one connection: give 1 or more".to_string(),
            }));
        }
        let max_size = u32::try_from(self.max_size).unwrap_or(u32::MAX);
        let (connect, role, tokens) = self.connector().await?;
        let pool = bb8::Pool::builder()
            .max_size(max_size)
            // bb8 asserts a non-zero wait: `None` as good as forever, zero as short as it allows (1 ms),
            // so that zero fails at once as it does with deadpool.
            .connection_timeout(
                self.wait_timeout
                    .map_or(FOREVER, |w| w.max(Duration::from_millis(1))),
            )
            .max_lifetime(self.max_lifetime.filter(|l| !l.is_zero()))
            .error_sink(Box::new(LogErrors))
            .build_unchecked(crate::setup::manager(connect));
        Ok(EntraDieselPool { pool, role, tokens })
    }
}

use diesel_async::AsyncPgConnection;

/// Logs each error bb8 keeps to itself (a connection that could not be opened) with its causes.
#[cfg(feature = "bb8")]
#[derive(Debug, Clone, Copy)]
struct LogErrors;

#[cfg(feature = "bb8")]
impl bb8::ErrorSink<diesel_async::pooled_connection::PoolError> for LogErrors {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        tracing::warn!(error = %error, "diesel bb8 pool: a connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(*self)
    }
}

/// A diesel-async pool (`P`: deadpool's or bb8's) whose new connections sign in with the current Entra
/// token; `Deref`s to the pool (`get()`, `status()`/`state()`…).
#[derive(Clone)]
pub struct EntraDieselPool<P> {
    pool: P,
    role: Arc<str>,
    tokens: Option<TokenHandle>,
}

impl<P> std::fmt::Debug for EntraDieselPool<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraDieselPool")
            .field("role", &self.role)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl<P> std::ops::Deref for EntraDieselPool<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.pool
    }
}

impl<P> EntraDieselPool<P> {
    /// The pool, for functions that take one.
    pub fn pool(&self) -> &P {
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
