//! Interop with Microsoft's Azure SDK for Rust (feature `azure-identity`): any
//! `azure_core::credentials::TokenCredential` as a [`TokenSource`], and a [`TokenHandle`] as a
//! `TokenCredential`.
//!
//! The first direction gives an SDK credential (`ManagedIdentityCredential`, `WorkloadIdentityCredential`,
//! `ClientSecretCredential`…) this crate's refresher: renewal well ahead of expiry, the still-valid token
//! served through an identity outage, one fetch for any number of callers. azure_identity's own cache
//! refreshes only when asked, 5 minutes before expiry, and returns the error rather than the token it
//! still holds. The second lets other Azure SDK clients in the process share the refresher's token.
//!
//! azure_core keeps tokens in its own `Secret` (a plain string): the copies handed across are not
//! zeroized by this crate.
//!
//! azure_core's default HTTP client is reqwest. This crate builds reqwest without a default crypto
//! provider (each of its clients gets ring explicitly), and features unify, so a process that uses an
//! azure_identity credential installs one first, as rustls asks:
//! `rustls::crypto::ring::default_provider().install_default()`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::{AccessToken as AzureToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::time::OffsetDateTime;

use crate::{AccessToken, FetchFuture, TokenError, TokenHandle, TokenSource};

/// A [`TokenSource`] that asks an Azure SDK credential.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use azure_core::credentials::TokenCredential;
/// use entra_token::{AzureCredentialSource, Refresher, RefreshPolicy, OSSRDBMS_SCOPE};
///
/// // For example `azure_identity::ManagedIdentityCredential::new(None)?`.
/// # fn sdk_credential() -> Arc<dyn TokenCredential> { unimplemented!() }
/// let credential: Arc<dyn TokenCredential> = sdk_credential();
/// let source = AzureCredentialSource::new(credential);
/// let tokens = Refresher::start(source, OSSRDBMS_SCOPE, RefreshPolicy::default()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AzureCredentialSource {
    credential: Arc<dyn TokenCredential>,
    name: String,
}

impl fmt::Debug for AzureCredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureCredentialSource")
            .field("credential", &self.credential)
            .finish()
    }
}

impl AzureCredentialSource {
    /// A source over `credential`, named `azure-identity` in diagnostics.
    pub fn new(credential: Arc<dyn TokenCredential>) -> Self {
        AzureCredentialSource {
            credential,
            name: "azure-identity".into(),
        }
    }

    /// The same, with another name for diagnostics (`managed-identity (azure_identity)`…).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl TokenSource for AzureCredentialSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            match self.credential.get_token(&[scope], None).await {
                Ok(token) => Ok(AccessToken::new(
                    token.token.secret(),
                    system_time(token.expires_on),
                )),
                Err(e) => Err(classify(&self.name, &e)),
            }
        })
    }
}

fn system_time(at: OffsetDateTime) -> SystemTime {
    let secs = at.unix_timestamp();
    match u64::try_from(secs) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// The HTTP status anywhere in the error's chain (azure_identity wraps the pipeline's error).
fn status_of(e: &azure_core::Error) -> Option<u16> {
    if let Some(status) = e.http_status() {
        return Some(u16::from(status));
    }
    let mut current = std::error::Error::source(e);
    while let Some(inner) = current {
        if let Some(status) = inner
            .downcast_ref::<azure_core::Error>()
            .and_then(azure_core::Error::http_status)
        {
            return Some(u16::from(status));
        }
        current = inner.source();
    }
    None
}

/// Azure's retry guidance (`azure-protocols.md` §1) on an SDK error: 404, 410, 429, 5xx and
/// connection or I/O failures are transient; other statuses and credential errors are not.
fn classify(source: &str, e: &azure_core::Error) -> TokenError {
    let reason = crate::redact::redacted_snippet(&e.to_string());
    match (status_of(e), e.kind()) {
        (Some(status), _) if crate::retry::is_transient_status(status) => TokenError::Transient {
            source_name: source.to_string(),
            reason,
            status: Some(status),
            retry_after: None,
        },
        (Some(status), _) => TokenError::AuthenticationFailed {
            source_name: source.to_string(),
            reason,
            status: Some(status),
            error_code: None,
        },
        (None, ErrorKind::Connection | ErrorKind::Io) => TokenError::transient(source, reason),
        (None, _) => TokenError::auth_failed(source, reason),
    }
}

/// Other Azure SDK clients in the process can use the refresher's token. Only the refresher's own scope
/// is served; any other is refused with a credential error.
#[async_trait::async_trait]
impl TokenCredential for TokenHandle {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AzureToken> {
        if scopes != [self.scope()] {
            return Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                format!(
                    "this TokenHandle serves the scope {:?} only, not {scopes:?}",
                    self.scope()
                ),
            ));
        }
        let token = self
            .get()
            .await
            .map_err(|e| azure_core::Error::new(ErrorKind::Credential, e))?;
        let expires_on = OffsetDateTime::from(token.expires_on());
        Ok(AzureToken::new(
            Secret::new(token.secret().to_string()),
            expires_on,
        ))
    }
}
