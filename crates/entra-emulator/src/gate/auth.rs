//! Checking a token the way Azure Database for PostgreSQL does, and the rejections it answers with.

use std::time::Duration;

use super::principals::Principals;
use crate::jwt::{Claims, JwtIssuer, JwtRejection};

/// Why the gate refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// The client did not ask for TLS.
    NoTls,
    /// The password is not a JWT (e.g. a plain password).
    NotAJwt,
    /// The token is not signed by the emulator's issuer.
    BadSignature,
    /// `exp` is past (beyond the skew).
    Expired,
    /// `nbf` is in the future (beyond the skew).
    NotYetValid,
    /// `aud` is not the PostgreSQL resource.
    WrongAudience,
    /// `iss`/`tid` is not the emulator's tenant.
    WrongIssuer,
    /// No principal is registered under the startup `user`.
    UnknownPrincipal,
    /// The principal exists but its object id differs from the token's `oid`.
    OidMismatch,
    /// The principal was revoked.
    Revoked,
    /// The client broke the protocol (bad packet, no password message, no user).
    Protocol,
    /// The token was fine but the upstream server refused or could not be reached.
    Upstream,
}

impl RejectReason {
    /// The SQLSTATE the client receives.
    pub fn sqlstate(self) -> &'static str {
        match self {
            RejectReason::NoTls | RejectReason::Expired | RejectReason::WrongAudience => "28000",
            RejectReason::Protocol => "08P01",
            RejectReason::Upstream => "57P03",
            _ => "28P01",
        }
    }
}

/// A refusal: the reason (for counters and logs) and what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) reason: RejectReason,
    pub(crate) message: String,
}

impl Rejection {
    pub(crate) fn new(reason: RejectReason, role: &str) -> Self {
        let message = match reason {
            RejectReason::Expired => {
                "The access token has expired. Please acquire a new token and retry.".to_string()
            }
            RejectReason::WrongAudience => format!(
                "The access token does not have a valid audience claim. Please acquire a new token for \
                 the resource \"{}\".",
                crate::jwt::OSSRDBMS_RESOURCE
            ),
            RejectReason::Protocol => "invalid startup packet or authentication message".into(),
            RejectReason::Upstream => "the database system is not accepting connections".into(),
            // `no_tls` has the database too; this form is for callers that do not.
            RejectReason::NoTls => {
                format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"{role}\", SSL off")
            }
            _ => format!("password authentication failed for user \"{role}\""),
        };
        Rejection { reason, message }
    }

    /// PostgreSQL's answer to a StartupMessage without TLS when only `hostssl` lines exist.
    pub(crate) fn no_tls(role: &str, database: &str) -> Self {
        Rejection {
            reason: RejectReason::NoTls,
            message: format!(
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"{role}\", database \"{database}\", SSL off"
            ),
        }
    }
}

fn from_jwt(rejection: &JwtRejection) -> RejectReason {
    match rejection {
        JwtRejection::Malformed => RejectReason::NotAJwt,
        JwtRejection::BadSignature => RejectReason::BadSignature,
        JwtRejection::Expired => RejectReason::Expired,
        JwtRejection::NotYetValid => RejectReason::NotYetValid,
        JwtRejection::WrongAudience(_) => RejectReason::WrongAudience,
        JwtRejection::WrongIssuer => RejectReason::WrongIssuer,
    }
}

/// Accept `token` for `role` only if it verifies for `audience` and `role` is a live principal with the
/// token's `oid`.
pub(crate) fn check(
    issuer: &JwtIssuer,
    audience: &str,
    skew: Duration,
    principals: &Principals,
    role: &str,
    token: &str,
) -> Result<Claims, Rejection> {
    let claims = issuer
        .verify(token, audience, skew)
        .map_err(|e| Rejection::new(from_jwt(&e), role))?;
    let principal = principals
        .get(role)
        .ok_or_else(|| Rejection::new(RejectReason::UnknownPrincipal, role))?;
    if principal.oid != claims.oid {
        return Err(Rejection::new(RejectReason::OidMismatch, role));
    }
    if principal.revoked {
        return Err(Rejection::new(RejectReason::Revoked, role));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::principals::PrincipalKind;
    use crate::jwt::OSSRDBMS_RESOURCE;

    #[test]
    fn the_role_must_be_a_live_principal_with_the_tokens_oid() {
        let issuer = JwtIssuer::new();
        let principals = Principals::default();
        principals.insert("app", "oid-a", PrincipalKind::Service);
        let skew = Duration::from_secs(5);
        let token = issuer.sign(&Claims::new("oid-a", Duration::from_secs(60)));
        let check = |role: &str, token: &str| {
            check(&issuer, OSSRDBMS_RESOURCE, skew, &principals, role, token).map_err(|r| r.reason)
        };
        assert!(check("app", &token).is_ok());
        assert_eq!(check("other", &token).err(), Some(RejectReason::UnknownPrincipal));
        let foreign = issuer.sign(&Claims::new("oid-b", Duration::from_secs(60)));
        assert_eq!(check("app", &foreign).err(), Some(RejectReason::OidMismatch));
        principals.revoke("app");
        assert_eq!(check("app", &token).err(), Some(RejectReason::Revoked));
    }

    #[test]
    fn messages_match_azure() {
        let r = Rejection::new(RejectReason::OidMismatch, "app");
        assert_eq!(r.message, "password authentication failed for user \"app\"");
        assert_eq!(r.reason.sqlstate(), "28P01");
        let r = Rejection::new(RejectReason::Expired, "app");
        assert_eq!(r.reason.sqlstate(), "28000");
        assert!(r.message.starts_with("The access token has expired."));
    }
}
