//! deadpool-postgres pools for Azure Database for PostgreSQL that sign in with Microsoft Entra ID tokens.
//!
//! The connector and pool builder arrive with the pool issue; this crate re-exports the token half so far.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub use entra_token;
