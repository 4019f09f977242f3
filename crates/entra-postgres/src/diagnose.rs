//! [`diagnose`]: the cause of a failure and what to do about it, read from the error's types.
//!
//! A service whose pool fails can log the same explanation `entra-pg doctor` prints:
//!
//! ```no_run
//! # async fn demo(pool: entra_postgres::EntraPool) {
//! if let Err(e) = pool.get().await {
//!     let d = entra_postgres::diagnose(&e);
//!     tracing::error!(cause = ?d.cause, "{}; fix: {}", d.summary, d.fix);
//! }
//! # }
//! ```
//!
//! Decisions rest on types: the server's refusal as [`AzureRefusal`] classifies it (the one classifier
//! every front uses: phase, SQLSTATE, then the server's message to refine), rustls's certificate error,
//! the [`TokenError`] variant, our [`ConnectError`] and [`ConfigError`], an I/O error's kind. A formatted
//! report is never read.

use std::error::Error;
use std::fmt;

use entra_token::TokenError;

use crate::config::ConfigError;
use crate::error::{ConnectError, GetError};
use crate::refusal::{AzureRefusal, Phase};
use crate::session::SessionError;
use crate::CheckError;

/// What went wrong, as a kind a program can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// A configuration value is unusable (names the variable or key).
    Configuration,
    /// `sslmode=disable` with a remote host: the token would have travelled in cleartext.
    CleartextRefused,
    /// No identity endpoint or credential exists here (not on Azure, no managed identity, `az` not
    /// installed or not signed in).
    NoCredential,
    /// The managed identity asked for is not assigned to this VM or app.
    IdentityNotFound,
    /// Workload identity: no federated credential matches the service account (AADSTS700213).
    FederatedCredentialMismatch,
    /// A service principal's secret is wrong or expired (AADSTS7000215).
    ClientSecretRejected,
    /// The identity endpoint refused for another reason (the endpoint's message says which).
    IdentityRefused,
    /// The identity endpoint kept failing with transient errors (throttling, IMDS updating, timeouts).
    IdentityEndpointFailing,
    /// DNS has no address for the host name.
    HostNotFound,
    /// The server's pg_hba.conf or firewall does not let this host, user or database in.
    HostNotAllowed,
    /// Nothing accepts connections at that host and port.
    ConnectionRefused,
    /// The server or the network did not answer in time.
    Timeout,
    /// The server's certificate does not chain to a trusted root.
    UntrustedCertificate,
    /// The server's certificate does not name the host connected to.
    CertificateNameMismatch,
    /// The server's certificate has expired (or the clock is off).
    CertificateExpired,
    /// Another TLS failure.
    Tls,
    /// The server requires TLS and the connection did not use it.
    TlsRequired,
    /// The server says the token has expired, though it was just fetched: a clock is off.
    TokenExpired,
    /// The token is for another resource than the database's.
    WrongAudience,
    /// The server refused the token for this role: the user name is not the principal's, or the principal
    /// does not exist.
    PrincipalRejected,
    /// `pgaadauth_create_principal` could not find the name in the tenant.
    PrincipalNotInTenant,
    /// The `pgaadauth_*` functions exist only in the `postgres` database.
    PrincipalFunctionsOnlyInPostgres,
    /// The database does not exist.
    DatabaseMissing,
    /// The role lacks a privilege.
    PermissionDenied,
    /// Another server error (see `summary` for its SQLSTATE and message).
    Server,
    /// Nothing recognisable; `summary` holds the whole error.
    Unknown,
}

impl Cause {
    /// A stable name for programs and JSON (`token_expired`, `principal_rejected`…): `entra-pg doctor
    /// --json` reports it as each failed step's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Configuration => "configuration",
            Cause::CleartextRefused => "cleartext_refused",
            Cause::NoCredential => "no_credential",
            Cause::IdentityNotFound => "identity_not_found",
            Cause::FederatedCredentialMismatch => "federated_credential_mismatch",
            Cause::ClientSecretRejected => "client_secret_rejected",
            Cause::IdentityRefused => "identity_refused",
            Cause::IdentityEndpointFailing => "identity_endpoint_failing",
            Cause::HostNotFound => "host_not_found",
            Cause::HostNotAllowed => "host_not_allowed",
            Cause::ConnectionRefused => "connection_refused",
            Cause::Timeout => "timeout",
            Cause::UntrustedCertificate => "untrusted_certificate",
            Cause::CertificateNameMismatch => "certificate_name_mismatch",
            Cause::CertificateExpired => "certificate_expired",
            Cause::Tls => "tls",
            Cause::TlsRequired => "tls_required",
            Cause::TokenExpired => "token_expired",
            Cause::WrongAudience => "wrong_audience",
            Cause::PrincipalRejected => "principal_rejected",
            Cause::PrincipalNotInTenant => "principal_not_in_tenant",
            Cause::PrincipalFunctionsOnlyInPostgres => "principal_functions_only_in_postgres",
            Cause::DatabaseMissing => "database_missing",
            Cause::PermissionDenied => "permission_denied",
            Cause::Server => "server",
            Cause::Unknown => "unknown",
        }
    }
}

/// A failure's cause and its fix, for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// The kind of failure.
    pub cause: Cause,
    /// What went wrong, in a sentence.
    pub summary: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.summary, self.fix)
    }
}

/// What diagnosis may know beyond the error: who signed in, and who the token stands for.
///
/// ```
/// let context = entra_postgres::DiagnosisContext::default()
///     .role("orders-api")
///     .token_role("orders-api-staging");
/// assert_eq!(context.role, Some("orders-api"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct DiagnosisContext<'a> {
    /// The role (user name) the connection signed in as.
    pub role: Option<&'a str>,
    /// The name the token's claims give (see [`token_user`](crate::token_user)).
    pub token_role: Option<&'a str>,
}

impl<'a> DiagnosisContext<'a> {
    /// The role (user name) the connection signed in as.
    pub fn role(mut self, role: &'a str) -> Self {
        self.role = Some(role);
        self
    }

    /// The name the token's claims give, when known.
    pub fn token_role(mut self, token_role: impl Into<Option<&'a str>>) -> Self {
        self.token_role = token_role.into();
        self
    }
}

/// A token that the server would refuse for its audience, told before it is sent: `None` when its
/// `aud` claim is the resource of `scope` (what the pool asks for), else the [`Cause::WrongAudience`]
/// diagnosis naming both. Nothing is verified; the server does that.
///
/// ```
/// let token = entra_token::AccessToken::new("not-a-jwt", std::time::SystemTime::now());
/// let d = entra_postgres::diagnose_audience(&token, entra_token::OSSRDBMS_SCOPE).unwrap();
/// assert_eq!(d.cause, entra_postgres::Cause::WrongAudience);
/// ```
pub fn diagnose_audience(token: &entra_token::AccessToken, scope: &str) -> Option<Diagnosis> {
    let expected = entra_token::scope_to_resource(scope);
    let aud = entra_token::unverified_claims(token.secret())
        .and_then(|claims| claims.get("aud").and_then(|a| a.as_str()).map(str::to_string));
    if aud
        .as_deref()
        .is_some_and(|aud| aud.trim_end_matches('/') == expected.trim_end_matches('/'))
    {
        return None;
    }
    let aud = aud.unwrap_or_else(|| "no audience".into());
    Some(diagnosis(
        Cause::WrongAudience,
        format!("the token is for {aud}, not for {expected} (wrong audience)"),
        "ask for the scope https://ossrdbms-aad.database.windows.net/.default (the default; check --scope)",
    ))
}

/// The cause and fix of any error of this crate, of entra-token, of deadpool or of tokio-postgres.
pub fn diagnose(error: &(dyn Error + 'static)) -> Diagnosis {
    diagnose_with(error, &DiagnosisContext::default())
}

/// [`diagnose`] with what the caller knows about the sign-in.
pub fn diagnose_with(error: &(dyn Error + 'static), context: &DiagnosisContext<'_>) -> Diagnosis {
    for layer in layers(error) {
        if let Some(d) = diagnose_layer(layer, context) {
            return d;
        }
    }
    diagnosis(
        Cause::Unknown,
        crate::report(error),
        "see the message above; `entra-pg doctor` checks each step from configuration to a query",
    )
}

/// Every error in the chain, outermost first, looking inside I/O errors (whose payload `source()`
/// skips).
fn layers<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        out.push(e);
        current = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    out
}

fn diagnosis(cause: Cause, summary: impl Into<String>, fix: impl Into<String>) -> Diagnosis {
    Diagnosis {
        cause,
        summary: summary.into(),
        fix: fix.into(),
    }
}

fn diagnose_layer(e: &(dyn Error + 'static), context: &DiagnosisContext<'_>) -> Option<Diagnosis> {
    if let Some(config) = e.downcast_ref::<ConfigError>() {
        return Some(config_diagnosis(config));
    }
    if let Some(connect) = e.downcast_ref::<ConnectError>() {
        return match connect {
            ConnectError::Token(token) => Some(token_diagnosis(token)),
            ConnectError::Refused(config) => Some(config_diagnosis(config)),
            ConnectError::TokenRejected {
                role,
                kind,
                code,
                message,
                ..
            } => {
                let context = context.role(role);
                Some(server_diagnosis(*kind, code, message, &context))
            }
        };
    }
    if let Some(token) = e.downcast_ref::<TokenError>() {
        return Some(token_diagnosis(token));
    }
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        if let Some(db) = pg.as_db_error() {
            let (code, message) = (db.code().code(), db.message());
            // tokio-postgres drove the handshake (or ran the query) and does not say when it failed.
            let kind = AzureRefusal::classify(Phase::Unknown, code, message);
            return Some(server_diagnosis(kind, code, message, context));
        }
    }
    if let Some(session) = e.downcast_ref::<SessionError>() {
        // `Token` is transparent: its `source()` skips the ConnectError inside, so look at it here.
        if let SessionError::Token(inner) = session {
            return diagnose_layer(inner, context);
        }
        if let Some((phase, code, message)) = session.server_refusal() {
            let kind = AzureRefusal::classify(phase, code, message);
            return Some(server_diagnosis(kind, code, message, context));
        }
        if let SessionError::Resolve { host, .. } = session {
            return Some(diagnosis(
                Cause::HostNotFound,
                format!("DNS has no address for {host}"),
                "check the server name (<server>.postgres.database.azure.com); with a private endpoint, this \
                 network must use the private DNS zone",
            ));
        }
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls_diagnosis(tls));
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io_diagnosis(io);
    }
    if let Some(get) = e.downcast_ref::<GetError>() {
        if let deadpool_postgres::PoolError::Timeout(_) = get.as_pool_error() {
            return Some(diagnosis(
                Cause::Timeout,
                format!("{get}"),
                "the pool is exhausted or connections are slow to open: raise max_size or wait_timeout, \
                 or look at the server's load and the network",
            ));
        }
    }
    if let Some(CheckError::Timeout(limit)) = e.downcast_ref::<CheckError>() {
        return Some(diagnosis(
            Cause::Timeout,
            format!("the health check did not finish within {limit:?}"),
            "check the server's load and the network",
        ));
    }
    None
}

fn config_diagnosis(e: &ConfigError) -> Diagnosis {
    match e {
        ConfigError::CleartextToken { host, origin } => diagnosis(
            Cause::CleartextRefused,
            format!("refused to send a token without TLS to {host:?} ({origin} says sslmode=disable)"),
            "use sslmode=verify-full (the default); disable TLS only for loopback hosts and unix sockets",
        ),
        ConfigError::UserNotInToken(why) => diagnosis(
            Cause::Configuration,
            e.to_string(),
            format!("{why} (PGUSER or AZURE_POSTGRESQL_USER)"),
        ),
        other => diagnosis(
            Cause::Configuration,
            other.to_string(),
            format!(
                "fix {} (the variables and keys read are listed in `entra-pg --help`)",
                other.origin()
            ),
        ),
    }
}

/// The most telling single-source error of a token failure: an endpoint that answered and refused
/// beats one that is merely absent.
fn token_diagnosis(e: &TokenError) -> Diagnosis {
    let leaves = e.leaves();
    for leaf in &leaves {
        match leaf {
            TokenError::IdentityNotFound { identity, .. } => {
                return match identity {
                    Some(id) => diagnosis(
                        Cause::IdentityNotFound,
                        format!("identity not found: the user-assigned identity with {id} is not assigned to this resource"),
                        "assign it (az vm identity assign / az webapp identity assign --identities <resource id>), \
                         or name the right one with AZURE_POSTGRESQL_CLIENTID / --client-id",
                    ),
                    None => diagnosis(
                        Cause::IdentityNotFound,
                        "identity not found: this resource has no system-assigned managed identity",
                        "enable the system-assigned identity (az vm identity assign), or name a user-assigned \
                         one with AZURE_POSTGRESQL_CLIENTID / --client-id",
                    ),
                };
            }
            TokenError::AuthenticationFailed { error_code, .. } => {
                return match error_code.as_deref() {
                    Some("AADSTS700213") => diagnosis(
                        Cause::FederatedCredentialMismatch,
                        "no federated credential matches the service account token (AADSTS700213)",
                        "add a federated credential for subject system:serviceaccount:<namespace>:<name> and \
                         the cluster's OIDC issuer URL to the identity (az identity federated-credential create)",
                    ),
                    Some("AADSTS7000215") => diagnosis(
                        Cause::ClientSecretRejected,
                        "the client secret is wrong or expired (AADSTS7000215)",
                        "create a new secret for the app registration and set AZURE_CLIENT_SECRET",
                    ),
                    _ => diagnosis(
                        Cause::IdentityRefused,
                        format!("the identity endpoint refused: {leaf}"),
                        "check the identity's id, tenant and secret; the message is the endpoint's",
                    ),
                };
            }
            _ => {}
        }
    }
    if let Some(config) = leaves.iter().find(|l| l.is_config()) {
        return diagnosis(
            Cause::Configuration,
            // With its causes: the I/O error behind an unreadable file is the variant's source.
            format!("the token source is misconfigured: {}", crate::report(*config)),
            "fix the variable or flag named there",
        );
    }
    if !leaves.is_empty() && leaves.iter().all(|l| l.is_unavailable()) {
        let tried: Vec<String> = leaves.iter().map(ToString::to_string).collect();
        return diagnosis(
            Cause::NoCredential,
            format!(
                "no identity endpoint or credential is available here (tried: {})",
                tried.join("; ")
            ),
            "on Azure, enable a managed identity on the VM / App Service, or workload identity on AKS; on a \
             laptop run `az login`; for the local emulator use the variables `entra-pg emulate` prints",
        );
    }
    diagnosis(
        Cause::IdentityEndpointFailing,
        format!("the identity endpoint kept failing: {}", crate::report(e)),
        "usually temporary (throttling, IMDS updating): it is retried within the retry budget; if it \
         persists, check the endpoint's health and that no proxy or firewall intercepts 169.254.169.254 or \
         the token URL",
    )
}

fn server_diagnosis(
    kind: AzureRefusal,
    code: &str,
    message: &str,
    context: &DiagnosisContext<'_>,
) -> Diagnosis {
    let role = context.role.unwrap_or("<role>");
    match kind {
        AzureRefusal::TokenExpired => diagnosis(
            Cause::TokenExpired,
            "the server says the token has expired, though it was just fetched: this machine's clock (or \
             the issuer's) is off",
            "synchronise the clock (timedatectl set-ntp true / chrony) and check the token's exp with \
             `entra-pg token --json`",
        ),
        AzureRefusal::WrongAudience => diagnosis(
            Cause::WrongAudience,
            "the token was issued for another resource (wrong audience)",
            "ask for the scope https://ossrdbms-aad.database.windows.net/.default (the default; sovereign \
             clouds have their own host)",
        ),
        AzureRefusal::TlsRequired => diagnosis(
            Cause::TlsRequired,
            "the server requires TLS and the connection did not use it",
            "use sslmode=verify-full (PGSSLMODE, AZURE_POSTGRESQL_SSL=true or sslmode= in the connection \
             string); never disable TLS with a token",
        ),
        AzureRefusal::HostNotAllowed => diagnosis(
            Cause::HostNotAllowed,
            format!("the server does not let this host, user or database in ({message})"),
            "on Azure, add this machine's address to the server's firewall rules (or use its private \
             endpoint); on another server, add a pg_hba.conf line for this host, user and database",
        ),
        AzureRefusal::PrincipalNotInTenant => diagnosis(
            Cause::PrincipalNotInTenant,
            "pgaadauth_create_principal could not find that name in the tenant",
            "use the exact display name (managed identity, group) or UPN (user), or create the principal by \
             object id: SELECT * FROM pgaadauth_create_principal_with_oid('<name>', '<object id>', 'service', \
             false, false)",
        ),
        AzureRefusal::PrincipalFunctionsOnlyInPostgres => diagnosis(
            Cause::PrincipalFunctionsOnlyInPostgres,
            "the pgaadauth_* functions exist only in the `postgres` database",
            "connect to the database `postgres` to create principals (`entra-pg grant` does)",
        ),
        AzureRefusal::TokenRefused => {
            let principal = context.token_role.unwrap_or(role);
            let name = crate::sql::literal("name", principal).unwrap_or_else(|_| "'<name>'".into());
            let create = format!("SELECT * FROM pgaadauth_create_principal({name}, false, false);");
            match context.token_role {
                Some(name) if Some(name) != context.role => diagnosis(
                    Cause::PrincipalRejected,
                    format!(
                        "the server refused the token for role {role:?}: the token is for {name:?}, and the user \
                         name must be exactly the identity's name (case-sensitive)"
                    ),
                    format!(
                        "set PGUSER / AZURE_POSTGRESQL_USER (or user= in the connection string) to {name:?}; if \
                         that principal does not exist yet, as the Entra admin on the database `postgres`: {create}"
                    ),
                ),
                _ => diagnosis(
                    Cause::PrincipalRejected,
                    format!(
                        "the server refused the token for role {role:?}: the user name must be exactly the \
                         identity's name (case-sensitive), and that principal must exist and not be dropped"
                    ),
                    format!(
                        "as the Entra admin, on the database `postgres`: {create} (or `entra-pg grant \
                         {principal:?}`), then grant it the database"
                    ),
                ),
            }
        }
        AzureRefusal::DatabaseMissing => diagnosis(
            Cause::DatabaseMissing,
            format!("the database does not exist ({message})"),
            "set PGDATABASE / AZURE_POSTGRESQL_DATABASE to an existing database (the default is postgres)",
        ),
        AzureRefusal::PermissionDenied => diagnosis(
            Cause::PermissionDenied,
            format!("role {role:?} lacks a privilege ({message})"),
            format!("grant it: `entra-pg grant {role:?} --database <db>`"),
        ),
        _ => diagnosis(
            Cause::Server,
            format!("the server answered {code}: {message}"),
            "see the server's message",
        ),
    }
}

fn tls_diagnosis(e: &rustls::Error) -> Diagnosis {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => diagnosis(
            Cause::UntrustedCertificate,
            "the server's certificate is not signed by a trusted root",
            "Azure chains to DigiCert Global Root G2 / Microsoft RSA Root CA 2017 (built in); for another \
             server set PGSSLROOTCERT (or sslrootcert=) to a PEM file of its CA",
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => diagnosis(
            Cause::CertificateNameMismatch,
            "the server's certificate does not name the host connected to",
            "connect with the server's own name (<server>.postgres.database.azure.com), not an IP address or \
             alias; pin an address with hostaddr= while the name is verified",
        ),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => diagnosis(
            Cause::CertificateExpired,
            "the server's certificate is outside its validity period (or this machine's clock is far off)",
            "check the clock; renew the server certificate",
        ),
        other => diagnosis(
            Cause::Tls,
            format!("the TLS handshake failed: {other}"),
            "check that the host is a PostgreSQL server, and sslmode / sslrootcert",
        ),
    }
}

fn io_diagnosis(e: &std::io::Error) -> Option<Diagnosis> {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Some(diagnosis(
            Cause::ConnectionRefused,
            format!("nothing accepts connections at that host and port ({e})"),
            "check the host and port (5432; 6432 for the built-in PgBouncer), and that the server is running",
        )),
        std::io::ErrorKind::TimedOut => Some(diagnosis(
            Cause::Timeout,
            format!("the server did not answer in time ({e})"),
            "check the server's firewall rules or private endpoint, and this network's outbound 5432",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> Cause {
        let kind = AzureRefusal::classify(Phase::Unknown, code, message);
        server_diagnosis(kind, code, message, &DiagnosisContext::default()).cause
    }

    #[test]
    fn the_seeds_server_messages_are_told_apart() {
        assert_eq!(
            server(
                "28000",
                "SSL connection is required. Please specify SSL options and retry."
            ),
            Cause::TlsRequired
        );
        assert_eq!(
            server(
                "28000",
                "no pg_hba.conf entry for host \"1.2.3.4\", user \"u\", database \"d\", SSL off"
            ),
            Cause::TlsRequired
        );
        assert_eq!(
            server(
                "XX000",
                "Could not validate AAD user 0000 because its name is not found in the tenant. [...]"
            ),
            Cause::PrincipalNotInTenant
        );
        assert_eq!(
            server(
                "42883",
                "function pgaadauth_create_principal(unknown, boolean, boolean) does not exist"
            ),
            Cause::PrincipalFunctionsOnlyInPostgres
        );
        assert_eq!(
            server(
                "28000",
                "The access token has expired. Please acquire a new token and retry."
            ),
            Cause::TokenExpired
        );
        assert_eq!(
            server(
                "28000",
                "The access token does not have a valid audience claim. Please acquire a new token for the \
                 resource \"https://ossrdbms-aad.database.windows.net\"."
            ),
            Cause::WrongAudience
        );
        assert_eq!(
            server("28P01", "password authentication failed for user \"x\""),
            Cause::PrincipalRejected
        );
        assert_eq!(
            server("3D000", "database \"nope\" does not exist"),
            Cause::DatabaseMissing
        );
    }

    #[test]
    fn a_wrong_user_name_names_the_tokens_principal() {
        let context = DiagnosisContext::default().role("wrong").token_role("orders-api");
        let d = server_diagnosis(
            AzureRefusal::TokenRefused,
            "28P01",
            "password authentication failed",
            &context,
        );
        assert!(d.summary.contains("\"orders-api\""), "{d}");
        assert!(
            d.fix
                .contains("pgaadauth_create_principal('orders-api', false, false)"),
            "{d}"
        );
    }

    #[test]
    fn a_raw_sessions_refused_token_is_diagnosed_through_its_transparent_layer() {
        let refused = SessionError::Token(ConnectError::TokenRejected {
            role: "orders-api".into(),
            kind: AzureRefusal::TokenExpired,
            code: "28000".into(),
            message: "The access token has expired. Please acquire a new token and retry.".into(),
            hint: String::new(),
        });
        assert_eq!(diagnose(&refused).cause, Cause::TokenExpired);
        let pg_hba = SessionError::Server {
            phase: Phase::BeforePassword,
            severity: "FATAL".into(),
            code: "28000".into(),
            message: "no pg_hba.conf entry for host \"10.1.2.3\", user \"u\", database \"d\", SSL encryption"
                .into(),
            detail: None,
            hint: None,
        };
        assert_eq!(diagnose(&pg_hba).cause, Cause::HostNotAllowed);
    }

    #[test]
    fn identity_not_found_is_its_own_cause_and_not_no_credential() {
        let not_found = TokenError::IdentityNotFound {
            source_name: "imds".into(),
            identity: Some("client id abc".into()),
            message: "Identity not found".into(),
        };
        assert_eq!(diagnose(&not_found).cause, Cause::IdentityNotFound);
        let none = TokenError::ChainFailed(vec![
            TokenError::unavailable("imds", "nothing listening"),
            TokenError::unavailable("azure-cli", "az not found"),
        ]);
        assert_eq!(diagnose(&none).cause, Cause::NoCredential);
    }

    #[test]
    fn certificate_errors_are_read_from_rustls_inside_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(diagnose(&io).cause, Cause::UntrustedCertificate);
    }

    #[test]
    fn throttling_that_outlasts_the_budget_is_an_endpoint_failure() {
        let e = TokenError::RetriesExhausted {
            source_name: "imds".into(),
            attempts: 6,
            outcomes: vec!["HTTP 429".into(); 6],
            elapsed: std::time::Duration::from_secs(70),
            budget: std::time::Duration::from_secs(70),
            last: Box::new(TokenError::transient("imds", "throttled")),
        };
        assert_eq!(diagnose(&e).cause, Cause::IdentityEndpointFailing);
    }
}
