//! A local stand-in for Azure Database for PostgreSQL with Entra ID sign-in.
//!
//! - [`jwt`]: tokens as Entra ID issues them, signed by a published test key.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod jwt;

pub use jwt::{Claims, JwtIssuer, JwtRejection, OSSRDBMS_RESOURCE, TEST_TENANT_ID};
