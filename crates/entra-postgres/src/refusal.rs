//! [`AzureRefusal`]: what a server's error response means, decided once for every front.
//!
//! The deadpool connector, the multiplexed pool, raw sessions (and so the proxy), the sqlx adapter,
//! [`diagnose`](crate::diagnose) and `entra-pg doctor` all ask [`AzureRefusal::classify`]. A refusal they
//! read as a token problem makes the refresher drop its cached token and fetch another, so this is the
//! one place that decides it, from structure first:
//!
//! 1. **When the server refused** ([`Phase`]). Where our code drives the handshake (raw sessions, the
//!    proxy), a refusal is a token problem only when it answers the password, before
//!    `AuthenticationOk`. Anything after `AuthenticationOk` (a client's `DateStyle`, `options`, a
//!    missing database, a role that may not log in) was decided with the token already accepted.
//! 2. **Its SQLSTATE.** Where a client library drives the handshake and does not say when the server
//!    refused (tokio-postgres, sqlx: [`Phase::Unknown`]), a refusal is a token problem only under
//!    `28000` (invalid authorization) or `28P01` (invalid password).
//! 3. **Its message**, last, and only to refine a kind already decided: Azure tells an expired token
//!    from a wrong audience by message alone, and PostgreSQL's pg_hba refusal of a connection without TLS
//!    shares `28000` with a refused token. A message never makes a refusal a token problem by itself, so
//!    nothing a client puts in its own parameters (`PGDATESTYLE='access token'`) can make us drop a token.

/// When, in a connection's start, the server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Before the server asked for a password: pg_hba, TLS required, too many clients, a server
    /// starting up. The token was not looked at.
    BeforePassword,
    /// In answer to the password, before `AuthenticationOk`: the token is what is being judged.
    Password,
    /// After `AuthenticationOk`: the token was accepted; startup parameters, the database or the role's
    /// own limits were refused. Also every error of a query on an open session.
    AfterAuthentication,
    /// A client library we do not drive (tokio-postgres, sqlx) owned the handshake and does not say.
    Unknown,
}

/// What a server's error response means for us: decided by when the server refused ([`Phase`]), then
/// its SQLSTATE, and only then its message, which may refine a kind but never makes a refusal the token's.
///
/// ```
/// use entra_postgres::{AzureRefusal, Phase};
///
/// // Azure's expired-token refusal, read from a pooled connection (tokio-postgres drove the handshake).
/// let expired = AzureRefusal::classify(Phase::Unknown, "28000", "The access token has expired. Please acquire a new token and retry.");
/// assert_eq!(expired, AzureRefusal::TokenExpired);
/// assert!(expired.is_token_problem());
///
/// // A client's own DateStyle refused after sign-in: never a token problem, whatever its text says.
/// let datestyle = AzureRefusal::classify(
///     Phase::AfterAuthentication,
///     "22023",
///     "invalid value for parameter \"DateStyle\": \"access token\"",
/// );
/// assert!(!datestyle.is_token_problem());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AzureRefusal {
    /// The server says the token has expired (Azure: "The access token has expired").
    TokenExpired,
    /// The token was issued for another resource (Azure: "… does not have a valid audience claim").
    WrongAudience,
    /// The token was refused for this role: the user name is not the principal's, the principal does
    /// not exist or was dropped, or the token is not one the server accepts.
    TokenRefused,
    /// The server requires TLS and the connection did not use it (pg_hba's "SSL off" / "no encryption",
    /// Azure's "SSL connection is required").
    TlsRequired,
    /// The server's pg_hba.conf (or Azure's firewall) does not let this host, user or database in, whatever
    /// the password.
    HostNotAllowed,
    /// The server is starting up or shutting down (`57P03`).
    NotReady,
    /// The server has no connection slot left (`53300`).
    TooManyConnections,
    /// The database does not exist (`3D000`).
    DatabaseMissing,
    /// The role lacks a privilege (`42501`).
    PermissionDenied,
    /// `pgaadauth_create_principal` could not find the name in the tenant.
    PrincipalNotInTenant,
    /// A `pgaadauth_*` function was called outside the `postgres` database, the only one that has them.
    PrincipalFunctionsOnlyInPostgres,
    /// Anything else: see the server's SQLSTATE and message.
    Other,
}

const INVALID_AUTHORIZATION: &str = "28000";
const INVALID_PASSWORD: &str = "28P01";

impl AzureRefusal {
    /// The meaning of an error response with `sqlstate` and `message`, received in `phase`.
    pub fn classify(phase: Phase, sqlstate: &str, message: &str) -> Self {
        let authorization = sqlstate == INVALID_AUTHORIZATION || sqlstate == INVALID_PASSWORD;
        // pg_hba.conf answers under 28000 before any password is asked for: for a connection without TLS
        // ("SSL off", "no encryption"; Azure: "SSL connection is required"), and for a host, user or
        // database it does not let in ("no pg_hba.conf entry … SSL encryption", "pg_hba.conf rejects
        // connection"). No token is judged there.
        if sqlstate == INVALID_AUTHORIZATION {
            let pg_hba = message.contains("pg_hba.conf");
            if (pg_hba && (message.contains("SSL off") || message.contains("no encryption")))
                || message.starts_with("SSL connection is required")
            {
                return AzureRefusal::TlsRequired;
            }
            if pg_hba {
                return AzureRefusal::HostNotAllowed;
            }
        }
        let token_in_question = match phase {
            Phase::Password => true,
            Phase::Unknown => authorization,
            Phase::BeforePassword | Phase::AfterAuthentication => false,
        };
        if token_in_question {
            // Azure answers both under 28000 (or, unverified, another code while judging the password):
            // only the message tells them apart.
            if message.contains("access token has expired") {
                return AzureRefusal::TokenExpired;
            }
            if message.contains("valid audience claim") {
                return AzureRefusal::WrongAudience;
            }
            if authorization {
                return AzureRefusal::TokenRefused;
            }
        }
        match sqlstate {
            "57P03" => AzureRefusal::NotReady,
            "53300" => AzureRefusal::TooManyConnections,
            "3D000" => AzureRefusal::DatabaseMissing,
            "42501" => AzureRefusal::PermissionDenied,
            "42883" if message.contains("pgaadauth") => AzureRefusal::PrincipalFunctionsOnlyInPostgres,
            // Raised by pgaadauth_create_principal in a query (its SQLSTATE is not documented), never
            // at sign-in: it can refine a query's error, not a refusal of the token.
            _ if !authorization && message.contains("Could not validate AAD user") => {
                AzureRefusal::PrincipalNotInTenant
            }
            _ => AzureRefusal::Other,
        }
    }

    /// Whether a new token may cure it: the cached token is then dropped and the sign-in retried once.
    pub fn is_token_problem(self) -> bool {
        matches!(
            self,
            AzureRefusal::TokenExpired | AzureRefusal::WrongAudience | AzureRefusal::TokenRefused
        )
    }

    /// What to check when a fresh token is refused the same way, for `role`.
    pub(crate) fn token_hint(self, role: &str) -> String {
        match self {
            AzureRefusal::TokenExpired => {
                "The token was just fetched, so check this machine's clock (time sync) and the token's \
                 lifetime."
                    .to_string()
            }
            AzureRefusal::WrongAudience => {
                "Fetch the token for the scope https://ossrdbms-aad.database.windows.net/.default (sovereign \
                 clouds have their own host); a token for another resource is refused."
                    .to_string()
            }
            _ => {
                let name = crate::sql::literal("role", role).unwrap_or_else(|_| "'<role>'".into());
                format!(
                    "Check that the user name {role:?} is exactly the Entra principal's name (a managed \
                     identity's name, a group's display name, or a user's UPN; case-sensitive), that the \
                     principal was created with pgaadauth_create_principal({name}, false, false) (or _with_oid) \
                     on the `postgres` database, that the token's identity (client id) is that principal, and \
                     that the database exists."
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AzureRefusal as K;
    use super::Phase::*;
    use super::*;

    const EXPIRED: &str = "The access token has expired. Please acquire a new token and retry.";
    const AUDIENCE: &str =
        "The access token does not have a valid audience claim. Please acquire a new token for \
                            the resource \"https://ossrdbms-aad.database.windows.net\".";
    const PASSWORD_FAILED: &str = "password authentication failed for user \"orders-api\"";
    const NO_TLS: &str = "no pg_hba.conf entry for host \"10.1.2.3\", user \"u\", database \"d\", SSL off";
    const NO_ENCRYPTION: &str =
        "no pg_hba.conf entry for host \"10.1.2.3\", user \"u\", database \"d\", no encryption";
    const AZURE_NO_TLS: &str = "SSL connection is required. Please specify SSL options and retry.";
    const NOT_IN_TENANT: &str =
        "Could not validate AAD user 00000000-0000-0000-0000-000000000000 because its name is \
                                 not found in the tenant. [...]";
    const NO_FUNCTION: &str = "function pgaadauth_create_principal(unknown, boolean, boolean) does not exist";
    const DATESTYLE: &str = "invalid value for parameter \"DateStyle\": \"access token\"";

    /// (phase, SQLSTATE, message) → kind: every server message of `azure-protocols.md` §7, PostgreSQL's
    /// own refusals, and the client-controlled texts that once passed for token refusals.
    #[test]
    fn refusals_are_classified_by_phase_then_sqlstate_then_message() {
        let table: &[(Phase, &str, &str, AzureRefusal)] = &[
            // Azure's token refusals, wherever they come from.
            (Unknown, "28000", EXPIRED, K::TokenExpired),
            (Password, "28000", EXPIRED, K::TokenExpired),
            (Password, "XX000", EXPIRED, K::TokenExpired),
            (Unknown, "28000", AUDIENCE, K::WrongAudience),
            (Password, "28P01", AUDIENCE, K::WrongAudience),
            (Unknown, "28P01", PASSWORD_FAILED, K::TokenRefused),
            (Password, "28P01", PASSWORD_FAILED, K::TokenRefused),
            (Unknown, "28000", "role \"x\" does not exist", K::TokenRefused),
            // Where we drive the handshake, 28xxx after sign-in is the role's own limit, not the token.
            (
                AfterAuthentication,
                "28000",
                "role \"x\" is not permitted to log in",
                K::Other,
            ),
            (BeforePassword, "28P01", PASSWORD_FAILED, K::Other),
            // Azure's texts under another code, where the phase does not say the password was judged.
            (Unknown, "XX000", EXPIRED, K::Other),
            (AfterAuthentication, "28000", EXPIRED, K::Other),
            (BeforePassword, "XX000", AUDIENCE, K::Other),
            // A client's own parameter refused after sign-in, with token words in it (issue 19).
            (AfterAuthentication, "22023", DATESTYLE, K::Other),
            (Unknown, "22023", DATESTYLE, K::Other),
            (Password, "22023", DATESTYLE, K::Other),
            (
                AfterAuthentication,
                "22023",
                "invalid value for parameter \"TimeZone\": \"access token has expired\"",
                K::Other,
            ),
            // TLS required: pg_hba before any password, and Azure's wording.
            (BeforePassword, "28000", NO_TLS, K::TlsRequired),
            (Unknown, "28000", NO_TLS, K::TlsRequired),
            (Unknown, "28000", NO_ENCRYPTION, K::TlsRequired),
            (Unknown, "28000", AZURE_NO_TLS, K::TlsRequired),
            (Unknown, "08P01", NO_TLS, K::Other),
            // pg_hba.conf refusing a host, user or database, before any password: never the token.
            (Unknown, "28000", "no pg_hba.conf entry for host \"10.1.2.3\", user \"u\", database \"d\", SSL encryption", K::HostNotAllowed),
            (Unknown, "28000", "no pg_hba.conf entry for host \"10.1.2.3\", user \"u\", database \"d\", SSL on", K::HostNotAllowed),
            (Unknown, "28000", "pg_hba.conf rejects connection for host \"10.1.2.3\", user \"u\", database \"d\", SSL encryption", K::HostNotAllowed),
            (BeforePassword, "28000", "pg_hba.conf rejects connection for host \"h\", user \"u\", database \"d\"", K::HostNotAllowed),
            // The server's state and the session's limits.
            (
                BeforePassword,
                "57P03",
                "the database system is starting up",
                K::NotReady,
            ),
            (
                Unknown,
                "57P03",
                "the database system is shutting down",
                K::NotReady,
            ),
            (
                BeforePassword,
                "53300",
                "sorry, too many clients already",
                K::TooManyConnections,
            ),
            (
                AfterAuthentication,
                "3D000",
                "database \"nope\" does not exist",
                K::DatabaseMissing,
            ),
            (
                Unknown,
                "3D000",
                "database \"nope\" does not exist",
                K::DatabaseMissing,
            ),
            (
                AfterAuthentication,
                "42501",
                "permission denied for table t",
                K::PermissionDenied,
            ),
            // Provisioning errors, from queries.
            (
                AfterAuthentication,
                "XX000",
                NOT_IN_TENANT,
                K::PrincipalNotInTenant,
            ),
            (Unknown, "P0001", NOT_IN_TENANT, K::PrincipalNotInTenant),
            (Unknown, "28000", NOT_IN_TENANT, K::TokenRefused),
            (
                AfterAuthentication,
                "42883",
                NO_FUNCTION,
                K::PrincipalFunctionsOnlyInPostgres,
            ),
            (
                AfterAuthentication,
                "42883",
                "function nope() does not exist",
                K::Other,
            ),
            (AfterAuthentication, "XX000", "access token", K::Other),
        ];
        for (phase, code, message, kind) in table {
            assert_eq!(
                AzureRefusal::classify(*phase, code, message),
                *kind,
                "({phase:?}, {code}, {message:?})"
            );
        }
    }

    #[test]
    fn only_the_token_kinds_drop_a_token() {
        for kind in [K::TokenExpired, K::WrongAudience, K::TokenRefused] {
            assert!(kind.is_token_problem(), "{kind:?}");
        }
        for kind in [
            K::TlsRequired,
            K::HostNotAllowed,
            K::NotReady,
            K::TooManyConnections,
            K::DatabaseMissing,
            K::PermissionDenied,
            K::PrincipalNotInTenant,
            K::PrincipalFunctionsOnlyInPostgres,
            K::Other,
        ] {
            assert!(!kind.is_token_problem(), "{kind:?}");
        }
    }

    #[test]
    fn the_hint_quotes_the_role_as_a_sql_literal() {
        let hint = K::TokenRefused.token_hint("O'Brien'); DROP TABLE x; --");
        assert!(
            hint.contains("pgaadauth_create_principal('O''Brien''); DROP TABLE x; --', false, false)"),
            "{hint}"
        );
    }
}
