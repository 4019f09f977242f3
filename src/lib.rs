//! # entra-pool
//!
//! Connection pools for Azure Database for PostgreSQL flexible server that sign in with Microsoft Entra ID
//! tokens and outlive every token. This facade re-exports the two library crates:
//!
//! - [`token`] ([`entra_token`]): token sources (managed identity, workload identity, service principal,
//!   Azure CLI) and the refresher that keeps a valid token cached.
//! - [`postgres`] ([`entra_postgres`]): the connector and pool builder for `deadpool_postgres`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub use entra_postgres as postgres;
pub use entra_token as token;
