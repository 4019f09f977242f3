//! `entra-pg psql`: psql signed in with a fresh token, TLS verified.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use entra_postgres::Roots;
use entra_token::Env;

use crate::exit::{CliError, Exit};
use crate::source::IdentityArgs;

/// Where distributions keep the system's CA bundle (psql 15 and older cannot say `sslrootcert=system`).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Arguments of `psql`.
#[derive(Debug, Args)]
pub(crate) struct PsqlArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Let sslmode=require skip certificate verification (libpq's meaning without a root file). The
    /// token then goes to whoever answers at the server's address: for a server you trust by other means.
    #[arg(long)]
    danger_accept_unverified_tls: bool,
    /// The psql program to run.
    #[arg(long, default_value = "psql")]
    psql: String,
    /// Arguments for psql (after `--`), e.g. `-- -c 'SELECT 1'`.
    #[arg(last = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// psql's options that take a value (short and long), so that their values are not read as a database.
const VALUE_OPTIONS: &[&str] = &[
    "-c",
    "--command",
    "-d",
    "--dbname",
    "-f",
    "--file",
    "-h",
    "--host",
    "-L",
    "--log-file",
    "-o",
    "--output",
    "-p",
    "--port",
    "-P",
    "--pset",
    "-R",
    "--record-separator",
    "-T",
    "--table-attr",
    "-U",
    "--username",
    "-v",
    "--set",
    "--variable",
    "-F",
    "--field-separator",
];

/// The first psql argument that would send the token somewhere the plan did not choose: a host
/// (`-h`, `--host`), or a connection string as the database (`-d`, `--dbname`, or the first positional
/// argument: `host=… sslmode=disable`, `postgresql://…`), which would override the plan's host and TLS
/// mode while psql still sends `PGPASSWORD`.
fn overrides_target(args: &[String]) -> Option<&str> {
    let conninfo =
        |v: &str| v.contains('=') || v.starts_with("postgres://") || v.starts_with("postgresql://");
    let dangerous = |option: &str, value: &str| {
        matches!(option, "-h" | "--host") || (matches!(option, "-d" | "--dbname") && conninfo(value))
    };
    let mut positional = 0;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        i += 1;
        if let Some(long) = arg.strip_prefix("--").filter(|l| !l.is_empty()) {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (format!("--{name}"), Some(value)),
                None => (arg.to_string(), None),
            };
            if VALUE_OPTIONS.contains(&name.as_str()) {
                let value = inline.unwrap_or_else(|| {
                    i += 1;
                    args.get(i - 1).map_or("", String::as_str)
                });
                if dangerous(&name, value) {
                    return Some(arg);
                }
            }
        } else if let Some(group) = arg
            .strip_prefix('-')
            .filter(|g| !g.is_empty() && !g.starts_with('-'))
        {
            // A group of short flags (`-Atc`): the first that takes a value takes the rest of the group,
            // or the next argument.
            for (at, flag) in group.char_indices() {
                let name = format!("-{flag}");
                if VALUE_OPTIONS.contains(&name.as_str()) {
                    let rest = &group[at + flag.len_utf8()..];
                    let value = if rest.is_empty() {
                        i += 1;
                        args.get(i - 1).map_or("", String::as_str)
                    } else {
                        rest
                    };
                    if dangerous(&name, value) {
                        return Some(arg);
                    }
                    break;
                }
            }
        } else if arg != "--" {
            positional += 1;
            // psql's first positional argument is the database, which may be a connection string.
            if positional == 1 && conninfo(arg) {
                return Some(arg);
            }
        }
    }
    None
}

pub(crate) async fn run(args: PsqlArgs) -> Result<ExitCode, CliError> {
    if let Some(arg) = overrides_target(&args.args) {
        return Err(CliError::new(
            Exit::Usage,
            format!(
                "psql argument {arg:?} would send the token to a host, or with a TLS mode, the configuration did \
                 not choose: set the host and sslmode in the configuration (PGHOST, PGSSLMODE, a connection \
                 string), which entra-pg checks before psql runs"
            ),
        ));
    }
    let config = args
        .identity
        .config(&Env::process())
        .danger_accept_unverified_tls(args.danger_accept_unverified_tls);
    // The rules first: nothing is fetched for a configuration that may not be used.
    let plan = config.plan()?;
    let token = config.fetch_token().await?;
    let plan = plan.with_role_from(&token)?;
    // Kept alive until psql exits.
    let bundle = match (&plan.tls().roots, plan.tls().verification) {
        (Roots::BuiltIn, Some(_)) => Some(azure_bundle()?),
        _ => None,
    };
    let mut cmd = tokio::process::Command::new(&args.psql);
    cmd.args(&args.args)
        .env_remove("PGSERVICE")
        .env_remove("PGSSLROOTCERT");
    for (name, value) in plan.libpq_env(bundle.as_ref().map(|b| b.path())).await? {
        cmd.env(name, value);
    }
    cmd.env("PGPASSWORD", token.secret());
    let status = cmd.status().await.map_err(|e| {
        CliError::new(
            Exit::Environment,
            format!(
                "cannot run {:?}: {e}; install the PostgreSQL client (Debian/Ubuntu: apt-get install \
                 postgresql-client) or pass --psql PATH",
                args.psql
            ),
        )
    })?;
    drop(bundle);
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(Exit::Failure as u8),
    })
}

/// A CA file for libpq: the system's bundle (Mozilla's roots, which include DigiCert Global Root G2
/// and Microsoft RSA Root CA 2017) plus DigiCert Global Root CA, which Azure still uses in places.
fn azure_bundle() -> Result<tempfile::NamedTempFile, CliError> {
    let io = |e: std::io::Error| {
        CliError::new(
            Exit::Environment,
            format!("cannot write a temporary CA file: {e}"),
        )
    };
    let mut file = tempfile::Builder::new()
        .prefix("entra-pg-roots-")
        .suffix(".pem")
        .tempfile()
        .map_err(io)?;
    for path in SYSTEM_BUNDLES {
        if let Ok(pem) = std::fs::read(path) {
            file.write_all(&pem).map_err(io)?;
            file.write_all(b"\n").map_err(io)?;
            break;
        }
    }
    file.write_all(entra_postgres::tls::DIGICERT_GLOBAL_ROOT_CA_PEM.as_bytes())
        .map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn psql_arguments_that_change_the_host_or_tls_are_refused() {
        for refused in [
            &["-h", "db.example.com"][..],
            &["-hdb.example.com"],
            &["--host=db.example.com"],
            &["--host", "x"],
            &["host=db.example.com sslmode=disable"],
            &["postgresql://db.example.com/app"],
            &["-d", "host=x sslmode=disable"],
            &["--dbname=sslmode=disable"],
            &["-c", "SELECT 1", "host=x"],
            &["-Ath", "x"],
            &["-qd", "host=x"],
        ] {
            assert!(overrides_target(&args(refused)).is_some(), "{refused:?}");
        }
        for allowed in [
            &["-c", "SELECT a = 1"][..],
            &["-Atc", "SELECT 1"],
            &["-Atc", "SELECT a = 1"],
            &["-qAc", "SELECT 'host=x'", "appdb"],
            &["-v", "x=1", "-f", "a=b.sql"],
            &["appdb"],
            &["-d", "appdb", "-U", "someone"],
            &["--set=ON_ERROR_STOP=1", "-c", "SELECT 1"],
        ] {
            assert_eq!(overrides_target(&args(allowed)), None, "{allowed:?}");
        }
    }
}
