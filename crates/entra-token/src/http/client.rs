//! [`HttpClient`]: the one client every HTTP token source sends through, and what a response or a
//! failure looks like to a source.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use zeroize::Zeroizing;

use super::HttpOptions;
use crate::redact::{cap_chars, redacted_snippet};
use crate::TokenError;

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
    /// Builds the client; fails with [`TokenError::HttpClientSetup`] only if the TLS setup is impossible.
    pub(crate) fn new(options: &HttpOptions) -> Result<Self, TokenError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &options.extra_root_certificates {
            roots.add(cert.clone()).map_err(|e| {
                setup_failed(
                    "an extra root certificate is unusable; remove or replace it in HttpOptions",
                    e,
                )
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_failed("the TLS configuration failed", e))?
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
            .map_err(|e| setup_failed("building the client failed", e))?;
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
            .map_err(|e| classify_send_error(source_name, e))?;
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

fn setup_failed(problem: &'static str, error: impl std::error::Error + Send + Sync + 'static) -> TokenError {
    TokenError::HttpClientSetup {
        problem,
        error: Arc::new(error),
    }
}

fn other(error: TokenError) -> HttpError {
    HttpError {
        kind: FailureKind::Other,
        error,
    }
}

fn classify_send_error(source_name: &str, e: reqwest::Error) -> HttpError {
    let detail = chain(&e);
    let (kind, reason) = if e.is_connect() {
        (FailureKind::NoConnection, format!("could not connect: {detail}"))
    } else if e.is_timeout() {
        (
            FailureKind::Other,
            format!("no response within the timeout: {detail}"),
        )
    } else if e.is_builder() {
        return other(TokenError::RequestNotBuilt {
            source_name: source_name.to_string(),
            error: Arc::new(e),
        });
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
    fn client_builds_with_defaults() {
        HttpClient::new(&HttpOptions::default()).unwrap();
    }
}
