//! diesel-async `AsyncPgConnection` pools for Azure Database for PostgreSQL whose new connections sign
//! in with the current Microsoft Entra ID token: diesel-async's own deadpool (feature `deadpool`, the
//! default) or bb8 (feature `bb8`) pool, with a `ManagerConfig::custom_setup` that opens every
//! connection through `entra-postgres`'s connector.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use diesel_async::RunQueryDsl;
//!
//! // AZURE_POSTGRESQL_HOST, _DATABASE, _USER (and _CLIENTID) from the environment, as for every front.
//! let pool = entra_diesel::EntraDieselPoolBuilder::from_env().max_size(8).build_deadpool().await?;
//! let mut connection = pool.get().await?; // an AsyncPgConnection
//! diesel::sql_query("SELECT 1").execute(&mut connection).await?;
//! # Ok(()) }
//! ```
//!
//! - **Tokens**: each new connection is opened by
//!   [`EntraConnect::open_connection`](entra_postgres::EntraConnect::open_connection) (the refresher's
//!   current token, one retry with a fresh token when the server refuses it, the plan's TLS rules) and
//!   handed to diesel as `AsyncPgConnection::try_from(client)`. The URL diesel-async passes to the setup
//!   callback is ignored: the connection plan decides where and how to connect.
//! - **Lifetimes**: connections retire after `max_lifetime` (default 1 h): a deadpool hook drops an older
//!   one when it comes back, and bb8 does so itself.
//! - **Errors**: diesel's `ConnectionError` carries text only, so a connection that could not be opened
//!   arrives as `ConnectionError::BadConnection` holding the whole chain of causes
//!   ([`entra_postgres::report`]): a refused token, an untrusted certificate, an identity endpoint down.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod builder;
mod setup;

pub use builder::{EntraDieselPool, EntraDieselPoolBuilder};
pub use setup::manager;

pub use diesel_async;
pub use entra_postgres;
