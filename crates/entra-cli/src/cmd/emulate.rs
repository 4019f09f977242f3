//! `entra-pg emulate`: the local emulator in the foreground, until Ctrl-C or SIGTERM.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use entra_emulator::Emulator;

use crate::exit::{CliError, Exit};

/// Arguments of `emulate`.
#[derive(Debug, Args)]
pub(crate) struct EmulateArgs {
    /// Lifetime of the tokens the fake identity endpoint issues, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    token_lifetime: u64,
    /// The identity's name (the role to sign in as).
    #[arg(long, default_value = "entra-app")]
    principal: String,
    /// The database created for it.
    #[arg(long, default_value = "appdb")]
    database: String,
}

pub(crate) async fn run(args: EmulateArgs) -> Result<ExitCode, CliError> {
    // Install the handlers before starting anything, so a signal during start-up is not lost and the
    // emulator is always dropped (server stopped, files deleted) on the way out.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::new(Exit::Environment, format!("cannot handle SIGTERM: {e}")))?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| CliError::new(Exit::Environment, format!("cannot handle SIGHUP: {e}")))?;
    let emulator = start(&args).await?;

    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", emulator.shell_exports());
    let _ = writeln!(
        out,
        "# emulator ready: principal {:?}, database {:?}, gate {}:{}, tokens live {} s",
        emulator.user(),
        emulator.dbname(),
        emulator.host(),
        emulator.port(),
        args.token_lifetime
    );
    let _ = writeln!(
        out,
        "# in another shell, paste the export lines above, then: PGPASSWORD=$(entra-pg token) psql"
    );
    let _ = writeln!(
        out,
        "# or: entra-pg psql   |   entra-pg doctor   |   Ctrl-C to stop"
    );
    let _ = out.flush();
    drop(out);

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = hangup.recv() => {}
    }
    eprintln!("entra-pg: stopping the emulator");
    // Dropping stops the gate, the fake endpoints and the server and deletes their files.
    drop(emulator);
    Ok(ExitCode::SUCCESS)
}

async fn start(args: &EmulateArgs) -> Result<Emulator, CliError> {
    Emulator::builder()
        .token_lifetime(Duration::from_secs(args.token_lifetime.max(1)))
        .principal_name(&args.principal)
        .database(&args.database)
        .start()
        .await
        .map_err(|e| emulator_error(&e))
}

/// An emulator that could not start: the message says what to install or fix.
pub(crate) fn emulator_error(e: &entra_emulator::EmulatorError) -> CliError {
    CliError::new(
        Exit::Environment,
        format!(
            "the local emulator could not start: {}",
            entra_postgres::report(e)
        ),
    )
}
