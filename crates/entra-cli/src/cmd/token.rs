//! `entra-pg token`: one token on stdout, or its expiry and claims as JSON (never the token).

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use entra_token::Env;
use serde_json::{json, Value};

use crate::claims;
use crate::exit::CliError;
use crate::source::IdentityArgs;

/// Arguments of `token`.
#[derive(Debug, Args)]
pub(crate) struct TokenArgs {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Print the expiry and the decoded claims (aud, oid, appid, tid, upn, xms_mirid, dates) instead of
    /// the token; the token itself is never printed in this mode.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: TokenArgs) -> Result<ExitCode, CliError> {
    let config = args.identity.config(&Env::process());
    let source = config.build_token_source()?;
    let token = config.fetch_token().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let claims = claims::decode(token.secret()).map(|c| claims::shown(&c));
        let doc = json!({
            "source": source.name(),
            "scope": args.identity.scope,
            "expires_on": claims::system_time_to_rfc3339(token.expires_on()),
            "expires_in_secs": token.expires_in().as_secs(),
            "fingerprint": token.fingerprint().to_string(),
            "user": entra_postgres::token_user(token.secret()).ok().map(|u| u.name),
            "claims": claims.map(Value::Object).unwrap_or(Value::Null),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let _ = writeln!(out, "{text}");
    } else {
        let _ = writeln!(out, "{}", token.secret());
    }
    Ok(ExitCode::SUCCESS)
}
