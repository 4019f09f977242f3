//! [`EntraPgPool`]: a `sqlx::PgPool` kept signed in with the current token.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use entra_postgres::{BuildError, EntraConfig};
use entra_token::{AccessToken, TokenHandle, TokenStatus};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::task::JoinHandle;

use crate::options::connect_options;

/// Builds an [`EntraPgPool`]: the [`EntraConfig`] every front shares (connection strings, Service
/// Connector's and libpq's variables, the identity and its refresher, `verify-full` by default), then
/// sqlx's pool options, sized and bounded in the words of the other fronts (`max_size`, `wait_timeout`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = entra_sqlx::EntraPgPool::builder().max_size(8).build().await?;
/// let (user,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(pool.pool()).await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct EntraPgPoolBuilder {
    config: EntraConfig,
    options: PgPoolOptions,
}

impl std::fmt::Debug for EntraPgPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPgPoolBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EntraPgPoolBuilder {
    /// A sqlx pool of connections made by `config` (where to connect, the identity, the refresher, TLS).
    pub fn new(config: EntraConfig) -> Self {
        EntraPgPoolBuilder {
            config,
            options: PgPoolOptions::new(),
        }
    }

    /// sqlx's pool options (size, timeouts, lifetimes, hooks).
    pub fn pool_options(mut self, options: PgPoolOptions) -> Self {
        self.options = options;
        self
    }

    /// The most connections the pool holds (sqlx's `max_connections`), as every front calls it.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.options = self
            .options
            .max_connections(u32::try_from(max_size).unwrap_or(u32::MAX));
        self
    }

    /// How long an acquire waits for a connection (sqlx's `acquire_timeout`; `None`: as good as forever),
    /// as every front calls it.
    pub fn wait_timeout(mut self, timeout: Option<Duration>) -> Self {
        // sqlx has no unbounded acquire; a century stands in for it.
        let wait = timeout.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
        self.options = self.options.acquire_timeout(wait);
        self
    }

    /// Checks the configuration, starts the refresher (the first fetch retried within its budget) and
    /// builds the pool; no connection is opened yet.
    pub async fn build(self) -> Result<EntraPgPool, BuildError> {
        let connector = self.config.build_connector().await?;
        let tokens = connector.tokens().cloned().ok_or_else(|| {
            BuildError::Config(entra_postgres::ConfigError::Invalid {
                origin: "EntraConfig::static_password".into(),
                value: "<redacted>".into(),
                problem: "the sqlx adapter signs in with Entra tokens only: for a static password use sqlx \
                          directly"
                    .into(),
            })
        })?;
        let plan = connector.plan().clone();
        let base = connect_options(&plan)?;
        let token = tokens.get().await?;
        let pool = self
            .options
            .connect_lazy_with(base.clone().password(token.secret()));
        let shared = Arc::new(Shared {
            base,
            role: plan.role().unwrap_or_default().to_string(),
            tokens: tokens.clone(),
            token_wait: connector.get_token_wait(),
            pushed: Mutex::new(token),
        });
        let follower = tokio::spawn(follow(pool.clone(), shared.clone()));
        tracing::info!(
            user = plan.role().unwrap_or_default(),
            tls = %plan.tls().reason,
            "entra sqlx pool ready"
        );
        Ok(EntraPgPool {
            pool,
            shared,
            _follower: Arc::new(AbortOnDrop(follower)),
        })
    }
}

/// A `sqlx::PgPool` whose new connections sign in with the current Entra token.
///
/// sqlx opens connections with the options it holds and has no per-connection hook, so a task follows
/// the refresher and hands sqlx fresh options (`Pool::set_connect_options`) at every rotation, and
/// [`acquire`](Self::acquire) does the same before retrying once when the server refuses a token.
/// Open connections keep working past their token's expiry, as on Azure; set
/// `PgPoolOptions::max_lifetime` to rotate them.
///
/// Use [`pool`](Self::pool) (or `Deref`) wherever sqlx wants a `&PgPool`. Keep this value (or a clone)
/// alive: the task that renews the pool's options ends when the last clone drops, or when the pool is
/// closed.
#[derive(Clone)]
pub struct EntraPgPool {
    pool: PgPool,
    shared: Arc<Shared>,
    _follower: Arc<AbortOnDrop>,
}

impl std::fmt::Debug for EntraPgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPgPool")
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .field("tokens", &self.shared.tokens)
            .finish()
    }
}

impl std::ops::Deref for EntraPgPool {
    type Target = PgPool;
    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

impl EntraPgPool {
    /// A builder reading the process's environment ([`EntraConfig::from_env`]): the one-line start.
    pub fn builder() -> EntraPgPoolBuilder {
        EntraPgPoolBuilder::new(EntraConfig::from_env())
    }

    /// The sqlx pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The token handle behind the pool (always there: the adapter signs in with tokens only; an
    /// `Option` as every front's `tokens()` is).
    pub fn tokens(&self) -> Option<&TokenHandle> {
        Some(&self.shared.tokens)
    }

    /// The role every connection signs in as.
    pub fn role(&self) -> &str {
        &self.shared.role
    }

    /// The refresher's state.
    pub fn token_status(&self) -> TokenStatus {
        self.shared.tokens.status()
    }

    /// A connection, like `PgPool::acquire`; when the server refuses the token, [`recover`](Self::recover)
    /// hands sqlx a fresh one and the acquire is retried once.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        match self.pool.acquire().await {
            Err(e) if self.recover(&e).await => self.pool.acquire().await,
            result => result,
        }
    }

    /// The refused-token recovery of [`acquire`](Self::acquire), for code that acquires from the `PgPool`
    /// itself (an executor on [`pool`](Self::pool), SeaORM's `DatabaseConnection`), which sqlx gives no
    /// hook into: when `error` is the server refusing the token (28P01 or 28000, as
    /// [`AzureRefusal`](entra_postgres::AzureRefusal) decides for every front), the token sqlx holds is
    /// invalidated, the refresher's next one (awaited for at most the configuration's
    /// [`token_wait`](entra_postgres::EntraConfig::token_wait)) is handed to sqlx, and `true`
    /// says one retry may now sign in. `false` for any other error, and when no newer token could be had
    /// (too soon after the last refetch, or the identity endpoint failing): a retry would be refused
    /// again. Call it once per failed attempt, and retry once.
    ///
    /// sqlx does not say which token a failed attempt used, so this takes it to be the one sqlx holds.
    /// When several attempts fail together, a caller that arrives after another's recovery has already
    /// handed sqlx the new token gets `false` (that token is too recent to refetch) and returns its error;
    /// its next attempt signs in with the new token.
    pub async fn recover(&self, error: &sqlx::Error) -> bool {
        if !is_token_rejection(error) {
            return false;
        }
        let used = self.shared.pushed.lock().clone();
        tracing::warn!(token = %used.fingerprint(), "server rejected the token; fetching a new one for one retry");
        self.shared.tokens.invalidate(&used);
        match tokio::time::timeout(self.shared.token_wait, self.shared.tokens.get()).await {
            Ok(Ok(fresh)) if !fresh.same_as(&used) => {
                self.shared.push(&self.pool, fresh);
                true
            }
            // Not refetched (too recent to refetch, or no token): the same refusal would follow.
            _ => false,
        }
    }
}

/// Whether sqlx's error is a refusal a new token may cure, by the one classifier every front uses. sqlx
/// drives the handshake and does not say when the server refused, so only 28000/28P01 count.
fn is_token_rejection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => entra_postgres::AzureRefusal::classify(
            entra_postgres::Phase::Unknown,
            db.code().as_deref().unwrap_or_default(),
            db.message(),
        )
        .is_token_problem(),
        _ => false,
    }
}

struct Shared {
    base: PgConnectOptions,
    role: String,
    tokens: TokenHandle,
    /// How long a recovery waits for the next token: the configuration's, as every front waits.
    token_wait: Duration,
    /// The last token handed to sqlx.
    pushed: Mutex<AccessToken>,
}

impl Shared {
    /// Hands sqlx options with `token` as the password, unless it already has that token or a newer one:
    /// the follower and a recovery may read tokens in one order and push them in the other, and an older
    /// token must not replace a newer one (it may be the one a server just refused).
    fn push(&self, pool: &PgPool, token: AccessToken) {
        let mut pushed = self.pushed.lock();
        if pushed.same_as(&token) || token.generation() < pushed.generation() {
            return;
        }
        pool.set_connect_options(self.base.clone().password(token.secret()));
        tracing::debug!(token = %token.fingerprint(), "sqlx pool's connect options renewed");
        *pushed = token;
    }
}

/// Follows the refresher: every change of its status that brings a new token renews the pool's options.
async fn follow(pool: PgPool, shared: Arc<Shared>) {
    let mut rx = shared.tokens.watch();
    loop {
        // Read after subscribing, then after each change: a token published between the build's `get()`
        // and this task's subscription is pushed too, instead of waiting for the next rotation.
        if let Some(token) = shared.tokens.current() {
            shared.push(&pool, token);
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = pool.close_event() => break,
        }
    }
    tracing::debug!("sqlx token follower stopped");
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
