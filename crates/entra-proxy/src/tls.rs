//! [`ClientTls`]: TLS for the proxy's clients, required beyond loopback.

use std::path::Path;
use std::sync::Arc;

use crate::error::ProxyError;

/// TLS for clients, required when the proxy listens beyond loopback.
#[derive(Clone)]
pub struct ClientTls(pub(crate) tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(…)")
    }
}

impl ClientTls {
    /// From a PEM certificate chain and its PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, ProxyError> {
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProxyError::TlsFile { path, source }
        };
        let read = |path: &Path| std::fs::read(path).map_err(failed(path));
        let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
            .collect::<Result<_, _>>()
            .map_err(failed(cert))?;
        if certs.is_empty() {
            return Err(ProxyError::TlsFileEmpty {
                path: cert.to_path_buf(),
                what: "certificate",
            });
        }
        let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(failed(key))?
            .ok_or_else(|| ProxyError::TlsFileEmpty {
                path: key.to_path_buf(),
                what: "private key",
            })?;
        Self::new(certs, key)
    }

    /// From a certificate chain and its private key.
    pub fn new(
        certs: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Self, ProxyError> {
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(ProxyError::TlsConfig)?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .map_err(ProxyError::TlsConfig)?;
        Ok(ClientTls(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }
}
