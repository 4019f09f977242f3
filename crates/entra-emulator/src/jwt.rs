//! JWTs as Entra ID issues them for Azure Database for PostgreSQL, signed by a test key.
//!
//! The keys in `keys/` are **test keys**, published with this crate: tokens they sign are accepted only by
//! this emulator's gate, never by Azure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::identity::{ManagedIdentity, ServicePrincipal};

/// The resource (and `aud`) of Azure Database for PostgreSQL in the public cloud.
pub const OSSRDBMS_RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";

/// The Azure CLI's application id: the `appid` of a user's token fetched with `az`.
pub const AZURE_CLI_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

/// The tenant the emulator's identities live in.
pub const TEST_TENANT_ID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

const ISSUER_KEY: &str = include_str!("../keys/issuer-key.pem");
const ISSUER_PUB: &str = include_str!("../keys/issuer-pub.pem");
const UNTRUSTED_KEY: &str = include_str!("../keys/untrusted-key.pem");

/// The claims of an access token, as Entra ID sets them for a managed identity or user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Audience: the resource the token is for.
    pub aud: String,
    /// Issuer: `https://sts.windows.net/{tid}/`.
    pub iss: String,
    /// Tenant id.
    pub tid: String,
    /// Object id of the principal: what the server maps roles by.
    pub oid: String,
    /// Application (client) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// Issued at (epoch seconds).
    pub iat: u64,
    /// Not before (epoch seconds).
    pub nbf: u64,
    /// Expiry (epoch seconds).
    pub exp: u64,
    /// The managed identity's resource id (managed identities only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
    /// The user principal name (members of the tenant only: guests have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// The user's sign-in name in v2 tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// The user's sign-in name in v1 tokens: a member's UPN; a guest's home name (`live.com#ana@outlook.com`
    /// for a Microsoft account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    /// The identity provider that signed the user in, when it is not the issuer (guests): `live.com`, or
    /// the home tenant's `https://sts.windows.net/{tid}/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// A guest's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The delegated scopes (users' tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    /// `app` for service principals and managed identities, `user` for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idtyp: Option<String>,
    /// Group claims: real tokens carry many, which is what pushes them over 4 KB.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl Claims {
    /// Claims for principal `oid`, valid from now for `lifetime`, for the PostgreSQL resource.
    pub fn new(oid: impl Into<String>, lifetime: Duration) -> Self {
        let now = epoch_secs(SystemTime::now());
        Claims {
            aud: OSSRDBMS_RESOURCE.to_string(),
            iss: format!("https://sts.windows.net/{TEST_TENANT_ID}/"),
            tid: TEST_TENANT_ID.to_string(),
            oid: oid.into(),
            appid: None,
            iat: now,
            nbf: now.saturating_sub(300),
            exp: now + lifetime.as_secs().max(1),
            xms_mirid: None,
            upn: None,
            preferred_username: None,
            unique_name: None,
            idp: None,
            email: None,
            scp: None,
            idtyp: Some("app".into()),
            groups: Vec::new(),
        }
    }

    /// The claims Entra ID puts in a managed identity's token: its client id as `appid` and its resource
    /// id as `xms_mirid` (for a user-assigned identity its own; for a system-assigned one its resource's).
    pub fn managed_identity(identity: &ManagedIdentity, lifetime: Duration) -> Self {
        let mut claims = Claims::new(&identity.object_id, lifetime);
        claims.appid = Some(identity.client_id.clone());
        claims.xms_mirid = Some(identity.resource_id.clone());
        claims
    }

    /// The claims Entra ID puts in a member user's v1 token (`az login`, then a token for the database):
    /// `upn` and `unique_name` are the user principal name.
    pub fn user(oid: impl Into<String>, upn: &str, lifetime: Duration) -> Self {
        let mut claims = Claims::new(oid, lifetime);
        claims.idtyp = Some("user".into());
        claims.appid = Some(AZURE_CLI_CLIENT_ID.into());
        claims.scp = Some("user_impersonation".into());
        claims.upn = Some(upn.into());
        claims.unique_name = Some(upn.into());
        claims
    }

    /// The claims Entra ID puts in a guest's v1 token when the guest signs in at home with a Microsoft
    /// account `address`: no `upn`; `unique_name` = `live.com#{address}`, `email`, and `idp` = `live.com`.
    pub fn guest(oid: impl Into<String>, address: &str, lifetime: Duration) -> Self {
        let mut claims = Claims::new(oid, lifetime);
        claims.idtyp = Some("user".into());
        claims.appid = Some(AZURE_CLI_CLIENT_ID.into());
        claims.scp = Some("user_impersonation".into());
        claims.unique_name = Some(format!("live.com#{address}"));
        claims.email = Some(address.into());
        claims.idp = Some("live.com".into());
        claims
    }

    /// The claims Entra ID puts in an application's token (a service principal's secret, or workload
    /// identity federated with an app registration): `appid` and `oid`, no name.
    pub fn application(app: &ServicePrincipal, lifetime: Duration) -> Self {
        let mut claims = Claims::new(&app.object_id, lifetime);
        claims.appid = Some(app.client_id.clone());
        claims
    }

    /// Add group ids until the encoded token is at least `bytes` long (tests of tokens over 4 KB).
    pub fn padded_to(mut self, bytes: usize) -> Self {
        // each group id adds 39 bytes of JSON, about 52 once base64url-encoded
        let groups = bytes.div_ceil(50);
        self.groups = (0..groups)
            .map(|i| format!("{:08x}-0000-4000-8000-{:012x}", i, i))
            .collect();
        self
    }
}

/// Seconds since the Unix epoch.
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why the gate refuses a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRejection {
    /// Not a JWT at all (a plain password, say).
    #[error("not a JWT")]
    Malformed,
    /// Signed by a key the issuer does not own.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the skew).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond the skew).
    #[error("not yet valid")]
    NotYetValid,
    /// `aud` is not the expected resource.
    #[error("wrong audience {0:?}")]
    WrongAudience(String),
    /// `iss`/`tid` is not the emulator's tenant.
    #[error("wrong issuer or tenant")]
    WrongIssuer,
}

/// Signs and verifies tokens with the emulator's test key.
#[derive(Clone)]
pub struct JwtIssuer {
    encoding: EncodingKey,
    untrusted: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtIssuer(test key)")
    }
}

impl Default for JwtIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtIssuer {
    /// The issuer with the crate's test key.
    pub fn new() -> Self {
        // The embedded PEMs are fixed at build time and covered by this crate's tests, so a failure here
        // is a packaging bug, not bad input.
        JwtIssuer {
            encoding: EncodingKey::from_rsa_pem(ISSUER_KEY.as_bytes()).expect("embedded issuer key"),
            untrusted: EncodingKey::from_rsa_pem(UNTRUSTED_KEY.as_bytes()).expect("embedded untrusted key"),
            decoding: DecodingKey::from_rsa_pem(ISSUER_PUB.as_bytes()).expect("embedded issuer public key"),
        }
    }

    /// The public key that verifies this issuer's tokens (PEM).
    pub fn public_key_pem(&self) -> &'static str {
        ISSUER_PUB
    }

    /// An RS256 JWT with these claims, signed by the issuer's key.
    pub fn sign(&self, claims: &Claims) -> String {
        self.sign_with(claims, &self.encoding)
    }

    /// A JWT with these claims signed by a key the issuer does not own (for "badly signed" tests).
    pub fn sign_untrusted(&self, claims: &Claims) -> String {
        self.sign_with(claims, &self.untrusted)
    }

    /// An RS256 JWT with any claims (a Kubernetes service-account token, say), signed by the issuer's key.
    pub fn sign_json<T: Serialize>(&self, claims: &T) -> String {
        self.sign_with(claims, &self.encoding)
    }

    fn sign_with<T: Serialize>(&self, claims: &T, key: &EncodingKey) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some("entra-emulator-test-key".into());
        // Serialising a struct of strings and integers cannot fail.
        jsonwebtoken::encode(&header, claims, key).unwrap_or_default()
    }

    /// Verify signature, audience, expiry and not-before (each with `skew`) and issuer/tenant, as the
    /// server does; returns the claims.
    pub fn verify(&self, token: &str, audience: &str, skew: Duration) -> Result<Claims, JwtRejection> {
        use jsonwebtoken::errors::ErrorKind;
        if token.split('.').count() != 3 {
            return Err(JwtRejection::Malformed);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidRsaKey(_) => {
                JwtRejection::BadSignature
            }
            _ => JwtRejection::Malformed,
        })?;
        let claims = data.claims;
        let now = epoch_secs(SystemTime::now());
        let skew = skew.as_secs();
        if claims.exp + skew <= now {
            return Err(JwtRejection::Expired);
        }
        if claims.nbf > now + skew {
            return Err(JwtRejection::NotYetValid);
        }
        if claims.aud.trim_end_matches('/') != audience.trim_end_matches('/') {
            return Err(JwtRejection::WrongAudience(claims.aud));
        }
        if claims.tid != TEST_TENANT_ID || !claims.iss.contains(TEST_TENANT_ID) {
            return Err(JwtRejection::WrongIssuer);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_and_tampering_does_not() {
        let issuer = JwtIssuer::new();
        let claims = Claims::new("oid-1", Duration::from_secs(60));
        let token = issuer.sign(&claims);
        assert_eq!(
            issuer.verify(&token, OSSRDBMS_RESOURCE, Duration::from_secs(5)),
            Ok(claims.clone())
        );
        let bad = issuer.sign_untrusted(&claims);
        assert_eq!(
            issuer.verify(&bad, OSSRDBMS_RESOURCE, Duration::ZERO),
            Err(JwtRejection::BadSignature)
        );
        assert_eq!(
            issuer.verify("hunter2", OSSRDBMS_RESOURCE, Duration::ZERO),
            Err(JwtRejection::Malformed)
        );
    }

    #[test]
    fn expiry_not_before_and_audience_are_checked() {
        let issuer = JwtIssuer::new();
        let mut c = Claims::new("o", Duration::from_secs(60));
        c.exp = epoch_secs(SystemTime::now()) - 120;
        assert_eq!(
            issuer.verify(&issuer.sign(&c), OSSRDBMS_RESOURCE, Duration::from_secs(60)),
            Err(JwtRejection::Expired)
        );
        let mut c = Claims::new("o", Duration::from_secs(60));
        c.nbf = epoch_secs(SystemTime::now()) + 600;
        assert_eq!(
            issuer.verify(&issuer.sign(&c), OSSRDBMS_RESOURCE, Duration::from_secs(60)),
            Err(JwtRejection::NotYetValid)
        );
        let mut c = Claims::new("o", Duration::from_secs(60));
        c.aud = "https://management.azure.com".into();
        assert!(matches!(
            issuer.verify(&issuer.sign(&c), OSSRDBMS_RESOURCE, Duration::ZERO),
            Err(JwtRejection::WrongAudience(_))
        ));
    }

    #[test]
    fn padding_makes_tokens_over_4kb() {
        let issuer = JwtIssuer::new();
        let token = issuer.sign(&Claims::new("o", Duration::from_secs(60)).padded_to(4500));
        assert!(token.len() > 4500, "{}", token.len());
        assert!(issuer.verify(&token, OSSRDBMS_RESOURCE, Duration::ZERO).is_ok());
    }
}
