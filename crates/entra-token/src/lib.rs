//! Microsoft Entra ID token sources and a refresher that never lets a token lapse.
//!
//! Azure Database for PostgreSQL (and MySQL) accept an Entra ID access token as the password. Tokens live
//! 1–24 hours and the server checks one only when a connection starts, so a long-running service must
//! keep a fresh token at hand for every new connection. This crate has two halves:
//!
//! - **Sources** ([`TokenSource`]): one fetch from one place: the VM's metadata endpoint ([`ImdsSource`]),
//!   App Service ([`AppServiceSource`]), Azure Arc, Cloud Shell, AKS workload identity
//!   ([`WorkloadIdentitySource`]), a service principal ([`ClientSecretSource`]), the Azure CLI
//!   ([`AzureCliSource`]) or a fixed token ([`StaticSource`]). [`ManagedIdentitySource::detect`] picks the
//!   managed-identity endpoint from the environment and [`DefaultSource`] chains them like the Azure SDKs'
//!   default credential.
//! - **The refresher** ([`Refresher`]): a task that caches the token, renews it well before expiry (with
//!   jitter, backoff and `Retry-After`), keeps serving the old token through an outage while it is still
//!   valid, and hands it out through a cheap [`TokenHandle`].
//!
//! Security stance: a token is a secret. [`AccessToken`] never shows it in `Debug`/`Display` (only a
//! [`Fingerprint`]) and zeroizes it on drop; no log line or error carries it. Token requests never use an
//! HTTP proxy, never follow redirects, cap response bodies and time out.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod claims;
mod env;
mod error;
mod http;
mod policy;
mod refresher;
mod response;
mod source;
mod status;
mod token;

pub mod sources;

pub use claims::unverified_claims;
pub use env::Env;
pub use error::TokenError;
pub use http::HttpOptions;
pub use policy::{RefreshPolicy, StartMode};
pub use refresher::{Refresher, TokenHandle};
pub use response::parse_expiry;
pub use source::{scope_to_resource, FetchFuture, TokenSource, OSSRDBMS_SCOPE};
pub use sources::*;
pub use status::{TokenState, TokenStatus};
pub use token::{AccessToken, Fingerprint};

/// Entry points for the fuzz targets (`fuzz/`) and property tests only: not part of the API, exempt
/// from semver, may change or vanish in any release.
#[doc(hidden)]
pub mod __fuzz {
    /// Parses a token endpoint's response body as every HTTP source does.
    pub fn parse_token_response(
        body: &str,
        now: std::time::SystemTime,
    ) -> Result<crate::AccessToken, crate::TokenError> {
        crate::response::parse_token_response("fuzz", body, now)
    }
}
