//! TLS for connections to the server: rustls, with libpq's `sslmode` semantics and verified by default.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::ConfigError;

/// DigiCert Global Root CA: Azure Database for PostgreSQL still presents chains to it in China regions
/// and on new read replicas, and Mozilla's store (webpki-roots 1.0) no longer carries it.
pub const DIGICERT_GLOBAL_ROOT_CA_PEM: &str = include_str!("../certs/DigiCertGlobalRootCA.pem");

/// The roots Azure Database for PostgreSQL chains to: webpki-roots (DigiCert Global Root G2, Microsoft
/// RSA Root CA 2017 and the rest of Mozilla's store) plus DigiCert Global Root CA.
pub fn azure_roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut pem = DIGICERT_GLOBAL_ROOT_CA_PEM.as_bytes();
    for cert in rustls_pemfile::certs(&mut pem).flatten() {
        // The embedded certificate is covered by a test; a failure here could only be a packaging bug.
        let _ = roots.add(cert);
    }
    roots
}

/// Reads every certificate of a PEM file (libpq's `sslrootcert`).
pub(crate) fn load_pem_file(path: &Path, origin: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::invalid(origin, &shown, format!("cannot read the CA file: {e}")))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::invalid(origin, &shown, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            origin,
            &shown,
            "the file holds no PEM certificate",
        ));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a server's certificate is checked: what an `sslmode` means once the roots are known (see
/// [`ConnectionPlan`](crate::ConnectionPlan) for the rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verification {
    /// The chain leads to a trusted root and the certificate names the host (`verify-full`).
    Full,
    /// The chain leads to a trusted root; the name is not checked (`verify-ca`).
    ChainOnly,
    /// Encrypted, but the server is not authenticated: anyone on the path can read the token. Only with
    /// [`EntraConfig::danger_accept_unverified_tls`](crate::EntraConfig::danger_accept_unverified_tls).
    Unverified,
}

impl Verification {
    /// The libpq `sslmode` that checks the same.
    pub fn as_sslmode(self) -> &'static str {
        match self {
            Verification::Full => "verify-full",
            Verification::ChainOnly => "verify-ca",
            Verification::Unverified => "require",
        }
    }
}

/// A rustls client configuration that verifies as `verification` says, with these roots.
pub(crate) fn client_config(
    verification: Verification,
    roots: RootCertStore,
) -> Result<ClientConfig, ConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("TLS", "ring", format!("cannot set up TLS: {e}")))?;
    let roots = Arc::new(roots);
    let config = match verification {
        Verification::Full => builder.with_root_certificates(roots).with_no_client_auth(),
        Verification::ChainOnly => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| {
                    ConfigError::invalid("sslrootcert", "", format!("no usable root certificate: {e}"))
                })?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                .with_no_client_auth()
        }
        Verification::Unverified => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl fmt::Debug for ChainOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("verify-ca")
    }
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                ..
            })) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Encryption without authentication of the server. Chosen by name only.
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl fmt::Debug for NoVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("require (no verification)")
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether a host may be this machine (a loopback address, a unix-socket directory, or `localhost`), the
/// only place a token may travel without TLS. For `localhost` this is the name's promise only: the
/// connection plan resolves it on every connection and checks each address
/// ([`ConnectionPlan::loopback_addresses`](crate::ConnectionPlan::loopback_addresses)).
pub fn is_local_host(host: &str) -> bool {
    if host.starts_with('/') {
        return true;
    }
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject_contains(store: &RootCertStore, needle: &str) -> bool {
        store.roots.iter().any(|anchor| {
            let subject: &[u8] = anchor.subject.as_ref();
            subject.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    }

    #[test]
    fn trusts_the_three_azure_postgresql_roots() {
        let roots = azure_roots();
        assert!(subject_contains(&roots, "DigiCert Global Root G2"));
        assert!(subject_contains(
            &roots,
            "Microsoft RSA Root Certificate Authority 2017"
        ));
        assert!(subject_contains(&roots, "DigiCert Global Root CA"));
        assert!(roots.len() > webpki_roots::TLS_SERVER_ROOTS.len() - 1);
    }

    #[test]
    fn local_hosts_are_recognised() {
        for h in [
            "localhost",
            "127.0.0.1",
            "::1",
            "[::1]",
            "/var/run/postgresql",
            "127.0.0.53",
        ] {
            assert!(is_local_host(h), "{h}");
        }
        for h in ["db.postgres.database.azure.com", "10.0.0.4", "localhost.evil.com"] {
            assert!(!is_local_host(h), "{h}");
        }
    }
}
