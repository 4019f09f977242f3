//! The [`TokenSource`] trait: one way of fetching a token.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{AccessToken, TokenError};

/// The scope of Azure Database for PostgreSQL and MySQL in the public cloud.
pub const OSSRDBMS_SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";

/// The future a [`TokenSource`] returns: boxed so the trait stays object safe.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send + 'a>>;

/// One way of fetching an Entra ID access token: a managed-identity endpoint, a service principal, the
/// Azure CLI… A source fetches once per call and caches nothing: caching and refresh belong to the
/// [`Refresher`](crate::Refresher).
///
/// Object safe, so sources compose as `Arc<dyn TokenSource>`.
///
/// ```
/// use entra_token::{AccessToken, FetchFuture, TokenSource};
/// use std::time::{Duration, SystemTime};
///
/// #[derive(Debug)]
/// struct Fixed;
/// impl TokenSource for Fixed {
///     fn name(&self) -> &str { "fixed" }
///     fn fetch<'a>(&'a self, _scope: &'a str) -> FetchFuture<'a> {
///         Box::pin(async { Ok(AccessToken::new("t", SystemTime::now() + Duration::from_secs(60))) })
///     }
/// }
/// let source: Box<dyn TokenSource> = Box::new(Fixed);
/// assert_eq!(source.name(), "fixed");
/// ```
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A short name for diagnostics and logs (`"imds"`, `"azure-cli"`…).
    fn name(&self) -> &str;

    /// Fetch a token for `scope` (for example [`OSSRDBMS_SCOPE`]).
    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        (**self).fetch(scope)
    }
}

impl<T: TokenSource + ?Sized> TokenSource for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        (**self).fetch(scope)
    }
}

/// The resource a managed-identity endpoint expects for a scope: the scope without `/.default`.
///
/// ```
/// assert_eq!(
///     entra_token::scope_to_resource("https://ossrdbms-aad.database.windows.net/.default"),
///     "https://ossrdbms-aad.database.windows.net"
/// );
/// ```
pub fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}
