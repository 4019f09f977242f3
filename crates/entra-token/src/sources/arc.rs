//! [`AzureArcSource`]: the managed identity of an Azure Arc-enabled server (`azure-protocols.md` §3).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use reqwest::header::WWW_AUTHENTICATE;
use url::Url;
use zeroize::Zeroizing;

use super::imds::parse_url;
use super::managed_identity::token_from_mi_response;
use super::UserAssignedId;
use crate::http::{traced_fetch, HttpClient, HttpOptions, HttpResponse};
use crate::{scope_to_resource, AccessToken, Env, FetchFuture, TokenError, TokenSource};

const NAME: &str = "azure-arc";
const DEFAULT_ENDPOINT: &str = "http://localhost:40342/metadata/identity/oauth2/token";
const DEFAULT_KEY_DIRECTORY: &str = "/var/opt/azcmagent/tokens";
const API_VERSION: &str = "2020-06-01";
/// The agent's key files are small; anything bigger is not one.
const MAX_KEY_BYTES: u64 = 4096;

/// Fetches tokens from the Azure Arc agent (`himds`).
///
/// The agent proves the caller can read a root-only file: the first `GET` (with `Metadata: true`) is
/// answered `401` with `WWW-Authenticate: Basic realm=<key file>`; the source checks the file is a
/// `.key` of at most 4096 bytes directly in the agent's key directory, then repeats the request with
/// `Authorization: Basic <file contents>`. It never reads a file outside that directory, whatever the
/// endpoint says.
///
/// Endpoint: [`AzureArcSourceBuilder::endpoint`], else `IDENTITY_ENDPOINT`, else
/// `http://localhost:40342/metadata/identity/oauth2/token`. Arc serves only the system-assigned identity.
///
/// ```no_run
/// use entra_token::{AzureArcSource, TokenSource, OSSRDBMS_SCOPE};
///
/// # async fn run() -> Result<(), entra_token::TokenError> {
/// let source = AzureArcSource::builder().build()?;
/// let token = source.fetch(OSSRDBMS_SCOPE).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AzureArcSource {
    url: Url,
    key_directory: PathBuf,
    http: HttpClient,
}

/// Builds an [`AzureArcSource`].
#[derive(Debug, Default)]
pub struct AzureArcSourceBuilder {
    endpoint: Option<String>,
    key_directory: Option<PathBuf>,
    id: Option<UserAssignedId>,
    env: Option<Env>,
    http: HttpOptions,
}

impl AzureArcSourceBuilder {
    /// The agent's token URL; overrides `IDENTITY_ENDPOINT`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The only directory key files may be read from (default `/var/opt/azcmagent/tokens`).
    pub fn key_directory(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_directory = Some(path.into());
        self
    }

    /// Arc serves only the system-assigned identity: setting one makes [`build`](Self::build) fail.
    pub fn user_assigned(mut self, id: UserAssignedId) -> Self {
        self.id = Some(id);
        self
    }

    pub(crate) fn maybe_user_assigned(mut self, id: Option<UserAssignedId>) -> Self {
        self.id = id;
        self
    }

    /// Where to read `IDENTITY_ENDPOINT` (default: the process environment).
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// Timeouts, body cap and extra roots.
    pub fn http_options(mut self, options: HttpOptions) -> Self {
        self.http = options;
        self
    }

    /// The source; [`TokenError::UserAssignedUnsupported`] for a user-assigned identity, a URL error
    /// for an invalid endpoint.
    pub fn build(self) -> Result<AzureArcSource, TokenError> {
        if let Some(id) = self.id {
            return Err(TokenError::UserAssignedUnsupported {
                source_name: NAME.to_string(),
                serves: "the machine's system-assigned identity",
                identity: id,
            });
        }
        let env = self.env.unwrap_or_else(Env::process);
        let url = match (self.endpoint, env.var("IDENTITY_ENDPOINT")) {
            (Some(endpoint), _) => parse_url("the Azure Arc endpoint", &endpoint)?,
            (None, Some(endpoint)) => parse_url("IDENTITY_ENDPOINT", &endpoint)?,
            (None, None) => parse_url("the default Azure Arc endpoint", DEFAULT_ENDPOINT)?,
        };
        Ok(AzureArcSource {
            url,
            key_directory: self
                .key_directory
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_DIRECTORY)),
            http: HttpClient::new(&self.http)?,
        })
    }
}

impl AzureArcSource {
    /// A builder with the agent's defaults.
    pub fn builder() -> AzureArcSourceBuilder {
        AzureArcSourceBuilder::default()
    }

    fn request(&self, scope: &str) -> reqwest::RequestBuilder {
        self.http
            .inner()
            .get(self.url.clone())
            .header("Metadata", "true")
            .query(&[
                ("api-version", API_VERSION),
                ("resource", scope_to_resource(scope)),
            ])
    }

    async fn fetch_token(&self, scope: &str) -> Result<AccessToken, TokenError> {
        let challenge = self.http.send(NAME, self.request(scope)).await?;
        if challenge.status != 401 {
            return Err(match token_from_mi_response(NAME, &challenge, None) {
                Err(e) => e,
                Ok(_) => TokenError::invalid_response(
                    NAME,
                    format!(
                        "expected a 401 challenge from the Arc agent, got HTTP {}; is {} really \
                         an Azure Arc agent?",
                        challenge.status, self.url
                    ),
                ),
            });
        }
        let key_path = self.key_path(&challenge)?;
        let key = read_key(&key_path).await?;
        let response = self
            .http
            .send(
                NAME,
                self.request(scope)
                    .header("Authorization", format!("Basic {}", key.as_str())),
            )
            .await?;
        token_from_mi_response(NAME, &response, None)
    }

    /// The key file the challenge names, once it is known to be a `.key` directly inside the key
    /// directory.
    fn key_path(&self, challenge: &HttpResponse) -> Result<PathBuf, TokenError> {
        let header = challenge
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                TokenError::invalid_response(
                    NAME,
                    "the Arc agent's 401 has no readable WWW-Authenticate header",
                )
            })?;
        let realm = header
            .split_once('=')
            .filter(|(scheme, _)| scheme.trim().eq_ignore_ascii_case("basic realm"))
            .map(|(_, realm)| realm.trim().trim_matches('"'))
            .ok_or_else(|| {
                TokenError::invalid_response(
                    NAME,
                    format!(
                        "the Arc agent's challenge is not `Basic realm=<key file>`: {:?}",
                        crate::redact::cap_chars(header, 200)
                    ),
                )
            })?;
        let path = Path::new(realm);
        let inside = path.is_absolute()
            && path.parent() == Some(self.key_directory.as_path())
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && path.extension().is_some_and(|ext| ext == "key");
        if !inside {
            return Err(TokenError::auth_failed(
                NAME,
                format!(
                    "refusing to read {realm:?}: the Arc agent may only name a .key file directly in {}",
                    self.key_directory.display()
                ),
            ));
        }
        Ok(path.to_path_buf())
    }
}

impl TokenSource for AzureArcSource {
    fn name(&self) -> &str {
        NAME
    }

    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(traced_fetch(NAME, self.fetch_token(scope)))
    }
}

async fn read_key(path: &Path) -> Result<Zeroizing<String>, TokenError> {
    let unreadable = |e: std::io::Error| TokenError::ArcKeyUnreadable {
        path: path.to_path_buf(),
        error: Arc::new(e),
    };
    let metadata = tokio::fs::metadata(path).await.map_err(unreadable)?;
    if !metadata.is_file() || metadata.len() > MAX_KEY_BYTES {
        return Err(TokenError::auth_failed(
            NAME,
            format!(
                "refusing the Arc key file {}: not a regular file of at most {MAX_KEY_BYTES} bytes",
                path.display()
            ),
        ));
    }
    let bytes = Zeroizing::new(tokio::fs::read(path).await.map_err(unreadable)?);
    if bytes.len() as u64 > MAX_KEY_BYTES {
        return Err(TokenError::auth_failed(
            NAME,
            format!(
                "refusing the Arc key file {}: larger than {MAX_KEY_BYTES} bytes",
                path.display()
            ),
        ));
    }
    let key = std::str::from_utf8(&bytes).map_err(|_| TokenError::ArcKeyNotText {
        path: path.to_path_buf(),
    })?;
    Ok(Zeroizing::new(key.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn source() -> AzureArcSource {
        AzureArcSource::builder()
            .env(Env::from_pairs::<&str, &str>([]))
            .build()
            .unwrap()
    }

    fn challenge(header: &str) -> HttpResponse {
        let mut headers = HeaderMap::new();
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_str(header).unwrap());
        HttpResponse {
            status: 401,
            headers,
            body: String::new().into(),
        }
    }

    #[test]
    fn accepts_a_key_directly_in_the_directory() {
        let path = source()
            .key_path(&challenge("Basic realm=/var/opt/azcmagent/tokens/abc.key"))
            .unwrap();
        assert_eq!(path, Path::new("/var/opt/azcmagent/tokens/abc.key"));
    }

    #[test]
    fn refuses_paths_outside_the_directory_or_not_keys() {
        for realm in [
            "/etc/shadow",
            "/var/opt/azcmagent/tokens/../../../etc/x.key",
            "/var/opt/azcmagent/tokens/sub/abc.key",
            "/var/opt/azcmagent/tokens/abc.txt",
            "/var/opt/azcmagent/tokens/abc",
            "var/opt/azcmagent/tokens/abc.key",
            "/var/opt/azcmagent/tokens2/abc.key",
        ] {
            let err = source()
                .key_path(&challenge(&format!("Basic realm={realm}")))
                .unwrap_err();
            assert!(
                matches!(err, TokenError::AuthenticationFailed { .. }),
                "{realm}: {err:?}"
            );
        }
    }

    #[test]
    fn malformed_challenges_are_invalid_responses() {
        for header in ["Bearer realm=/x.key", "Basic", "Digest realm=\"x\""] {
            let err = source().key_path(&challenge(header)).unwrap_err();
            assert!(
                matches!(err, TokenError::InvalidResponse { .. }),
                "{header}: {err:?}"
            );
        }
        let missing = HttpResponse {
            status: 401,
            headers: HeaderMap::new(),
            body: String::new().into(),
        };
        assert!(matches!(
            source().key_path(&missing),
            Err(TokenError::InvalidResponse { .. })
        ));
    }

    #[test]
    fn user_assigned_is_a_config_error() {
        let err = AzureArcSource::builder()
            .user_assigned(UserAssignedId::ClientId("c".into()))
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::UserAssignedUnsupported { .. })
                && err.to_string().contains("system-assigned"),
            "{err:?}"
        );
    }

    #[test]
    fn endpoint_defaults_to_the_local_agent() {
        assert_eq!(source().url.as_str(), DEFAULT_ENDPOINT);
    }
}
