//! [`EntraPool`]: a built pool, the standard `deadpool_postgres::Pool` plus the token handle behind it,
//! its status and a health check.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use entra_token::{TokenHandle, TokenStatus};

use crate::connect::EntraConnect;
use crate::error::GetError;

/// A built pool: the standard `deadpool_postgres::Pool` (reach it with [`pool`](Self::pool) or through
/// `Deref`, and pass it to anything that takes one) plus the token handle behind it.
#[derive(Clone)]
pub struct EntraPool {
    pub(crate) pool: Pool,
    pub(crate) tokens: Option<TokenHandle>,
    pub(crate) user: String,
    pub(crate) check_timeout: Duration,
    pub(crate) name: Arc<str>,
    /// A clone of the pool's connector, for its counts.
    pub(crate) connector: EntraConnect,
}

impl std::fmt::Debug for EntraPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraPool")
            .field("pool", &self.pool.status())
            .field("tokens", &self.tokens)
            .finish()
    }
}

impl std::ops::Deref for EntraPool {
    type Target = Pool;
    fn deref(&self) -> &Pool {
        &self.pool
    }
}

/// A pool's state: deadpool's counts and the token's state.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolStatus {
    /// deadpool's status (size, available, waiting).
    pub pool: deadpool_postgres::Status,
    /// The token refresher's status (`None` in static-password mode).
    pub token: Option<TokenStatus>,
    /// How the pool's connections were opened: inside a `get()`, or ahead by replace-ahead.
    pub connections: crate::ConnectionCounts,
}

impl EntraPool {
    /// A connection from the pool, opened with the current token when none is free.
    ///
    /// The same as deadpool's `Pool::get` (reachable through [`pool`](Self::pool)), with an error whose
    /// chain shows each layer once.
    pub async fn get(&self) -> Result<deadpool_postgres::Object, GetError> {
        let started = std::time::Instant::now();
        let result = self.pool.get().await;
        let timed_out = matches!(result, Err(deadpool_postgres::PoolError::Timeout(_)));
        crate::metrics::checkout(&self.name, started.elapsed(), timed_out);
        Ok(result?)
    }

    /// The deadpool pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The deadpool pool, owned.
    pub fn into_pool(self) -> Pool {
        self.pool
    }

    /// The role connections sign in as (configured, or read from the token).
    pub fn role(&self) -> &str {
        &self.user
    }

    /// The token handle (`None` in static-password mode).
    pub fn tokens(&self) -> Option<&TokenHandle> {
        self.tokens.as_ref()
    }

    /// deadpool's status plus the token's.
    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            pool: self.pool.status(),
            token: self.tokens.as_ref().map(TokenHandle::status),
            connections: self.connector.counts(),
        }
    }

    /// Runs `SELECT 1` on a pooled connection within the check timeout (5 s): for health endpoints.
    pub async fn check(&self) -> Result<(), CheckError> {
        let run = async {
            let client = self.get().await.map_err(CheckError::Pool)?;
            client.simple_query("SELECT 1").await.map_err(CheckError::Query)?;
            Ok(())
        };
        match tokio::time::timeout(self.check_timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(CheckError::Timeout(self.check_timeout)),
        }
    }
}

/// Why [`EntraPool::check`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No connection could be had.
    #[error("no connection for the check")]
    Pool(#[source] GetError),
    /// `SELECT 1` failed.
    #[error("SELECT 1 failed")]
    Query(#[source] tokio_postgres::Error),
    /// The check took too long.
    #[error("the check did not finish within {0:?}")]
    Timeout(Duration),
}
