//! The emulator's certificate authority and the server certificates it issues.
//!
//! One CA per emulator: the throwaway cluster and the gate both present certificates chained to it, so a
//! client that trusts [`EmulatorCa::pem`] can connect to either with `sslmode=verify-full`.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::EmulatorError;

/// The names every server certificate is valid for: clients connect to `localhost` or `127.0.0.1`.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A throwaway certificate authority (ECDSA P-256), generated in memory.
pub struct EmulatorCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl std::fmt::Debug for EmulatorCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorCa")
    }
}

/// A server certificate and its private key.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Arc<Vec<u8>>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCert(key redacted)")
    }
}

impl EmulatorCa {
    /// A new CA named "entra-emulator test CA".
    pub fn generate() -> Result<Self, EmulatorError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "entra-emulator test CA");
        name.push(DnType::OrganizationName, "entra-pool");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(EmulatorCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what clients put in `sslrootcert`.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A rustls client configuration (ring provider) trusting only this CA: with host name `localhost`
    /// it verifies like libpq's `sslmode=verify-full`.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, EmulatorError> {
        let tls_err = |source| EmulatorError::Tls {
            what: "a client of the emulator".into(),
            source,
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.der.clone())
            .map_err(|e| tls_err(rustls::Error::General(e.to_string())))?;
        Ok(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls_err)?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A server certificate for `localhost` and `127.0.0.1`, signed by this CA.
    pub fn issue_server_cert(&self) -> Result<ServerCert, EmulatorError> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(SERVER_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: Arc::new(key.serialize_der()),
        })
    }
}

impl ServerCert {
    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3) presenting this certificate.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, EmulatorError> {
        let tls_err = |source| EmulatorError::Tls {
            what: "the gate".into(),
            source,
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.as_ref().clone()));
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .map_err(tls_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_certificates_verify_for_localhost_against_the_ca_only() {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::{ServerName, UnixTime};

        let ca = EmulatorCa::generate().unwrap();
        let cert = ca.issue_server_cert().unwrap();
        assert!(cert.rustls_server_config().is_ok());
        let verify = |ca: &EmulatorCa, name: &'static str| {
            // The same check `client_config` makes, with the CA's root only.
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new({
                    let mut roots = rustls::RootCertStore::empty();
                    roots.add(ca.der.clone()).unwrap();
                    roots
                }),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .unwrap();
            verifier
                .verify_server_cert(
                    &cert.cert_der,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .is_ok()
        };
        assert!(verify(&ca, "localhost"));
        assert!(verify(&ca, "127.0.0.1"));
        assert!(!verify(&ca, "example.com"));
        assert!(!verify(&EmulatorCa::generate().unwrap(), "localhost"));
    }
}
