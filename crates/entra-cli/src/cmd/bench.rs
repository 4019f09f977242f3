//! `entra-pg bench`: the load benchmark of `entra_load::bench`, with its flags, table and files.

use std::process::ExitCode;

use entra_load::bench::{BenchArgs, BenchOutcome, BenchReport};
use entra_load::proxy_bench::ProxyBenchReport;
use entra_load::proxy_connect::ProxyConnectReport;
use entra_load::{Event, LoadError};

use crate::exit::{CliError, Exit};

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    match entra_load::bench::run_mode(args.config(), &show).await {
        Ok(BenchOutcome::Load(report)) => load(&report, &args),
        Ok(BenchOutcome::Proxy(report)) => proxy(&report, &args),
        Ok(BenchOutcome::ProxyConnect(report)) => proxy_connect(&report, &args),
        Err(LoadError::PgbenchMissing) => Err(CliError::new(
            Exit::Environment,
            "pgbench is not installed (Debian: postgresql-contrib); the proxy modes need it",
        )),
        Err(e) => Err(failed(&e)),
    }
}

/// The load benchmark: its table, its files and its first errors; exit 1 when a run failed.
fn load(report: &BenchReport, args: &BenchArgs) -> Result<ExitCode, CliError> {
    print!("{}", report.table());
    match report.write(&args.out) {
        Ok((json, svg)) => println!("\n  results: {}\n  plot:    {}", json.display(), svg.display()),
        Err(e) => eprintln!(
            "entra-pg: could not write the results: {}",
            entra_postgres::report(&e)
        ),
    }
    for r in report.runs.iter().filter(|r| !r.first_errors.is_empty()) {
        println!(
            "  first errors ({} #{}): {}",
            r.label,
            r.cycle + 1,
            r.first_errors.join(" | ")
        );
    }
    if report.failed() {
        Err(CliError::silent(Exit::Failure))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// `--mode proxy`: pgbench through the proxy against the same straight at the gate; its table and file.
fn proxy(report: &ProxyBenchReport, args: &BenchArgs) -> Result<ExitCode, CliError> {
    table_and_file(report.table(), report.write(&args.out))
}

/// `--mode proxy-connect`: `pgbench -C` through the proxy against the same straight at the gate; its
/// table and file.
fn proxy_connect(report: &ProxyConnectReport, args: &BenchArgs) -> Result<ExitCode, CliError> {
    table_and_file(report.table(), report.write(&args.out))
}

/// Prints a proxy benchmark's table, then where its results were written (or why they were not: the
/// figures are on the screen, so that is not a failure).
fn table_and_file(
    table: String,
    written: Result<std::path::PathBuf, LoadError>,
) -> Result<ExitCode, CliError> {
    print!("{table}");
    match written {
        Ok(path) => println!("\n  results: {}", path.display()),
        Err(e) => eprintln!(
            "entra-pg: could not write the results: {}",
            entra_postgres::report(&e)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The benchmark could not run: every cause, as an environment failure (exit 4).
fn failed(e: &LoadError) -> CliError {
    CliError::new(Exit::Environment, entra_postgres::report(e))
}

/// Each step of the run, as a line on stderr (stdout keeps the table).
fn show(event: Event) {
    eprintln!("{event}");
}
