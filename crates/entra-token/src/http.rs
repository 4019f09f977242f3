//! The HTTP client every token source uses, and the safety rules it enforces.
//!
//! Token requests carry credentials (an `IDENTITY_HEADER`, a client secret, a federated assertion) and
//! return secrets, so the client is deliberately narrow: it never uses a proxy (an `HTTPS_PROXY` meant for
//! other traffic must not see them), never follows a redirect, times out, and reads at most
//! [`HttpOptions::max_body_bytes`] of a body, chunk by chunk, so a hostile or broken endpoint cannot make
//! it buffer megabytes.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use rustls::pki_types::CertificateDer;
use tracing::Instrument;
use zeroize::Zeroizing;

use crate::{AccessToken, TokenError};

/// How token sources talk HTTP: timeouts, the body cap and extra trusted roots.
///
/// The defaults suit Azure: connect within 5 s, finish a request within 30 s, accept bodies up to 64 KiB
/// (tokens with many group claims exceed 4 KiB, none approach 64), and trust the Mozilla roots of
/// `webpki-roots`. Proxies and redirects are never used, whatever the options.
///
/// ```
/// use std::time::Duration;
/// use entra_token::HttpOptions;
///
/// let options = HttpOptions::default().timeout(Duration::from_secs(10));
/// assert_eq!(options.connect_timeout, Duration::from_secs(5));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// The whole request, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// The largest response body accepted; a longer one is refused without being buffered.
    pub max_body_bytes: usize,
    /// Certificates trusted as roots in addition to `webpki-roots` (a private authority, or a test CA).
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            extra_root_certificates: Vec::new(),
        }
    }
}

impl HttpOptions {
    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`max_body_bytes`](Self::max_body_bytes).
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Trusts this certificate as a root, in addition to `webpki-roots`.
    pub fn add_root_certificate(mut self, cert: CertificateDer<'static>) -> Self {
        self.extra_root_certificates.push(cert);
        self
    }

    /// Adds every certificate of a PEM bundle as a trusted root.
    ///
    /// Fails with [`TokenError::Config`] when the text holds no certificate or a malformed one.
    pub fn with_ca_pem(mut self, pem: &str) -> Result<Self, TokenError> {
        let mut reader = pem.as_bytes();
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert
                .map_err(|e| TokenError::Config(format!("the CA PEM holds a malformed certificate: {e}")))?;
            self.extra_root_certificates.push(cert);
            added += 1;
        }
        if added == 0 {
            return Err(TokenError::Config(
                "the CA PEM holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        Ok(self)
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("extra_root_certificates", &self.extra_root_certificates.len())
            .finish()
    }
}

/// The client behind every HTTP token source. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// A complete response: status, headers and a body that fit the cap and is UTF-8.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    /// Zeroized on drop: a success's body holds the token.
    pub(crate) body: Zeroizing<String>,
}

impl HttpResponse {
    /// The `Retry-After` the server sent, as a delay from now.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(&self.headers, SystemTime::now())
    }

    /// The body quoted for an error message: secrets redacted, capped.
    pub(crate) fn snippet(&self) -> String {
        redacted_snippet(&self.body)
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Whether a failed request ever reached an HTTP server. IMDS needs the difference: nothing listening
/// means "no IMDS here", a server that misbehaved means "IMDS is having a bad moment".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No connection was made (refused, unreachable, DNS, connect timeout).
    NoConnection,
    /// Anything after connecting.
    Other,
}

/// A request that produced no usable response.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub(crate) kind: FailureKind,
    pub(crate) error: TokenError,
}

impl From<HttpError> for TokenError {
    fn from(e: HttpError) -> Self {
        e.error
    }
}

impl HttpClient {
    /// Builds the client; fails with [`TokenError::Config`] only if the TLS setup is impossible.
    pub(crate) fn new(options: &HttpOptions) -> Result<Self, TokenError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &options.extra_root_certificates {
            roots
                .add(cert.clone())
                .map_err(|e| TokenError::Config(format!("an extra root certificate is unusable: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TokenError::Config(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .tls_backend_preconfigured(tls)
            .user_agent(concat!("entra-token/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TokenError::Config(format!("building the HTTP client failed: {}", chain(&e))))?;
        Ok(HttpClient {
            client,
            max_body_bytes: options.max_body_bytes,
        })
    }

    /// The underlying client, to build a request for [`send`](Self::send).
    pub(crate) fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request and reads the whole (capped) body.
    ///
    /// Timeouts and connection failures are [`TokenError::Transient`]; an oversized, truncated or
    /// non-UTF-8 body and any redirect are [`TokenError::InvalidResponse`]. Status codes are left to the
    /// caller, which knows its endpoint's error table.
    pub(crate) async fn send(
        &self,
        source_name: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<HttpResponse, HttpError> {
        let mut response = request
            .send()
            .await
            .map_err(|e| classify_send_error(source_name, &e))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(no Location header)");
            return Err(other(TokenError::invalid_response(
                source_name,
                format!(
                    "the endpoint answered HTTP {status} redirecting to {:?}; token requests never \
                     follow redirects: point the source at the final URL",
                    cap_chars(location, 200)
                ),
            )));
        }
        let too_big = |n: u64| {
            other(TokenError::invalid_response(
                source_name,
                format!(
                    "the response body is larger than {} bytes (at least {n}); refused",
                    self.max_body_bytes
                ),
            ))
        };
        if let Some(len) = response.content_length() {
            if len > self.max_body_bytes as u64 {
                return Err(too_big(len));
            }
        }
        let headers = response.headers().clone();
        // Sized once from Content-Length when the server sent one; otherwise grown by copying into a
        // bigger buffer and zeroizing the old one, so no stray copy of a token is left in freed memory.
        let expected = response.content_length().unwrap_or(0) as usize;
        let mut body = Zeroizing::new(Vec::with_capacity(expected.min(self.max_body_bytes)));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body_bytes {
                        return Err(too_big((body.len() + chunk.len()) as u64));
                    }
                    append_zeroizing(&mut body, &chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(other(TokenError::Transient {
                        source_name: source_name.to_string(),
                        reason: format!(
                            "timed out reading the body of an HTTP {status} response: {}",
                            chain(&e)
                        ),
                        status: Some(status),
                        retry_after: None,
                    }))
                }
                Err(e) => {
                    return Err(other(TokenError::invalid_response(
                        source_name,
                        format!(
                            "the body of an HTTP {status} response was cut short after {} bytes: {}",
                            body.len(),
                            chain(&e)
                        ),
                    )))
                }
            }
        }
        let body = match String::from_utf8(std::mem::take(&mut *body)) {
            Ok(text) => Zeroizing::new(text),
            Err(e) => {
                let valid_up_to = e.utf8_error().valid_up_to();
                drop(Zeroizing::new(e.into_bytes()));
                return Err(other(TokenError::invalid_response(
                    source_name,
                    format!(
                        "the body of an HTTP {status} response is not UTF-8 (invalid byte at {valid_up_to})"
                    ),
                )));
            }
        };
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// Appends `chunk`, moving to a bigger buffer (and zeroizing the old one) when it does not fit.
fn append_zeroizing(buf: &mut Zeroizing<Vec<u8>>, chunk: &[u8]) {
    if buf.capacity() - buf.len() < chunk.len() {
        let wanted = (buf.len() + chunk.len()).max(buf.capacity() * 2);
        let mut bigger = Zeroizing::new(Vec::with_capacity(wanted));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(chunk);
}

fn other(error: TokenError) -> HttpError {
    HttpError {
        kind: FailureKind::Other,
        error,
    }
}

fn classify_send_error(source_name: &str, e: &reqwest::Error) -> HttpError {
    let detail = chain(e);
    let (kind, reason) = if e.is_connect() {
        (FailureKind::NoConnection, format!("could not connect: {detail}"))
    } else if e.is_timeout() {
        (
            FailureKind::Other,
            format!("no response within the timeout: {detail}"),
        )
    } else if e.is_builder() {
        return other(TokenError::Config(format!(
            "{source_name}: the request could not be built: {detail}"
        )));
    } else {
        (FailureKind::Other, format!("the request failed: {detail}"))
    };
    HttpError {
        kind,
        error: TokenError::transient(source_name, reason),
    }
}

/// An error and its causes on one line (reqwest's own message says little: "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `Retry-After` as delta-seconds or an HTTP date; a date in the past means "now".
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let date = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    Some(
        SystemTime::from(date)
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    )
}

const SNIPPET_CHARS: usize = 200;
const REDACTED: &str = "<redacted>";

/// A body quoted for a diagnostic: the values of `access_token`, `accessToken` and `refresh_token` and
/// anything that looks like a JWT are replaced by `<redacted>`, and the result is capped at about 200
/// characters.
pub(crate) fn redacted_snippet(body: &str) -> String {
    // The copies made on the way still hold the secret: zeroized as they are dropped.
    let mut text = zeroize::Zeroizing::new(body.to_string());
    for key in ["access_token", "accessToken", "refresh_token"] {
        text = zeroize::Zeroizing::new(redact_key(&text, key));
    }
    text = zeroize::Zeroizing::new(redact_jwts(&text));
    let mut out = cap_chars(text.trim(), SNIPPET_CHARS);
    if out.chars().count() < text.trim().chars().count() {
        out.push('…');
    }
    out
}

/// Replaces the string value after every `"key"` (up to its closing quote, or to the end when the body
/// is cut short).
fn redact_key(text: &str, key: &str) -> String {
    let needle = format!("\"{key}\"");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(&needle) {
        let after_key = pos + needle.len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ':');
        let skipped = rest.len() - trimmed.len();
        out.push_str(&rest[..skipped]);
        rest = trimmed;
        if let Some(value) = rest.strip_prefix('"') {
            out.push('"');
            out.push_str(REDACTED);
            match find_closing_quote(value) {
                Some(end) => rest = &value[end..],
                None => {
                    rest = "";
                }
            }
        } else if !rest.is_empty() && !rest.starts_with([',', '}', ']']) {
            // An unquoted or odd value: redact up to the next delimiter.
            let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
            out.push_str(REDACTED);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn find_closing_quote(value: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Replaces anything that looks like a JWT (`eyJ…` followed by a dot) wherever it appears.
fn redact_jwts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("eyJ") {
        out.push_str(&rest[..pos]);
        let candidate = &rest[pos..];
        let end = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')))
            .unwrap_or(candidate.len());
        let word = &candidate[..end];
        if word.contains('.') || end >= 20 {
            out.push_str(REDACTED);
            rest = &candidate[end..];
        } else {
            out.push_str("eyJ");
            rest = &candidate[3..];
        }
    }
    out.push_str(rest);
    out
}

pub(crate) fn cap_chars(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Runs one fetch inside a `token_fetch` span recording the source, the outcome and the token's
/// remaining lifetime (never the token).
pub(crate) async fn traced_fetch<F>(source_name: &str, fetch: F) -> Result<AccessToken, TokenError>
where
    F: Future<Output = Result<AccessToken, TokenError>>,
{
    let span = tracing::info_span!(
        "token_fetch",
        source = source_name,
        outcome = tracing::field::Empty,
        expires_in = tracing::field::Empty,
    );
    let result = fetch.instrument(span.clone()).await;
    match &result {
        Ok(token) => {
            span.record("outcome", "ok");
            span.record("expires_in", token.expires_in().as_secs());
            tracing::debug!(parent: &span, token = %token.fingerprint(), "token fetched");
        }
        Err(e) => {
            span.record("outcome", error_outcome(e));
            tracing::debug!(parent: &span, error = %e, "token fetch failed");
        }
    }
    result
}

fn error_outcome(e: &TokenError) -> &'static str {
    match e {
        TokenError::CredentialUnavailable { .. } => "unavailable",
        TokenError::AuthenticationFailed { .. } => "auth_failed",
        TokenError::Transient { .. } => "transient",
        TokenError::InvalidResponse { .. } => "invalid_response",
        TokenError::Config(_) => "config",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        parse_retry_after(&headers, now)
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 +0000", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn snippets_redact_tokens_in_every_shape() {
        let secret = "SECRETVALUE";
        let bodies = [
            format!(r#"{{"access_token":"{secret}","expires_in":"x"}}"#),
            format!(r#"{{"access_token" : "{secret}"}}"#),
            format!(r#"{{"accessToken":"{secret}","expiresOn":1}}"#),
            format!(r#"{{"refresh_token":"{secret}"}}"#),
            format!(r#"{{"access_token":"{secret}"#),
            format!(r#"{{"access_token":"a\"{secret}"}}"#),
            format!(r#"{{"access_token":{secret}}}"#),
            format!(r#"{{"x":1,"access_token":"1","access_token":"{secret}"}}"#),
            format!("garbage eyJhbGciOi.{secret}.sig more"),
            format!("eyJ{secret}{secret}{secret}"),
        ];
        for body in &bodies {
            let s = redacted_snippet(body);
            assert!(!s.contains(secret), "{body} -> {s}");
            assert!(s.contains(REDACTED), "{body} -> {s}");
        }
    }

    #[test]
    fn snippets_keep_harmless_text_and_are_capped() {
        let body = r#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        assert_eq!(redacted_snippet(body), body);
        assert_eq!(redacted_snippet("eyJ short"), "eyJ short");
        let long = "é".repeat(5000);
        let s = redacted_snippet(&long);
        assert!(s.chars().count() <= SNIPPET_CHARS + 1, "{}", s.len());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn ca_pem_without_certificates_is_a_config_error() {
        assert!(matches!(
            HttpOptions::default().with_ca_pem("nothing here"),
            Err(TokenError::Config(_))
        ));
    }

    #[test]
    fn debug_of_options_is_short() {
        let s = format!("{:?}", HttpOptions::default());
        assert!(s.contains("extra_root_certificates: 0"), "{s}");
    }

    #[test]
    fn client_builds_with_defaults() {
        HttpClient::new(&HttpOptions::default()).unwrap();
    }
}
