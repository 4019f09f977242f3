//! Known failures, each mapped to its cause and its fix (`doctor`, `grant`, `psql`).
//!
//! The server's messages are Azure's (`shared/azure-protocols.md` §7); the token endpoints' are those of
//! §1–§5. Matching is on SQLSTATE where the server sends a distinctive one, else on the message text.

use entra_token::TokenError;

/// What went wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) cause: String,
    pub(crate) fix: String,
}

fn problem(cause: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        cause: cause.into(),
        fix: fix.into(),
    }
}

/// Every leaf error of a token failure (a chain holds one per source).
fn leaves(e: &TokenError) -> Vec<&TokenError> {
    match e {
        TokenError::ChainFailed(all) => all.iter().flat_map(leaves).collect(),
        TokenError::Unavailable {
            last_error: Some(inner),
            ..
        } => leaves(inner),
        other => vec![other],
    }
}

/// The cause and fix of a failed token fetch.
pub(crate) fn token_problem(e: &TokenError) -> Problem {
    let leaves = leaves(e);
    // The most telling leaf: an endpoint that answered and refused beats one that is merely absent.
    for leaf in &leaves {
        if let TokenError::AuthenticationFailed {
            reason,
            status,
            error_code,
            ..
        } = leaf
        {
            let code = error_code.as_deref().unwrap_or_default();
            if reason.contains("Identity not found") || (*status == Some(400) && code == "invalid_request") {
                return problem(
                    "identity not found: the identity endpoint answered 400, the managed identity asked for \
                     is not assigned to this VM / app",
                    "assign the user-assigned identity to this resource (az vm identity assign / az webapp \
                     identity assign --identities <resource id>), or pass its client id with --client-id or \
                     AZURE_POSTGRESQL_CLIENTID; without an id the system-assigned identity must be enabled",
                );
            }
            if code.contains("AADSTS700213") || reason.contains("AADSTS700213") {
                return problem(
                    "no federated credential matches the service account token (AADSTS700213)",
                    "add a federated credential for subject system:serviceaccount:<namespace>:<name> and \
                     issuer = the cluster's OIDC issuer URL to the identity (az identity federated-credential \
                     create)",
                );
            }
            if code.contains("AADSTS7000215") || reason.contains("AADSTS7000215") {
                return problem(
                    "the client secret is wrong or expired (AADSTS7000215)",
                    "create a new secret for the app registration and set AZURE_CLIENT_SECRET",
                );
            }
            if reason.contains("az login") {
                return problem(
                    "the Azure CLI is not signed in",
                    "run `az login` (and `az account set --subscription …`)",
                );
            }
            return problem(
                format!("the identity endpoint refused: {leaf}"),
                "check the identity's id, tenant and secret; the message above is the endpoint's",
            );
        }
    }
    if !leaves.is_empty() && leaves.iter().all(|l| l.is_unavailable()) {
        let tried: Vec<String> = leaves.iter().map(|l| format!("{l}")).collect();
        return problem(
            format!(
                "no identity endpoint or credential is available here (tried: {})",
                tried.join("; ")
            ),
            "on Azure, enable a managed identity on the VM / App Service, or workload identity on AKS; on a \
             laptop run `az login`; for a local emulator run `eval \"$(entra-pg emulate)\"` style exports \
             (AZURE_POD_IDENTITY_AUTHORITY_HOST points IMDS at it)",
        );
    }
    if let Some(TokenError::Config(text)) = leaves.iter().find(|l| matches!(l, TokenError::Config(_))) {
        return problem(
            format!("configuration error: {text}"),
            "fix the variable or flag named above",
        );
    }
    problem(
        format!("the identity endpoint failed: {}", entra_postgres::report(e)),
        "this is usually temporary (throttling, IMDS updating): retry in a minute; if it persists, check the \
         endpoint's health and that no proxy or firewall intercepts 169.254.169.254 or the token URL",
    )
}

/// The SQLSTATE of the first server error in an error's source chain.
pub(crate) fn sqlstate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(db) = e
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
        {
            return Some(db.code().code().to_string());
        }
        current = e.source();
    }
    None
}

/// The cause and fix of a failed sign-in or statement, from the error's full report and SQLSTATE.
/// `user` is the role signed in as; `token_name` the name the token's claims give, if any.
pub(crate) fn server_problem(
    report: &str,
    sqlstate: Option<&str>,
    user: &str,
    token_name: Option<&str>,
) -> Option<Problem> {
    let text = report;
    if text.contains("access token has expired") {
        return Some(problem(
            "the server says the token has expired, though it was just fetched: this machine's clock (or \
             the token's issuer's) is off",
            "synchronise the clock (timedatectl set-ntp true / chrony) and check the token's exp with \
             `entra-pg token --json`",
        ));
    }
    if text.contains("valid audience claim") {
        return Some(problem(
            "the token was issued for another resource (wrong audience)",
            "ask for the scope https://ossrdbms-aad.database.windows.net/.default (the default; sovereign \
             clouds use their own host) — check --scope and `entra-pg token --json`'s aud",
        ));
    }
    if text.contains("pg_hba.conf") && (text.contains("SSL off") || text.contains("no encryption")) {
        return Some(problem(
            "the server requires TLS and the connection did not use it",
            "use sslmode=verify-full (PGSSLMODE, AZURE_POSTGRESQL_SSL=true or sslmode= in the connection \
             string); never disable TLS with a token",
        ));
    }
    if text.contains("UnknownIssuer") || text.contains("unknown issuer") || text.contains("not trusted") {
        return Some(problem(
            "the server's certificate is not signed by a trusted root",
            "Azure chains to DigiCert Global Root G2 / Microsoft RSA Root CA 2017 (built in); for another \
             server set PGSSLROOTCERT (or sslrootcert=) to a PEM file of its CA",
        ));
    }
    if text.contains("NotValidForName") || text.contains("not valid for name") {
        return Some(problem(
            "the server's certificate does not name the host connected to",
            "connect with the server's own name (<server>.postgres.database.azure.com), not an IP address \
             or alias; use PoolBuilder::hostaddr / hostaddr= to pin an address while verifying the name",
        ));
    }
    if text.contains("CertExpired") || text.contains("certificate expired") {
        return Some(problem(
            "the server's certificate has expired (or this machine's clock is far off)",
            "check the clock; renew the server certificate",
        ));
    }
    if text.contains("Could not validate AAD user") {
        return Some(problem(
            "pgaadauth_create_principal could not find that name in the tenant",
            "use the exact display name (managed identity, group) or UPN (user), or create it by object id: \
             SELECT * FROM pgaadauth_create_principal_with_oid('<name>', '<object id>', 'service', false, false)",
        ));
    }
    let missing_function =
        sqlstate == Some("42883") || (text.contains("function") && text.contains("does not exist"));
    if missing_function && text.contains("pgaadauth") {
        return Some(problem(
            "the pgaadauth_* functions exist only in the `postgres` database",
            "connect to the database `postgres` to create principals (entra-pg grant does)",
        ));
    }
    if sqlstate == Some("28P01") || text.contains("password authentication failed") {
        let name_hint = match token_name {
            Some(name) if name != user => format!(
                " The token is for {name:?} but the user name is {user:?}: set PGUSER / AZURE_POSTGRESQL_USER \
                 to {name:?}."
            ),
            _ => String::new(),
        };
        let role = token_name.unwrap_or(user);
        let call = crate::sql::literal("name", role)
            .map(|l| format!("SELECT * FROM pgaadauth_create_principal({l}, false, false);"))
            .unwrap_or_default();
        let fix = match token_name {
            Some(name) if name != user => format!(
                "set PGUSER / AZURE_POSTGRESQL_USER (or user= in the connection string) to {name:?}; if that \
                 principal does not exist yet, as the Entra admin on the database `postgres`: {call}"
            ),
            _ => format!(
                "as the Entra admin, on the database `postgres`: {call} (or `entra-pg grant {role:?}`), then \
                 grant it the database"
            ),
        };
        return Some(problem(
            format!(
                "the server did not accept the token for role {user:?}: the user name must be exactly the \
                 identity's name (case-sensitive), and that principal must exist and not be dropped.{name_hint}"
            ),
            fix,
        ));
    }
    if sqlstate == Some("3D000") || (text.contains("database") && text.contains("does not exist")) {
        return Some(problem(
            "the database does not exist",
            "set PGDATABASE / AZURE_POSTGRESQL_DATABASE to an existing database (the default is postgres)",
        ));
    }
    if sqlstate == Some("42501") || text.contains("permission denied") {
        return Some(problem(
            format!("role {user:?} lacks a privilege"),
            format!("grant it: `entra-pg grant {user} --database <db>`"),
        ));
    }
    if text.contains("Connection refused") || text.contains("connection refused") {
        return Some(problem(
            "nothing accepts connections at that host and port",
            "check the host and port (5432; 6432 for the built-in PgBouncer), and that the server is running",
        ));
    }
    if text.contains("timed out") || text.contains("timeout") {
        return Some(problem(
            "the server did not answer in time",
            "check the server's firewall rules / private endpoint and this network's outbound 5432",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_failure_names_the_principal_call_and_the_right_user() {
        let p = server_problem(
            "db error: FATAL: password authentication failed for user \"wrong\"",
            Some("28P01"),
            "wrong",
            Some("orders-api"),
        )
        .unwrap();
        assert!(p.cause.contains("\"orders-api\""), "{p:?}");
        assert!(
            p.fix
                .contains("pgaadauth_create_principal('orders-api', false, false)"),
            "{p:?}"
        );
    }

    #[test]
    fn expired_token_points_at_the_clock() {
        let p = server_problem(
            "FATAL: The access token has expired. Please acquire",
            None,
            "a",
            None,
        )
        .unwrap();
        assert!(p.cause.contains("clock"), "{p:?}");
    }

    #[test]
    fn missing_function_points_at_the_postgres_database() {
        let p = server_problem(
            "db error: ERROR: function pgaadauth_create_principal(unknown, boolean, boolean) does not exist",
            Some("42883"),
            "admin",
            None,
        )
        .unwrap();
        assert!(p.fix.contains("`postgres`"), "{p:?}");
    }

    #[test]
    fn identity_not_found_is_told_apart_from_no_endpoint() {
        let not_found = TokenError::AuthenticationFailed {
            source_name: "imds".into(),
            reason: "Identity not found".into(),
            status: Some(400),
            error_code: Some("invalid_request".into()),
        };
        assert!(token_problem(&not_found).cause.contains("identity not found"));
        let none = TokenError::ChainFailed(vec![
            TokenError::unavailable("imds", "nothing listening"),
            TokenError::unavailable("azure-cli", "az not found"),
        ]);
        assert!(token_problem(&none).cause.contains("no identity endpoint"));
    }
}
