//! `entra-pg`: the command-line companion of entra-pool.
//!
//! Each command composes the library crates and holds no logic they should own: `demo` shows a pool
//! surviving token rotations against the local emulator, `token` prints a token for psql and friends,
//! `psql` runs psql signed in with one, `doctor` walks the path from configuration to a query and says
//! what to fix, `grant` creates a principal and grants it a database, and `emulate` runs the emulator in
//! the foreground, and `proxy` signs clients in any language in with the current token.
#![forbid(unsafe_code)]

mod claims;
mod cmd;
mod exit;
mod output;
mod source;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;

/// Azure Database for PostgreSQL with Microsoft Entra ID tokens: demo, tokens, psql, doctor, grant and a
/// local emulator.
///
/// Configuration comes from the environment, as entra-pool's PoolBuilder::from_env reads it:
/// AZURE_POSTGRESQL_CONNECTIONSTRING > AZURE_POSTGRESQL_HOST/_PORT/_DATABASE/_USER/_CLIENTID/_SSL >
/// PGHOST/PGPORT/PGDATABASE/PGUSER/PGSSLMODE/PGSSLROOTCERT. Set RUST_LOG=entra_token=debug to trace.
#[derive(Debug, Parser)]
#[command(name = "entra-pg", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pool under load against the local emulator through many token rotations, then print a
    /// summary (exit 0 only with zero errors).
    #[command(after_help = EXIT_CODES_HELP)]
    Demo(cmd::demo::DemoArgs),
    /// Print an access token for the database (PGPASSWORD=$(entra-pg token) psql …), or with --json its
    /// expiry and claims (never the token).
    #[command(after_help = EXIT_CODES_HELP)]
    Token(cmd::token::TokenArgs),
    /// Run psql signed in with a fresh token (PGPASSWORD) and sslmode=verify-full; arguments after `--`
    /// go to psql.
    #[command(after_help = EXIT_CODES_HELP)]
    Psql(cmd::psql::PsqlArgs),
    /// Check configuration, identity endpoint, network, TLS, sign-in and a query, one step at a time,
    /// with the cause and the fix of the first failure.
    #[command(after_help = EXIT_CODES_HELP)]
    Doctor(cmd::doctor::DoctorArgs),
    /// As the Entra admin: create the principal for an identity (on `postgres`) and grant it a database's
    /// schema (connect, usage, read/write on tables and sequences, also for future ones).
    #[command(after_help = EXIT_CODES_HELP)]
    Grant(cmd::grant::GrantArgs),
    /// Run the local emulator (fake IMDS + PostgreSQL behind an Entra-checking gate) in the foreground and
    /// print the `export` lines that point clients at it; Ctrl-C stops it and deletes everything.
    #[command(after_help = EXIT_CODES_HELP)]
    Emulate(cmd::emulate::EmulateArgs),
    /// A local PostgreSQL front for clients in any language: psql, pgbench, a Python or Java service
    /// connect to it as to a local server, and it signs each session in upstream with the current token
    /// (TLS verified). Loopback and unix sockets only by default; health checks and metrics with
    /// --health-check; SIGTERM or Ctrl-C drains it, a second signal stops it at once.
    #[command(after_help = cmd::proxy::PROXY_EXIT_CODES_HELP)]
    Proxy(cmd::proxy::ProxyArgs),
    /// Benchmark: a pool under load through the gate with short-lived tokens, then directly and with
    /// pgbench; prints throughput and latency (rotation windows apart) and writes JSON and an SVG plot.
    #[command(after_help = EXIT_CODES_HELP)]
    Bench(entra_load::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("entra-pg: cannot start the async runtime: {e}");
            return ExitCode::from(exit::Exit::Environment as u8);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Token(args) => cmd::token::run(args).await,
            Command::Psql(args) => cmd::psql::run(args).await,
            Command::Doctor(args) => cmd::doctor::run(args).await,
            Command::Grant(args) => cmd::grant::run(args).await,
            Command::Emulate(args) => cmd::emulate::run(args).await,
            Command::Proxy(args) => cmd::proxy::run(args).await,
            Command::Bench(args) => cmd::bench::run(args).await,
        }
    });
    // Tasks still running (pool reapers, refreshers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            if !e.message.is_empty() {
                eprintln!("entra-pg: {}", e.message);
            }
            e.code()
        }
    }
}

/// Logs go to stderr, filtered by RUST_LOG (default: errors only, so output stays readable).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
