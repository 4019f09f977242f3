//! Federated assertions: the projected Kubernetes service-account tokens that workload identity exchanges
//! for Entra tokens, signed here by the emulator's issuer key.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::jwt::{epoch_secs, JwtIssuer};

/// The audience every workload-identity assertion carries.
pub(crate) const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The issuer of the fake cluster's service-account tokens (an AKS OIDC issuer URL).
const CLUSTER_ISSUER: &str = "https://oidc.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/";

/// The claims of a service-account token that Entra checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AssertionClaims {
    /// A string or, as Kubernetes often sends it, an array of strings.
    pub(crate) aud: serde_json::Value,
    pub(crate) iss: String,
    pub(crate) sub: String,
    #[serde(default)]
    pub(crate) iat: u64,
    #[serde(default)]
    pub(crate) nbf: u64,
    #[serde(default)]
    pub(crate) exp: u64,
}

impl AssertionClaims {
    /// Whether `aud` is, or contains, `audience`.
    pub(crate) fn has_audience(&self, audience: &str) -> bool {
        match &self.aud {
            serde_json::Value::String(aud) => aud == audience,
            serde_json::Value::Array(auds) => auds.iter().any(|a| a == audience),
            _ => false,
        }
    }
}

/// A service-account token for `subject`, valid for `lifetime` from now (a zero lifetime gives one that
/// has already expired).
pub(crate) fn federated_assertion(issuer: &JwtIssuer, subject: &str, lifetime: Duration) -> String {
    let now = epoch_secs(SystemTime::now());
    issuer.sign_json(&AssertionClaims {
        aud: serde_json::Value::Array(vec![TOKEN_EXCHANGE_AUDIENCE.into()]),
        iss: CLUSTER_ISSUER.to_string(),
        sub: subject.to_string(),
        iat: now,
        nbf: now,
        exp: now + lifetime.as_secs(),
    })
}

/// Why an assertion is refused before its claims are looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AssertionError {
    /// Not a JWT, or claims of the wrong shape.
    Malformed,
    /// Not signed by the issuer's key.
    BadSignature,
}

/// Checks the signature against the issuer's key and returns the claims; times and audience are the
/// caller's to check, since Entra reports each with its own error.
pub(crate) fn verify(issuer: &JwtIssuer, assertion: &str) -> Result<AssertionClaims, AssertionError> {
    use jsonwebtoken::errors::ErrorKind;
    let key = DecodingKey::from_rsa_pem(issuer.public_key_pem().as_bytes())
        .map_err(|_| AssertionError::BadSignature)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidRsaKey(_) => {
                AssertionError::BadSignature
            }
            _ => AssertionError::Malformed,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::Claims;

    #[test]
    fn assertions_verify_and_carry_subject_and_audience() {
        let issuer = JwtIssuer::new();
        let jwt = federated_assertion(&issuer, "system:serviceaccount:ns:sa", Duration::from_secs(60));
        let claims = verify(&issuer, &jwt).unwrap();
        assert_eq!(claims.sub, "system:serviceaccount:ns:sa");
        assert!(claims.has_audience(TOKEN_EXCHANGE_AUDIENCE));
        assert!(claims.exp > epoch_secs(SystemTime::now()));
    }

    #[test]
    fn foreign_signatures_and_garbage_are_refused() {
        let issuer = JwtIssuer::new();
        let foreign = issuer.sign_untrusted(&Claims::new("o", Duration::from_secs(60)));
        // Claims lacks `sub`, but the signature is what fails first.
        assert_eq!(
            verify(&issuer, &foreign).unwrap_err(),
            AssertionError::BadSignature
        );
        assert_eq!(
            verify(&issuer, "not.a.jwt").unwrap_err(),
            AssertionError::Malformed
        );
    }
}
