//! `entra-pg psql`: psql signed in with a fresh token, TLS verified.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use entra_postgres::{PoolBuilder, SslMode};
use entra_token::Env;

use crate::exit::{CliError, Exit};
use crate::source::{self, IdentityArgs};

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
    /// The psql program to run.
    #[arg(long, default_value = "psql")]
    psql: String,
    /// Arguments for psql (after `--`), e.g. `-- -c 'SELECT 1'`.
    #[arg(last = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub(crate) async fn run(args: PsqlArgs) -> Result<ExitCode, CliError> {
    let env = Env::process();
    let settings = PoolBuilder::from_env().env(env.clone()).resolve()?;
    let host = settings
        .hosts
        .as_ref()
        .map(|h| h.value.join(","))
        .ok_or_else(|| CliError::new(Exit::Usage, "no server host: set PGHOST or AZURE_POSTGRESQL_HOST"))?;
    let source = source::build(&args.identity, &env)?;
    let token = source::fetch_once(source.as_ref(), &args.identity.scope)
        .await
        .map_err(|e| {
            let p = crate::diagnose::token_problem(&e);
            CliError::new(
                source::token_exit(&e),
                format!(
                    "no token: {}\n  cause: {}\n  fix:   {}",
                    entra_postgres::report(&e),
                    p.cause,
                    p.fix
                ),
            )
        })?;
    let user = match &settings.user {
        Some(u) => u.value.clone(),
        None => entra_postgres::user_from_token(token.secret())
            .map(|(u, _)| u)
            .ok_or_else(|| CliError::new(Exit::Usage, "no user: set PGUSER to the identity's name"))?,
    };
    let sslmode = settings.sslmode.as_ref().map(|s| s.value).unwrap_or_default();
    if sslmode == SslMode::Disable && !host.split(',').all(entra_postgres::tls::is_local_host) {
        return Err(CliError::new(
            Exit::Usage,
            "refusing to send a token without TLS to a remote host: use sslmode=verify-full",
        ));
    }

    let mut cmd = tokio::process::Command::new(&args.psql);
    cmd.args(&args.args)
        .env("PGHOST", &host)
        .env("PGUSER", &user)
        .env("PGSSLMODE", sslmode.as_str())
        .env("PGPASSWORD", token.secret())
        .env_remove("PGSERVICE");
    if let Some(port) = &settings.port {
        cmd.env("PGPORT", port.value.to_string());
    }
    if let Some(db) = &settings.dbname {
        cmd.env("PGDATABASE", &db.value);
    }
    if let Some(addrs) = &settings.hostaddrs {
        let list: Vec<String> = addrs.value.iter().map(ToString::to_string).collect();
        cmd.env("PGHOSTADDR", list.join(","));
    }
    if let Some(app) = &settings.application_name {
        cmd.env("PGAPPNAME", &app.value);
    }
    if let Some(options) = &settings.options {
        cmd.env("PGOPTIONS", &options.value);
    }
    // Kept alive until psql exits.
    let _bundle = match &settings.sslrootcert {
        Some(path) => {
            cmd.env("PGSSLROOTCERT", &path.value);
            None
        }
        None if matches!(sslmode, SslMode::VerifyFull | SslMode::VerifyCa) => {
            let file = azure_bundle()?;
            cmd.env("PGSSLROOTCERT", file.path());
            Some(file)
        }
        None => None,
    };
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
