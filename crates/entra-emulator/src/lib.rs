//! A local stand-in for Azure Database for PostgreSQL with Entra ID sign-in.
//!
//! - [`jwt`]: tokens as Entra ID issues them, signed by a published test key.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod error;
pub mod gate;
pub mod identity;
pub mod jwt;
pub mod postgres;

pub use identity::{
    Endpoint, FakeIdentity, FakeIdentityBuilder, Fault, ManagedIdentity, NumberFormat, RecordedRequest,
    ServicePrincipal,
};
pub use jwt::{Claims, JwtIssuer, JwtRejection, OSSRDBMS_RESOURCE, TEST_TENANT_ID};

pub use error::EmulatorError;
pub use gate::{EntraGate, GateStats, PrincipalKind, RejectReason, SessionRecord, TokenFingerprint};
pub use postgres::{EmulatorCa, TestPostgres};
