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
//! - [`trap`]: [`Trap`], a listener that records whatever reaches it, to prove a token was not sent.
//! - [`error`]: [`EmulatorError`], what failed and what to do about it.
//! - [`clients`]: where the clients we did not write are (`psql`, `pgbench`, a Python with Microsoft's
//!   packages), for tests that run them against the emulator.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod clients;
pub mod emulator;
pub mod error;
pub mod gate;
pub mod identity;
pub mod jwt;
pub mod pgbouncer;
pub mod postgres;
pub mod trap;

pub use identity::{
    Endpoint, FakeIdentity, FakeIdentityBuilder, Fault, ManagedIdentity, NumberFormat, RateLimit,
    RecordedRequest, ServicePrincipal,
};
pub use jwt::{Claims, JwtIssuer, JwtRejection, OSSRDBMS_RESOURCE, TEST_TENANT_ID};

pub use emulator::{Emulator, EmulatorBuilder, Replica};
pub use error::EmulatorError;
pub use gate::{EntraGate, GateStats, PrincipalKind, RejectReason, SessionRecord, TokenFingerprint};
pub use pgbouncer::{PoolMode, TestPgBouncer, TestPgBouncerBuilder};
pub use postgres::{EmulatorCa, TestPostgres};
pub use trap::Trap;

/// Entry points for the fuzz targets (`fuzz/`) and property tests only: not part of the API, exempt
/// from semver, may change or vanish in any release.
#[doc(hidden)]
pub mod __fuzz {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use crate::gate::protocol::{self, FirstPacket};

    /// A connection's first packet as the gate reads it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum First {
        /// `SSLRequest`.
        Ssl,
        /// `GSSENCRequest`.
        GssEnc,
        /// `CancelRequest`.
        Cancel,
        /// `StartupMessage`: its parameters, role and database (defaulted as PostgreSQL does), and the
        /// packet the gate sends upstream in its place.
        Startup {
            /// Every parameter, by name (the gate refuses a packet naming one twice).
            params: Vec<(String, String)>,
            /// The role, if given: the one the gate checks the token against.
            user: Option<String>,
            /// The database.
            database: String,
            /// The StartupMessage the gate forwards to the server if the token checks out.
            forwarded: Vec<u8>,
        },
    }

    // Reading from a slice never waits, so one poll finishes the gate's async readers.
    fn at_once<T>(future: impl Future<Output = Result<T, protocol::ProtocolError>>) -> Result<T, String> {
        match std::pin::pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result.map_err(|e| e.to_string()),
            Poll::Pending => Err("a slice reader never waits".into()),
        }
    }

    /// Parses `bytes` as a connection's first packet; `Err` is the protocol error's text.
    pub fn first_packet(mut bytes: &[u8]) -> Result<First, String> {
        Ok(match at_once(protocol::read_first_packet(&mut bytes))? {
            FirstPacket::SslRequest => First::Ssl,
            FirstPacket::GssEncRequest => First::GssEnc,
            FirstPacket::Cancel(_) => First::Cancel,
            FirstPacket::Startup(s) => First::Startup {
                params: s.params().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                user: s.user().map(str::to_string),
                database: s.database().to_string(),
                forwarded: s.upstream_packet().to_vec(),
            },
        })
    }

    /// Reads one message of at most `limit` bytes and returns the password if it is a `PasswordMessage`.
    pub fn password_message(mut bytes: &[u8], limit: usize) -> Result<Option<String>, String> {
        let (tag, body) = at_once(protocol::read_message(&mut bytes, limit))?;
        Ok(protocol::password(tag, &body).map(str::to_string))
    }
}
