//! sqlx `PgPool`s for Azure Database for PostgreSQL whose new connections sign in with the current
//! Microsoft Entra ID token, fed by the same refresher, configuration and connection plan as
//! `entra-postgres`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // AZURE_POSTGRESQL_HOST, _DATABASE, _USER (and _CLIENTID) from the environment, as for entra-postgres.
//! let pool = entra_sqlx::EntraPgPool::builder().max_size(8).build().await?;
//! let row: (i64,) = sqlx::query_as("SELECT count(*) FROM orders").fetch_one(pool.pool()).await?;
//! # Ok(()) }
//! ```
//!
//! - **TLS**: `verify-full` by default, stated explicitly (sqlx's own default is `prefer`, which falls
//!   back to cleartext). The plan's rules hold: no token in cleartext to a remote host, `require`
//!   verified; see [`EntraPgPoolBuilder`] for where sqlx's TLS differs from libpq's and how that is met.
//! - **Tokens**: sqlx 0.9 opens connections with the options it holds and offers no per-connection
//!   hook, so a task follows the refresher and replaces the pool's connect options at every rotation;
//!   [`EntraPgPool::acquire`] also does so before retrying a refused token once. When sqlx gains a
//!   connector hook, it can replace this mechanism behind the same API.
//! - **Code that acquires from the `PgPool` itself** (an executor on [`EntraPgPool::pool`], SeaORM 2's
//!   `SqlxPostgresConnector::from_sqlx_postgres_pool(pool.pool().clone())`) shares the pool and so the
//!   current token, but acquires past [`EntraPgPool::acquire`]: a refused token reaches it as an error,
//!   and [`EntraPgPool::recover`] hands sqlx a fresh token before its one retry.
//! - **Not zeroized**: sqlx keeps the token as a plain `String` in its connect options, and their derived
//!   `Debug` prints it: never log `PgPool::connect_options()`. [`EntraPgPool`]'s own `Debug` shows no token.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod options;
mod pool;

pub use pool::{EntraPgPool, EntraPgPoolBuilder};

pub use entra_postgres;
pub use sqlx;
