//! `entra-pg bench`: the load benchmark of `entra_load::bench`, with its flags, table and files.

use std::process::ExitCode;

use entra_load::bench::BenchArgs;

use crate::exit::{CliError, Exit};

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    let report = entra_load::bench::run(args.config())
        .await
        .map_err(|e| CliError::new(Exit::Environment, e))?;
    print!("{}", report.table());
    match report.write(&args.out) {
        Ok((json, svg)) => println!("\n  results: {}\n  plot:    {}", json.display(), svg.display()),
        Err(e) => eprintln!("entra-pg: could not write the results: {e}"),
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
