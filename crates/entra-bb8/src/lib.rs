//! bb8 pools of tokio-postgres clients for Azure Database for PostgreSQL whose new connections sign in
//! with the current Microsoft Entra ID token: the same configuration, refresher and connection plan as
//! `entra-postgres`, behind `bb8::ManageConnection`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // AZURE_POSTGRESQL_HOST, _DATABASE, _USER (and _CLIENTID) from the environment, as for every front.
//! let pool = entra_bb8::EntraBb8Pool::builder().max_size(8).build().await?;
//! let client = pool.get().await?; // a bb8::PooledConnection of a tokio_postgres::Client
//! let row = client.query_one("SELECT current_user", &[]).await?;
//! # Ok(()) }
//! ```
//!
//! - **Tokens**: bb8 asks [`EntraConnectionManager`] for each new connection, which opens it through
//!   [`EntraConnect::open_connection`](entra_postgres::EntraConnect::open_connection): the refresher's
//!   current token, and one retry with a fresh token when the server refuses it (the refusal classifier
//!   every front shares). Open connections outlive their token, as on Azure; `max_lifetime` (default 1 h)
//!   rotates them.
//! - **TLS and the role**: the connection plan's rules hold (`verify-full` by default, no token in
//!   cleartext to a remote host); with no user configured, the role is read from the token.
//! - **Errors**: bb8 opens connections in the background and its `get()` reports a failure only as a
//!   timeout (`RunError::TimedOut`); the cause goes to the pool's error sink, which this crate sets to log
//!   it with `tracing` (its whole chain, with [`entra_postgres::report`]). `ConnectError::find` reads our
//!   own causes from an error the sink receives.
//! - **The same error type as bb8-postgres**: connections are `tokio_postgres::Client`s and errors
//!   `tokio_postgres::Error`s, so code written for `bb8_postgres::PostgresConnectionManager` pools works
//!   unchanged.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod manager;
mod pool;

pub use manager::{EntraConnectionManager, LogErrors};
pub use pool::{EntraBb8Pool, EntraBb8PoolBuilder};

pub use bb8;
pub use entra_postgres;
pub use tokio_postgres;
