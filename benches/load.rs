//! The load benchmark: `cargo bench --bench load -- [entra-pg bench flags]`.
//!
//! The engine lives in the CLI (`entra-pg bench`, crates/entra-cli/src/load.rs) so both entry points run
//! the very same code; a root-package bench cannot link a binary crate's modules, so this builds
//! `entra-pg` in release mode and runs `entra-pg bench` with the arguments given after `--`, its output
//! streamed. See BENCHMARKS.md for the flags and the results.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; `cargo test --benches` passes `--test` (nothing to run then).
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return ExitCode::SUCCESS;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "entra-cli",
            "--bin",
            "entra-pg",
        ])
        .current_dir(&root)
        .status();
    match built {
        Ok(status) if status.success() => {}
        Ok(status) => {
            eprintln!("load bench: `cargo build --release -p entra-cli` failed ({status})");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!(
                "load bench: cannot run cargo ({}): {e}",
                PathBuf::from(&cargo).display()
            );
            return ExitCode::FAILURE;
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let binary = target.join("release").join("entra-pg");
    match Command::new(&binary)
        .arg("bench")
        .args(&args)
        .current_dir(&root)
        .status()
    {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("load bench: entra-pg bench ended with {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("load bench: cannot run {}: {e}", binary.display());
            ExitCode::FAILURE
        }
    }
}
