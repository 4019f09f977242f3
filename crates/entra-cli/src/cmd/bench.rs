//! `entra-pg bench`: the load benchmark of `entra_load::bench`, with its flags, table and files.

use std::process::ExitCode;

use entra_load::bench::{BenchArgs, Mode};
use entra_load::proxy_bench::ProxyBenchConfig;
use entra_load::{Event, LoadError};

use crate::exit::{CliError, Exit};

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    let config = args.config();
    if config.mode == Mode::Proxy {
        return proxy(
            ProxyBenchConfig::new(config.connections, config.run_duration, config.cycles),
            &args,
        )
        .await;
    }
    let report = entra_load::bench::run(args.config(), &show)
        .await
        .map_err(|e| failed(&e))?;
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

/// `--mode proxy`: pgbench through the proxy against the same straight at the gate.
async fn proxy(config: ProxyBenchConfig, args: &BenchArgs) -> Result<ExitCode, CliError> {
    let report = match entra_load::proxy_bench::run(config, &show).await {
        Ok(report) => report,
        Err(LoadError::PgbenchMissing) => {
            return Err(CliError::new(
                Exit::Environment,
                "pgbench is not installed (Debian: postgresql-contrib); the proxy mode needs it",
            ))
        }
        Err(e) => return Err(failed(&e)),
    };
    print!("{}", report.table());
    let write = || -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(&args.out)?;
        let path = args.out.join(format!(
            "proxy-{}.json",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        ));
        std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)?;
        Ok(path)
    };
    match write() {
        Ok(path) => println!("\n  results: {}", path.display()),
        Err(e) => eprintln!("entra-pg: could not write the results: {e}"),
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
