//! What entra-pool's tests share, written once: the emulator-to-pool set-up ([`pool`]), waits that
//! fail instead of hanging ([`wait`]), running the clients we did not write ([`process`]), a bare
//! TCP relay ([`relay`]), token rotations under load through any front ([`rotation`]), asking a health listener as a probe would ([`http`]), and the socket table of
//! a busy node ([`sockets`]).
//!
//! A dev-dependency of the workspace's crates, never published. The emulator itself (the test oracle)
//! does not depend on the code under test; this kit does, which is why it is a crate of its own.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod http;
pub mod pool;
pub mod process;
pub mod relay;
pub mod rotation;
pub mod sockets;
pub mod wait;

pub use pool::{config, emulator, http, pool_builder, settled};
pub use process::{after_marker, pg_client, rerun_args, run, run_blocking, text};
pub use relay::relay;
pub use rotation::{rotations_under_load, RotationLoad};
pub use wait::{bounded, terminate_sessions, until};
