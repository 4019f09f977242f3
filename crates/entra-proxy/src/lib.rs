//! A local PostgreSQL proxy that signs any client, in any language, in to Azure Database for PostgreSQL
//! with the current Microsoft Entra ID token, without a code change: `psql`, `pgbench`, a Python or Java
//! service, a migration tool or a BI tool connects to the proxy as to a local server, and the proxy
//! opens its upstream session through the same [`ConnectionPlan`](entra_postgres::ConnectionPlan) and
//! token refresher as the pools (`verify-full` TLS, the current token, the configured role), then relays
//! bytes both ways. Cancel requests are forwarded.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Where and for whom it listens is checked before any token is fetched.
//! let proxy = entra_proxy::ProxyBuilder::new().listen("127.0.0.1:6543".parse()?);
//! proxy.check()?;
//! // AZURE_POSTGRESQL_HOST, _DATABASE, _USER (and _CLIENTID) from the environment, as for the pools.
//! let proxy = proxy.start(&entra_postgres::EntraConfig::from_env()).await?;
//! // psql "host=127.0.0.1 port=6543 dbname=… user=…" now signs in with the current token.
//! # proxy.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Operations
//! - **Health checks** on an HTTP listener of their own ([`ProxyBuilder::health_listen`], bound first, so
//!   it answers while the first token is fetched): `/startup` (200 once [`ProxyBuilder::start`] has
//!   finished), `/liveness` (200 while the proxy serves, starting and draining included) and
//!   `/readiness` (200 while new sessions are admitted and the token is usable for at least
//!   [`ProxyBuilder::readiness_margin`]; otherwise 503 and why, [`NotReady`]).
//!   [`ProxyBuilder::run_connection_test`] signs in upstream once before the proxy is ready.
//! - **Metrics** on the same listener's `/metrics`, in Prometheus's text format: sessions, refusals by
//!   reason, clients waiting, bytes each way, the sign-in latency ([`metrics`] names them all), from a
//!   recorder of the proxy's own; with [`ProxyBuilder::extra_metrics`] also the token's, from the
//!   application's global recorder.
//! - **Warm sessions** ([`ProxyBuilder::warm`], default [`DEFAULT_WARM`]): upstream sessions signed in
//!   ahead, so a client that connects does not wait for a sign-in. Each serves one client and is never
//!   reused; the client's startup parameters are applied with `set_config` and its greeting is that of
//!   a session started with them (one difference: `RESET` returns a parameter to the server's default,
//!   not to the client's startup value). Only the parameters a transaction-mode PgBouncer tracks per
//!   client are applied so (behind such a pooler anything else set by SQL would reach its next client);
//!   a client with any other (`search_path`, `options`…), or one the server will not set after
//!   connection start, gets a fresh session.
//! - **Graceful drain** ([`ProxyHandle::drain`]): readiness fails and the listeners close at once; open
//!   sessions go on until their clients end them or the grace runs out.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let mut proxy = entra_proxy::ProxyBuilder::new()
//!     .listen("127.0.0.1:6543".parse()?)
//!     .health_listen("127.0.0.1:9090".parse()?)
//!     .run_connection_test(true)
//!     .start(&entra_postgres::EntraConfig::from_env())
//!     .await?;
//! // … on SIGTERM:
//! let drained = proxy.drain(Duration::from_secs(30)).await;
//! eprintln!("{} sessions were still open at the deadline", drained.closed);
//! # Ok(()) }
//! ```
//!
//! # Security
//! The proxy holds an identity's power, so who may use it is decided before anything goes upstream, and
//! nothing a client or another local user sends changes what it trusts:
//! - **Where it listens.** Loopback addresses and unix sockets only. A non-loopback address is refused
//!   unless [`ProxyBuilder::allow_non_loopback`] is given, and then clients must use TLS
//!   ([`ProxyBuilder::client_tls`]) and the local secret ([`LocalAuth::Secret`]). These rules are
//!   checked by [`ProxyBuilder::check`], before a token is fetched.
//! - **Who may connect** ([`LocalAuth`]). By default, processes of the proxy's own user id: on a unix
//!   socket by the kernel's peer credentials, on loopback TCP by the kernel's own lookup of the client's
//!   end of the connection (netlink `sock_diag` with the exact address pair, as `ss` asks; the socket
//!   table in `/proc/net/tcp*` only where netlink is unavailable), so the user id is known as soon as a
//!   connection is accepted and another user's connection is refused and closed at once. Or, with
//!   [`LocalAuth::Secret`], whoever knows a generated local secret, sent as the password.
//! - **Authentication first.** Until a client has authenticated it is told nothing about the proxy:
//!   its refusals say only "peer authentication failed" (SQLSTATE 28000) or "password authentication
//!   failed" (28P01), never the role, the database or the user ids allowed.
//! - **Connections that have not authenticated** are bounded in number
//!   ([`ProxyBuilder::max_unauthenticated`], default [`DEFAULT_MAX_UNAUTHENTICATED`]) and in time
//!   ([`ProxyBuilder::startup_timeout`], default [`DEFAULT_STARTUP_TIMEOUT`]); beyond the number, new
//!   connections wait in the kernel's listen queue, holding no file of the proxy's.
//! - **What a client can reach.** The role an authenticated client asks for must be the proxy's role
//!   (configured, or the name the token gives) and the database must be the configured one; anything
//!   else is refused with a message that says what to connect with. Hosts come from the configuration
//!   only: a client cannot name another. `replication` connections are refused.
//! - **Passwords.** A password a client sends (the local secret) is compared and dropped; no client
//!   password is ever sent upstream. The upstream password is the current token, over the plan's TLS.
//! - **Cancel keys.** Each session gets a random backend key of the proxy's own; the upstream's key never
//!   reaches a client.
//! - **Logs.** Text a client chose (role, database, `application_name`…) is escaped in every log line,
//!   so it cannot forge one.
//! - **Sockets.** Accepted TCP sockets get keepalive and `TCP_USER_TIMEOUT`, so a client that vanished
//!   without closing (a crashed machine, a dropped link) does not hold its upstream session for ever.
//!
//! Tokens and secrets never appear in logs or errors. What is zeroized of the local secret a client
//! sends: the buffer its password message is read into (the whole allocation, taken back from pgwire's
//! decoding, which splits the message off it, and overwritten) and the password decoded from it. What
//! is not: copies outside the proxy's own buffers, namely the kernel's socket buffers and, for TLS
//! clients, rustls's buffers of decrypted bytes. The proxy's own copy of the secret is a
//! [`SecretString`](secrecy::SecretString), zeroized when dropped. The token's path is the pool's (see `entra_postgres`).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
mod admission;
mod auth;
mod builder;
mod cancel;
mod error;
mod handle;
mod health;
mod listen;
pub mod metrics;
mod peer;
mod session;
mod state;
mod stats;
mod tls;
mod warm;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use entra_postgres::EntraConnect;

use state::ProxyState;
use tokio::sync::Semaphore;

pub use auth::LocalAuth;
pub use builder::ProxyBuilder;
pub use error::ProxyError;
pub use handle::{Drained, ProxyHandle};
pub use state::NotReady;
pub use stats::ProxyStats;
pub use tls::ClientTls;

/// The port `entra-pg proxy` listens on by default.
pub const DEFAULT_PORT: u16 = 6543;
/// How many upstream sessions may be open at once by default ([`ProxyBuilder::max_size`]).
pub const DEFAULT_MAX_SIZE: usize = 100;
/// How many accepted connections may be still authenticating at once by default.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 64;
/// How long a client has by default from connecting to having authenticated: enough for TLS, the
/// startup message and a password from a program; a person typing a password is asked by the client
/// program before it connects again.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the token must stay usable for the proxy to be ready, by default
/// ([`ProxyBuilder::readiness_margin`]).
pub const DEFAULT_READINESS_MARGIN: Duration = Duration::from_secs(30);
/// How many warm sessions the proxy keeps signed in ahead of its clients by default
/// ([`ProxyBuilder::warm`]).
pub const DEFAULT_WARM: usize = 2;
/// How long a warm session may wait for its client by default ([`ProxyBuilder::warm_lifetime`]).
pub const DEFAULT_WARM_LIFETIME: Duration = Duration::from_secs(300);
/// How long a drain lets open sessions finish by default (`entra-pg proxy --max-sigterm-delay`).
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);
/// What every session shares.
pub(crate) struct Shared {
    connector: EntraConnect,
    role: String,
    dbname: String,
    auth: LocalAuth,
    client_tls: Option<tokio_rustls::TlsAcceptor>,
    upstream_slots: Arc<Semaphore>,
    /// A place for each authenticated client waiting for an upstream slot: as many as the slots, so
    /// the clients of an allowed user cannot pile up (each holds a file) while the slots are taken.
    waiting_slots: Arc<Semaphore>,
    max_upstream: usize,
    upstream_wait: Option<Duration>,
    /// A place for each accepted connection until it has authenticated.
    unauthenticated_slots: Arc<Semaphore>,
    startup_timeout: Duration,
    cancel_keys: cancel::CancelKeys,
    /// Sessions signed in ahead of their clients.
    warm: warm::Warm,
    /// Life, counters and metrics, shared with the health listener.
    state: Arc<ProxyState>,
}
