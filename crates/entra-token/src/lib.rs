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
//! Every fetch a caller waits for follows Azure's retry guidance through one function,
//! [`fetch_with_retry`]: 404, 410, 429, 5xx and timeouts are retried with jittered exponential backoff,
//! `Retry-After` is honoured, the budget is about 70 s ([`RetryPolicy`]), and a definitive answer fails
//! at once. [`Refresher::start`] uses it for the first token; [`SourceSelection`] picks a source from a
//! kind and an identity.
//!
//! # Security stance
//!
//! A token is a secret. [`AccessToken`] never shows it in `Debug`/`Display` (only a [`Fingerprint`]); no
//! log line or error carries it. Token requests never use an HTTP proxy, never follow redirects, cap
//! response bodies and time out.
//!
//! ## What is zeroized, and what is not
//!
//! Zeroized when dropped, because this crate owns the memory:
//! - the token inside [`AccessToken`] (a `secrecy::SecretString`, allocated at its exact size so that no
//!   reallocation leaves a copy), when its last clone drops;
//! - the response body of every token request, read into a buffer that is zeroized when it grows and
//!   when it is dropped, and every string of the JSON parsed from it;
//! - the Azure CLI's output and the token parsed from it; the workload-identity assertion read from its
//!   file; the Azure Arc key; a service principal's secret (held as a `SecretString`);
//! - the intermediate copies made while redacting a malformed response for an error message (the
//!   message itself holds no secret).
//!
//! Not zeroized, because other crates or the kernel own the memory:
//! - hyper's and rustls's receive and record buffers, which hold the response before this crate copies
//!   it, and the request bodies reqwest builds (a form with the client secret or the assertion);
//! - serde_json's scratch buffer, used only for strings with escape sequences (tokens have none);
//! - the pipe buffers of `az`'s output, and kernel socket buffers;
//! - whatever a consumer copies out of [`AccessToken::secret`]: `entra-postgres` hands it to
//!   tokio-postgres, whose `Config::password` keeps a plain `Vec<u8>` for the connection attempt and
//!   writes it into an unzeroized `PasswordMessage` buffer (raw sessions, which `entra-proxy` uses,
//!   write their own `PasswordMessage` into a buffer sized not to grow and wiped when dropped; rustls's
//!   plaintext record buffers still see it); `entra-sqlx` hands it to sqlx, whose
//!   `PgConnectOptions` keeps it as a plain `String` (and whose derived `Debug`, reachable through
//!   `PgPool::connect_options()`, prints it: never log sqlx's connect options); `entra-pg psql` passes
//!   it to psql in `PGPASSWORD`, which the child's environment holds.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

#[cfg(feature = "azure-identity")]
mod azure;
mod claims;
mod env;
mod error;
mod http;
pub mod metrics;
mod policy;
mod redact;
mod refresher;
mod response;
mod retry;
mod source;
mod status;
mod token;

pub mod sources;

#[cfg(feature = "azure-identity")]
pub use azure::AzureCredentialSource;
pub use claims::unverified_claims;
pub use env::Env;
pub use error::TokenError;
pub use http::HttpOptions;
pub use policy::{RefreshPolicy, StartMode};
pub use refresher::{Refresher, TokenHandle};
pub use retry::{fetch_with_retry, RetryPolicy};
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

    /// Parses an `expires_on` value in any of the forms the endpoints send.
    pub fn parse_expiry(value: &str) -> Option<std::time::SystemTime> {
        crate::response::parse_expiry(value)
    }
}
