//! Finding the clients we did not write, which tests run against the emulator: PostgreSQL's own
//! (`psql`, `pgbench`) and a Python with Microsoft's packages.

use std::path::PathBuf;
use std::process::Command;

use crate::postgres::PgBinaries;

/// A PostgreSQL client program (`psql`, `pgbench`…): from `PATH`, else from the PostgreSQL installation
/// the emulator uses (Debian keeps `pgbench` only in `/usr/lib/postgresql/N/bin`). `None` when neither
/// has it.
pub fn pg_program(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        PgBinaries::find()
            .ok()
            .map(|b| b.program(name))
            .filter(|p| p.is_file())
    })
}

/// A Python interpreter that can import every module in `modules`: `ENTRA_PYTHON` if set, else the
/// pinned environment `.ci/setup` creates in the workspace (`target/py-interop`). `None` when neither
/// can.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("ENTRA_PYTHON").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/py-interop/bin/python"
        ))),
    ];
    let import = format!("import {}", modules.join(", "));
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", &import])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Says that a test skips part of itself, and why, where `cargo test` shows it: straight to the process's
/// stderr, which the test harness does not capture (it captures only `print!`/`eprint!`), so a skip is
/// visible in CI's log even when the test passes.
pub fn skip(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}
