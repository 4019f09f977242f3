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

pub(crate) async fn run(args: PsqlArgs) -> Result<ExitCode, CliError> {
    let builder = args
        .identity
        .builder(&Env::process())
        .danger_accept_unverified_tls(args.danger_accept_unverified_tls);
    // The rules first: nothing is fetched for a configuration that may not be used.
    let plan = builder.plan()?;
    let token = builder.fetch_token().await?;
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
