//! [`MultiplexedPool`]: many tasks share a few connections, their statements pipelined on each.
//!
//! The checkout pool gives each task a connection for one round trip at a time, so throughput per
//! connection is bounded by latency. Azure caps `max_connections` (a Burstable server allows a few dozen),
//! so a worker fleet or a load generator runs out of connections first. tokio-postgres pipelines the
//! statements of concurrent callers on one connection; this pool spreads callers over `n` connections and
//! lets them do so.
//!
//! - **Statements outside transactions** only: [`query`](MultiplexedPool::query),
//!   [`query_one`](MultiplexedPool::query_one), [`query_opt`](MultiplexedPool::query_opt),
//!   [`execute`](MultiplexedPool::execute), [`query_typed`](MultiplexedPool::query_typed). A transaction
//!   needs a connection of its own: take one from [`checkout`](MultiplexedPool::checkout) (the ordinary
//!   pool, same token handle).
//! - **Prepared once per connection** and cached by SQL text (the first 1 024 texts; others are prepared
//!   per call). Behind PgBouncer in transaction mode
//!   ([`PoolBuilder::transaction_pooling`](crate::PoolBuilder::transaction_pooling)) nothing is prepared:
//!   statements go as unnamed ones (`query_typed`), so a statement with parameters must say their types.
//! - **Rotation**: before a connection reaches its `max_lifetime` (±10 %), a replacement signs in with the
//!   current token, prepares the statements used on its predecessor (so callers wait for no prepare
//!   round trip after the hand-over), and takes over new statements; statements already in flight on the
//!   old one finish, then it closes.
//! - **A dead connection** fails only the statements in flight on it, with its error; nothing is retried
//!   behind the caller's back. New statements go to the other connections while its slot is reopened in
//!   the background.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row, Statement};

use crate::{EntraConnect, EntraPool};

/// Why a statement of a [`MultiplexedPool`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MultiplexError {
    /// No connection is open, and none reopened within the wait timeout.
    #[error("no connection of the multiplexed pool is open (waited {waited:?})")]
    NoConnection {
        /// How long the statement waited for one.
        waited: Duration,
        /// Why the last attempt to open one failed.
        #[source]
        last_error: Option<tokio_postgres::Error>,
    },
    /// The statement failed: the server's error, or its connection died while it was in flight.
    #[error("the statement failed")]
    Statement(#[from] tokio_postgres::Error),
    /// Behind PgBouncer in transaction mode, statements are unnamed and their parameters need types.
    #[error(
        "behind PgBouncer in transaction mode a statement with parameters needs their types: use query_typed"
    )]
    NeedsTypes,
}

/// How long a replacement may spend preparing its predecessor's statements before it takes over anyway.
const PREPARE_AHEAD_LIMIT: Duration = Duration::from_secs(10);

/// Statements cached per connection, at most.
const MAX_CACHED_STATEMENTS: usize = 1024;

struct Conn {
    client: Client,
    _task: JoinHandle<()>,
    created: Instant,
    retire_at: Instant,
    /// Prepared statements by SQL text, each with whether it was used on this connection (what a
    /// replacement prepares ahead).
    statements: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    statement: Statement,
    used: bool,
}

struct Slot {
    current: ArcSwapOption<Conn>,
    /// A replacement is being opened (rotation or after a death).
    busy: AtomicBool,
}

struct Inner {
    connect: EntraConnect,
    slots: Vec<Slot>,
    next: AtomicUsize,
    max_lifetime: Option<Duration>,
    unnamed: bool,
    wait_timeout: Duration,
    reopened: Notify,
    last_error: Mutex<Option<tokio_postgres::Error>>,
}

/// A few connections shared by many tasks (see the [module docs](self)), plus the ordinary checkout pool
/// for transactions, signed in with the same token handle.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = entra_postgres::PoolBuilder::from_env().build_multiplexed(4).await?;
/// let row = pool.query_one("SELECT balance FROM accounts WHERE id = $1", &[&42i32]).await?;
/// let mut client = pool.checkout().get().await?; // transactions: a connection of their own
/// let tx = client.transaction().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MultiplexedPool {
    inner: Arc<Inner>,
    checkout: EntraPool,
}

impl std::fmt::Debug for MultiplexedPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiplexedPool")
            .field("connections", &self.inner.slots.len())
            .field("open", &self.open_connections())
            .field("checkout", &self.checkout)
            .finish()
    }
}

impl MultiplexedPool {
    pub(crate) async fn start(
        connect: EntraConnect,
        connections: usize,
        max_lifetime: Option<Duration>,
        unnamed: bool,
        wait_timeout: Duration,
        checkout: EntraPool,
    ) -> Result<MultiplexedPool, tokio_postgres::Error> {
        let inner = Arc::new(Inner {
            connect,
            slots: (0..connections.max(1))
                .map(|_| Slot {
                    current: ArcSwapOption::empty(),
                    busy: AtomicBool::new(false),
                })
                .collect(),
            next: AtomicUsize::new(0),
            max_lifetime,
            unnamed,
            wait_timeout,
            reopened: Notify::new(),
            last_error: Mutex::new(None),
        });
        // The first connections open before the pool is handed out, so a configuration that cannot sign in
        // fails here; any later failure is retried in the background.
        for slot in &inner.slots {
            let conn = inner.open().await?;
            slot.current.store(Some(Arc::new(conn)));
        }
        tokio::spawn(maintain(Arc::downgrade(&inner)));
        Ok(MultiplexedPool { inner, checkout })
    }

    /// The ordinary checkout pool behind it, for transactions and anything that needs a connection of its
    /// own.
    pub fn checkout(&self) -> &EntraPool {
        &self.checkout
    }

    /// The role every connection signs in as.
    pub fn role(&self) -> &str {
        self.checkout.role()
    }

    /// The token handle the connections sign in with (`None` in static-password mode).
    pub fn tokens(&self) -> Option<&entra_token::TokenHandle> {
        self.checkout.tokens()
    }

    /// Connections open now (of the `n` asked for).
    pub fn open_connections(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| s.current.load().as_ref().is_some_and(|c| !c.client.is_closed()))
            .count()
    }

    /// Runs a statement and returns its rows.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, MultiplexError> {
        let conn = self.inner.pick().await?;
        if self.inner.unnamed {
            if !params.is_empty() {
                return Err(MultiplexError::NeedsTypes);
            }
            return Ok(conn.client.query_typed(sql, &[]).await?);
        }
        let statement = conn.statement(sql).await?;
        Ok(conn.client.query(&statement, params).await?)
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, MultiplexError> {
        let conn = self.inner.pick().await?;
        if self.inner.unnamed {
            if !params.is_empty() {
                return Err(MultiplexError::NeedsTypes);
            }
            return Ok(conn.client.query_typed_one(sql, &[]).await?);
        }
        let statement = conn.statement(sql).await?;
        Ok(conn.client.query_one(&statement, params).await?)
    }

    /// Runs a statement that returns at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, MultiplexError> {
        let conn = self.inner.pick().await?;
        if self.inner.unnamed {
            if !params.is_empty() {
                return Err(MultiplexError::NeedsTypes);
            }
            return Ok(conn.client.query_typed_opt(sql, &[]).await?);
        }
        let statement = conn.statement(sql).await?;
        Ok(conn.client.query_opt(&statement, params).await?)
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, MultiplexError> {
        let conn = self.inner.pick().await?;
        if self.inner.unnamed {
            if !params.is_empty() {
                return Err(MultiplexError::NeedsTypes);
            }
            return Ok(conn.client.execute_typed(sql, &[]).await?);
        }
        let statement = conn.statement(sql).await?;
        Ok(conn.client.execute(&statement, params).await?)
    }

    /// Runs an unnamed statement whose parameter types are given: one round trip, nothing prepared (works
    /// behind PgBouncer in transaction mode).
    pub async fn query_typed(
        &self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, MultiplexError> {
        let conn = self.inner.pick().await?;
        Ok(conn.client.query_typed(sql, params).await?)
    }
}

impl Conn {
    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(cached) = self.statements.lock().get_mut(sql) {
            cached.used = true;
            return Ok(cached.statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.cache(sql.to_string(), statement.clone(), true);
        Ok(statement)
    }

    fn cache(&self, sql: String, statement: Statement, used: bool) {
        let mut cache = self.statements.lock();
        // SQL text built per call (values inlined) would otherwise grow the cache, and the server's
        // prepared statements, without end; past the cap a statement is closed once its caller drops it.
        if cache.len() < MAX_CACHED_STATEMENTS {
            cache.insert(sql, Cached { statement, used });
        }
    }

    /// Prepares, pipelined, the statements used on `predecessor`, before this connection takes over from
    /// it; each is cached as soon as it is prepared. Statements prepared ahead but never used are not
    /// carried further, so one-off SQL leaves the cache within two rotations. One that no longer prepares
    /// (a table dropped since) is left out: its first use prepares it again and gives the caller the
    /// server's error.
    async fn prepare_like(&self, predecessor: &Conn) {
        use futures_util::stream::{FuturesUnordered, StreamExt};

        let texts: Vec<String> = predecessor
            .statements
            .lock()
            .iter()
            .filter(|(_, cached)| cached.used)
            .map(|(sql, _)| sql.clone())
            .collect();
        let mut preparing: FuturesUnordered<_> = texts
            .into_iter()
            .map(|sql| async move {
                let prepared = self.client.prepare(&sql).await;
                (sql, prepared)
            })
            .collect();
        while let Some((sql, prepared)) = preparing.next().await {
            match prepared {
                Ok(statement) => self.cache(sql, statement, false),
                Err(e) => tracing::debug!(
                    error = ?crate::report(&e),
                    "multiplexed pool: a cached statement did not prepare on the replacement; it prepares on \
                     first use"
                ),
            }
        }
    }
}

impl Inner {
    async fn open(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, task) = self.connect.open_new().await?;
        let now = Instant::now();
        let lifetime = self.max_lifetime.map(|l| {
            // ±10 %, drawn per connection: connections opened together retire apart.
            let unit =
                std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), now) % 1000;
            l.mul_f64(0.9 + 0.2 * unit as f64 / 1000.0)
        });
        Ok(Conn {
            client,
            _task: task,
            created: now,
            retire_at: lifetime.map_or(now + Duration::from_secs(100 * 365 * 24 * 3600), |l| now + l),
            statements: Mutex::new(HashMap::new()),
        })
    }

    /// An open connection, round robin; waits (up to the wait timeout) when none is open.
    async fn pick(&self) -> Result<Arc<Conn>, MultiplexError> {
        let started = Instant::now();
        loop {
            let notified = self.reopened.notified();
            let n = self.slots.len();
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            for i in 0..n {
                let slot = &self.slots[(first + i) % n];
                if let Some(conn) = slot.current.load_full() {
                    if !conn.client.is_closed() {
                        return Ok(conn);
                    }
                }
            }
            let left = self.wait_timeout.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return Err(MultiplexError::NoConnection {
                    waited: started.elapsed(),
                    last_error: self.last_error.lock().take(),
                });
            }
        }
    }
}

/// Opens a replacement for `slot` and swaps it in; the old connection closes once its in-flight
/// statements let go of it.
async fn replace(inner: Arc<Inner>, index: usize) {
    let slot = &inner.slots[index];
    match inner.open().await {
        Ok(conn) => {
            // Callers would otherwise wait for a prepare round trip on each statement's first use after
            // the hand-over: the rotation windows' tail latency.
            if let Some(old) = slot.current.load_full() {
                // Bounded: a server that stops answering must not hold the slot's replacement back; what
                // did not prepare in time prepares on first use.
                if tokio::time::timeout(PREPARE_AHEAD_LIMIT, conn.prepare_like(&old))
                    .await
                    .is_err()
                {
                    tracing::debug!(
                        "multiplexed pool: preparing the predecessor's statements timed out; the rest \
                         prepare on first use"
                    );
                }
            }
            slot.current.store(Some(Arc::new(conn)));
            inner.reopened.notify_waiters();
        }
        Err(e) => {
            tracing::warn!(error = ?crate::report(&e), "multiplexed pool: opening a connection failed; retrying");
            *inner.last_error.lock() = Some(e);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    slot.busy.store(false, Ordering::Release);
}

/// Every 100 ms: replaces connections that died or near their lifetime; ends with the pool.
async fn maintain(weak: Weak<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(inner) = weak.upgrade() else { break };
        let now = Instant::now();
        for (index, slot) in inner.slots.iter().enumerate() {
            let due = match slot.current.load().as_ref() {
                None => true,
                Some(conn) => {
                    // A replacement signs in about a second before the old one would retire.
                    let lead = Duration::from_secs(1).min((conn.retire_at - conn.created) / 4);
                    conn.client.is_closed() || now + lead >= conn.retire_at
                }
            };
            if due && !slot.busy.swap(true, Ordering::AcqRel) {
                tokio::spawn(replace(inner.clone(), index));
            }
        }
    }
    tracing::trace!("multiplexed pool maintenance stopped");
}
