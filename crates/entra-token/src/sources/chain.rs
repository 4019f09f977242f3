//! [`ChainSource`]: try sources in order, like the Azure SDKs' default credential.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::{FetchFuture, TokenError, TokenSource};

/// Tries its sources in order until one returns a token, then keeps using that one.
///
/// A source that is [unavailable](TokenError::CredentialUnavailable) here (not configured, no endpoint,
/// tool not installed) is skipped; any other error (authentication failed, a transient failure of a source
/// that exists) stops the chain, because trying a different identity would hide the real problem. When
/// every source fails, one [`TokenError::ChainFailed`] lists each reason. The first source to succeed is
/// remembered and used alone from then on, so a later transient failure is retried rather than silently
/// switching identity.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use entra_token::{AccessToken, ChainSource, Env, StaticSource, TokenSource};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let unset = StaticSource::from_env(&Env::from_pairs([("X", "y")]));
/// assert!(unset.is_err()); // AZURE_ACCESS_TOKEN is not set: unavailable
/// let fixed = StaticSource::new(AccessToken::new("t", SystemTime::now() + Duration::from_secs(600)));
/// let chain = ChainSource::new().with_unconfigured("static-env", unset.unwrap_err()).with(fixed);
/// let token = chain.fetch("https://ossrdbms-aad.database.windows.net/.default").await.unwrap();
/// assert_eq!(token.secret(), "t");
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ChainSource {
    links: Vec<Link>,
    chosen: RwLock<Option<usize>>,
}

#[derive(Debug)]
enum Link {
    Source(Arc<dyn TokenSource>),
    /// A source that could not even be built (missing variables, bad configuration): its error stands in
    /// for a fetch, so the chain's report still names it.
    Unconfigured {
        name: String,
        error: TokenError,
    },
}

impl ChainSource {
    /// An empty chain (fetching from it fails until sources are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source at the end of the chain.
    pub fn with(mut self, source: impl TokenSource + 'static) -> Self {
        self.links.push(Link::Source(Arc::new(source)));
        self
    }

    /// Adds a shared source at the end of the chain.
    pub fn with_shared(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.links.push(Link::Source(source));
        self
    }

    /// Records a source that could not be built, with the reason: an unavailable one is skipped, any
    /// other error stops the chain when its turn comes.
    pub fn with_unconfigured(mut self, name: impl Into<String>, error: TokenError) -> Self {
        self.links.push(Link::Unconfigured {
            name: name.into(),
            error,
        });
        self
    }

    /// Adds the result of building a source: the source itself, or its construction error.
    pub fn with_result<S: TokenSource + 'static>(self, name: &str, built: Result<S, TokenError>) -> Self {
        match built {
            Ok(source) => self.with(source),
            Err(error) => self.with_unconfigured(name, error),
        }
    }

    /// The names of the chain's sources, in order.
    pub fn names(&self) -> Vec<String> {
        self.links.iter().map(|l| l.name().to_string()).collect()
    }

    /// The name of the source that succeeded first and is now used alone, if any.
    pub fn chosen(&self) -> Option<String> {
        let chosen = *self.chosen.read();
        chosen
            .and_then(|i| self.links.get(i))
            .map(|l| l.name().to_string())
    }
}

impl Link {
    fn name(&self) -> &str {
        match self {
            Link::Source(s) => s.name(),
            Link::Unconfigured { name, .. } => name,
        }
    }
}

impl TokenSource for ChainSource {
    fn name(&self) -> &str {
        "chain"
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let chosen = *self.chosen.read();
            if let Some(Link::Source(source)) = chosen.and_then(|i| self.links.get(i)) {
                return source.fetch(scope).await;
            }
            let mut errors = Vec::new();
            for (i, link) in self.links.iter().enumerate() {
                let result = match link {
                    Link::Source(source) => source.fetch(scope).await,
                    Link::Unconfigured { error, .. } => Err(error.clone()),
                };
                match result {
                    Ok(token) => {
                        tracing::info!(source = link.name(), "token source chosen");
                        *self.chosen.write() = Some(i);
                        return Ok(token);
                    }
                    Err(e) if e.is_unavailable() => {
                        tracing::debug!(source = link.name(), error = %e, "token source unavailable; trying the next");
                        errors.push(e);
                    }
                    Err(e) => {
                        errors.push(e);
                        return Err(TokenError::ChainFailed(errors));
                    }
                }
            }
            if errors.is_empty() {
                return Err(TokenError::EmptyChain);
            }
            Err(TokenError::ChainFailed(errors))
        })
    }
}
