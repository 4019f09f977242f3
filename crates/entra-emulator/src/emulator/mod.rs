//! [`Emulator`]: the fake identity endpoints, a throwaway PostgreSQL and the gate in front of it, started
//! together and described the way a client finds Azure: connection settings and environment variables.
//!
//! ```no_run
//! # async fn demo() -> Result<(), entra_emulator::EmulatorError> {
//! use std::time::Duration;
//! use entra_emulator::Emulator;
//!
//! let emulator = Emulator::builder()
//!     .token_lifetime(Duration::from_secs(20))
//!     .start()
//!     .await?;
//! // A client configured from these finds the fake IMDS, fetches a token for the system identity
//! // `entra-app` and signs in to `appdb` on the gate with `sslmode=verify-full`.
//! for (name, value) in emulator.env_vars() {
//!     println!("{name}={value}");
//! }
//! # Ok(()) }
//! ```
//!
//! The gate and its upstream server share one CA ([`crate::EmulatorCa`]). The fake identity's HTTPS
//! certificate (with [`EmulatorBuilder::identity_tls`]) comes from a CA of its own, so
//! [`Emulator::ca_pem`] is a bundle of both: trusting it is enough for every endpoint.
//!
//! The gate's and the fake's tasks run on a runtime the emulator owns, so an emulator works under any
//! executor and dropping it ends them all at once, before `drop` returns.

mod builder;
mod replica;
mod running;
mod runtime;

use std::time::Duration;

pub use builder::EmulatorBuilder;
pub use replica::Replica;
pub use running::Emulator;

/// The default principal: the system-assigned identity the fake's IMDS and App Service endpoints serve.
pub const DEFAULT_PRINCIPAL: &str = "entra-app";
/// The database created for the default principal.
pub const DEFAULT_DATABASE: &str = "appdb";
/// Lifetime of issued tokens unless [`EmulatorBuilder::token_lifetime`] says otherwise.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Emulator>();
        shareable::<EmulatorBuilder>();
    }
}
