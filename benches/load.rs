//! The load benchmark: `cargo bench --bench load -- [entra-pg bench flags]`.
//!
//! The very engine `entra-pg bench` runs (`entra_load::bench`), linked here: the same flags, table, JSON and
//! plot. See BENCHMARKS.md for the commands and the results.

use std::process::ExitCode;

use clap::Parser;
use entra_load::bench::BenchArgs;

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "entra-pool's load benchmark (the flags of `entra-pg bench`)"
)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; `cargo test --benches` passes `--test` (nothing to run then).
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(args);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Each step of the run as a line on stderr, as `entra-pg bench` shows it.
    let show = |event: entra_load::Event| eprintln!("{event}");
    let result = runtime.block_on(entra_load::bench::run(cli.bench.config(), &show));
    match result {
        Ok(report) => {
            print!("{}", report.table());
            match report.write(&cli.bench.out) {
                Ok((json, svg)) => println!("\n  results: {}\n  plot:    {}", json.display(), svg.display()),
                Err(e) => eprintln!(
                    "load bench: could not write the results: {}",
                    entra_postgres::report(&e)
                ),
            }
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("load bench: {}", entra_postgres::report(&e));
            ExitCode::FAILURE
        }
    }
}
