//! A [`ConnectionPlan`] as sqlx's `PgConnectOptions`: the same settings, the same TLS decision.

use entra_postgres::plan::{Roots, TlsChoice};
use entra_postgres::tls::{Verification, DIGICERT_GLOBAL_ROOT_CA_PEM};
use entra_postgres::{ConfigError, ConnectionPlan, SslMode};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The options every new connection gets, except the password (the current token, set per rotation).
///
/// sqlx differs from libpq in two ways, which this mapping handles by refusing or tightening, never by
/// loosening:
/// - sqlx *adds* an `sslrootcert` file to Mozilla's roots instead of replacing them. `verify-full` then
///   also trusts public CAs for the server's name, which is ordinary web PKI; but `verify-ca` would accept
///   any publicly trusted certificate for any name, so an explicit `verify-ca` is refused, and `require`
///   with a root file (which the plan verifies as `verify-ca`) is verified as `verify-full`.
/// - sqlx has no `hostaddr` and connects to one host: several hosts or a `hostaddr` are refused.
pub(crate) fn connect_options(plan: &ConnectionPlan) -> Result<PgConnectOptions, ConfigError> {
    let unsupported = |what: &str, problem: &str| ConfigError::Invalid {
        origin: "entra-sqlx".into(),
        value: what.into(),
        problem: problem.into(),
    };
    let host = match plan.hosts() {
        [host] => host.clone(),
        _ => {
            return Err(unsupported(
                &plan.hosts().join(","),
                "sqlx connects to one host: name a single host",
            ))
        }
    };
    if !plan.hostaddrs().is_empty() {
        return Err(unsupported(
            "hostaddr",
            "sqlx cannot connect to an address while verifying another name: drop hostaddr",
        ));
    }
    // Without TLS, a name carrying the token must resolve to loopback on every connection, which the
    // plan checks when it connects itself; sqlx resolves names on its own, unchecked.
    if plan.checks_addresses_of_names() {
        return Err(unsupported(
            &host,
            "with sslmode=disable and a token, sqlx would resolve this name itself, where it could lead off \
             the machine: give 127.0.0.1 or ::1 (or a unix-socket directory), or use TLS",
        ));
    }
    let role = plan.role().ok_or(ConfigError::Missing {
        setting: "user",
        how: "EntraConfig::user, PGUSER or AZURE_POSTGRESQL_USER (or let the token name it)",
    })?;
    let config = plan.config();
    let mut options = PgConnectOptions::new_without_pgpass()
        .port(plan.port())
        .username(role)
        .database(plan.dbname())
        .application_name(
            config
                .get_application_name()
                .unwrap_or(entra_postgres::plan::DEFAULT_APPLICATION_NAME),
        );
    options = if host.starts_with('/') {
        options.socket(&host)
    } else {
        options.host(&host)
    };
    if let Some(server_options) = config.get_options() {
        options = options
            .options(parse_server_options(server_options).map_err(|p| unsupported(server_options, &p))?);
    }
    tls(options, plan.tls(), &unsupported)
}

fn tls(
    options: PgConnectOptions,
    tls: &TlsChoice,
    unsupported: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<PgConnectOptions, ConfigError> {
    let with_roots = |options: PgConnectOptions| match &tls.roots {
        Roots::File { path, .. } => options.ssl_root_cert(path),
        // sqlx brings Mozilla's roots (webpki-roots); Azure also still chains to DigiCert Global Root CA.
        _ => options.ssl_root_cert_from_pem(DIGICERT_GLOBAL_ROOT_CA_PEM.as_bytes().to_vec()),
    };
    Ok(match tls.verification {
        None => options.ssl_mode(PgSslMode::Disable),
        Some(Verification::Full) => with_roots(options).ssl_mode(PgSslMode::VerifyFull),
        Some(Verification::ChainOnly) if tls.requested == SslMode::Require => {
            with_roots(options).ssl_mode(PgSslMode::VerifyFull)
        }
        Some(Verification::ChainOnly) => return Err(unsupported(
            "verify-ca",
            "with sqlx, verify-ca would accept any publicly trusted certificate (sqlx adds the root file \
                 to Mozilla's roots): use verify-full",
        )),
        Some(Verification::Unverified) => options.ssl_mode(PgSslMode::Require),
        Some(_) => {
            return Err(unsupported(
                tls.requested.as_str(),
                "a TLS mode this adapter does not know",
            ))
        }
    })
}

/// libpq's `options` (`-c name=value -c …`) as pairs.
fn parse_server_options(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let words = split_options(text);
    let mut words = words.iter().map(String::as_str);
    while let Some(word) = words.next() {
        let setting = match word.strip_prefix("-c") {
            Some("") => words.next().ok_or("`-c` without a setting")?,
            Some(rest) => rest,
            None => {
                return Err(format!(
                    "only `-c name=value` settings are supported, not {word:?}"
                ))
            }
        };
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("{setting:?} is not name=value"))?;
        pairs.push((name.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// The words of an `options` value as the server splits them (PostgreSQL's `pg_split_opts`): white
/// space separates words, and a backslash makes the next character part of the word. sqlx escapes the
/// same way when it writes the options back.
fn split_options(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut escaped = false;
    for c in text.chars() {
        if c.is_ascii_whitespace() && !escaped {
            words.extend(word.take());
            continue;
        }
        let current = word.get_or_insert_with(String::new);
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            escaped = false;
            current.push(c);
        }
    }
    words.extend(word);
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use entra_postgres::{parse_connection_string, PlanOptions};

    #[test]
    fn a_name_without_tls_is_refused_because_sqlx_resolves_it_unchecked() {
        let err = options("host=localhost sslmode=disable user=app").unwrap_err();
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        assert!(options("host=127.0.0.1 sslmode=disable user=app").is_ok());
        assert!(options("host=/var/run/postgresql user=app").is_ok());
    }

    #[test]
    fn options_are_split_as_the_server_splits_them() {
        assert_eq!(split_options("  -c a=b   -cx=y "), ["-c", "a=b", "-cx=y"]);
        assert_eq!(
            split_options(r"-c DateStyle=ISO,\ MDY"),
            ["-c", "DateStyle=ISO, MDY"]
        );
        assert_eq!(split_options(r"-c a=\\b"), ["-c", r"a=\b"]);
        assert_eq!(
            parse_server_options(r"-c search_path=a\ b -c x=1").unwrap(),
            [
                ("search_path".to_string(), "a b".to_string()),
                ("x".into(), "1".into())
            ]
        );
    }

    fn options(text: &str) -> Result<PgConnectOptions, ConfigError> {
        let plan = ConnectionPlan::new(&parse_connection_string(text).unwrap(), &PlanOptions::default())?;
        connect_options(&plan)
    }

    #[test]
    fn verify_full_is_explicit_because_sqlx_defaults_to_prefer() {
        let o = options("host=db.example.com user=app dbname=shop").unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(o.get_host(), "db.example.com");
        assert_eq!(o.get_username(), "app");
        assert_eq!(o.get_database(), Some("shop"));
    }

    #[test]
    fn require_verifies_and_verify_ca_is_refused() {
        let o = options("host=db.example.com user=app sslmode=require").unwrap();
        assert!(matches!(o.get_ssl_mode(), PgSslMode::VerifyFull));
        let ca = std::env::temp_dir().join(format!("entra-sqlx-test-{}.pem", std::process::id()));
        std::fs::write(&ca, DIGICERT_GLOBAL_ROOT_CA_PEM).unwrap();
        let o = options(&format!(
            "host=db.example.com user=app sslmode=require sslrootcert={}",
            ca.display()
        ))
        .unwrap();
        let _ = std::fs::remove_file(&ca);
        assert!(
            matches!(o.get_ssl_mode(), PgSslMode::VerifyFull),
            "tightened, not loosened"
        );
        assert!(options("host=db.example.com user=app sslmode=verify-ca").is_err());
    }

    #[test]
    fn what_sqlx_cannot_do_is_refused_with_a_reason() {
        assert!(options("host=a,b user=app").is_err());
        assert!(options("host=db.example.com hostaddr=10.0.0.1 user=app").is_err());
        let o = options("host=db.example.com user=app options='-c search_path=app -cstatement_timeout=5s'")
            .unwrap();
        assert_eq!(
            o.get_options(),
            Some("-c search_path=app -c statement_timeout=5s")
        );
    }
}
