//! [`HttpOptions`]: the timeouts, body cap and extra trusted roots of token requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::TokenError;

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
    /// Fails with [`TokenError::CaPemEmpty`] when the text holds no certificate, and
    /// [`TokenError::CaPemMalformed`] when one is malformed.
    pub fn with_ca_pem(mut self, pem: &str) -> Result<Self, TokenError> {
        let mut reader = pem.as_bytes();
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| TokenError::CaPemMalformed { error: Arc::new(e) })?;
            self.extra_root_certificates.push(cert);
            added += 1;
        }
        if added == 0 {
            return Err(TokenError::CaPemEmpty);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_pem_without_certificates_is_a_config_error() {
        assert!(matches!(
            HttpOptions::default().with_ca_pem("nothing here"),
            Err(TokenError::CaPemEmpty)
        ));
    }

    #[test]
    fn debug_of_options_is_short() {
        let s = format!("{:?}", HttpOptions::default());
        assert!(s.contains("extra_root_certificates: 0"), "{s}");
    }
}
