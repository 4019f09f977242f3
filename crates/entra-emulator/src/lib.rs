//! A local stand-in for Azure Database for PostgreSQL with Entra ID sign-in, for tests, benchmarks and
//! demos that must not need Azure.
//!
//! [`Emulator`] is the usual way in: it starts the three parts below together and hands back the
//! connection settings and environment variables that point a client at them. Each part also works alone.
//!
//! - [`emulator`]: [`Emulator`], the parts composed: one principal and database ready to sign in to.
//! - [`identity`]: [`FakeIdentity`], Azure's token endpoints (IMDS, App Service, Arc, Cloud Shell, Entra
//!   ID) on loopback HTTP(S), with Azure's request checks, response shapes and scriptable faults.
//! - [`postgres`]: [`TestPostgres`], a throwaway real PostgreSQL (TLS with the [`EmulatorCa`]), deleted
//!   on drop.
//! - [`gate`]: [`EntraGate`], a PostgreSQL-protocol front that checks Entra tokens like Azure, answers
//!   with Azure's errors and relays good sessions to a [`TestPostgres`].
//! - [`pgbouncer`]: [`TestPgBouncer`], a throwaway PgBouncer (session or transaction pooling) the gate
//!   can relay to instead of the server, like Azure's built-in PgBouncer on port 6432.
//! - [`jwt`]: tokens as Entra ID issues them, signed by a published test key (never accepted by Azure).
//! - [`error`]: [`EmulatorError`], what failed and what to do about it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod emulator;
pub mod error;
pub mod gate;
pub mod identity;
pub mod jwt;
pub mod pgbouncer;
pub mod postgres;

pub use identity::{
    Endpoint, FakeIdentity, FakeIdentityBuilder, Fault, ManagedIdentity, NumberFormat, RecordedRequest,
    ServicePrincipal,
};
pub use jwt::{Claims, JwtIssuer, JwtRejection, OSSRDBMS_RESOURCE, TEST_TENANT_ID};

pub use emulator::{Emulator, EmulatorBuilder};
pub use error::EmulatorError;
pub use gate::{EntraGate, GateStats, PrincipalKind, RejectReason, SessionRecord, TokenFingerprint};
pub use pgbouncer::{PoolMode, TestPgBouncer};
pub use postgres::{EmulatorCa, TestPostgres};
