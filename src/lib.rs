#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

/// Token sources and the refresher that keeps a valid Entra token cached ([`entra_token`]).
pub use entra_token as token;

/// The core configuration, the connection plan, the pools and their diagnosis ([`entra_postgres`]).
pub use entra_postgres as postgres;
