//! `pgbench -S -M prepared` against the same server, as the yardstick for the pool's own throughput.

use std::process::Stdio;
use std::time::Duration;

use entra_emulator::TestPostgres;

use crate::error::LoadError;
use crate::setup::PGBENCH_DB;

/// Runs `pgbench -n -S -M prepared -c C -j 2 -T T` over TCP + verify-full TLS as the superuser and
/// returns its tps (without initial connection time); [`LoadError::PgbenchMissing`] when pgbench is not
/// installed.
pub async fn run(pg: &TestPostgres, connections: usize, duration: Duration) -> Result<f64, LoadError> {
    let server = [
        ("PGHOST", pg.host().to_string()),
        ("PGPORT", pg.port().to_string()),
        ("PGUSER", pg.superuser().to_string()),
        ("PGPASSWORD", pg.superuser_password().to_string()),
        ("PGSSLMODE", "verify-full".to_string()),
        ("PGSSLROOTCERT", pg.ca_path().display().to_string()),
    ];
    run_with(&server, PGBENCH_DB, connections, duration).await
}

/// Runs `pgbench -n -S -M prepared -c C -j 2 -T T` on `database` wherever libpq's variables in `env`
/// point it (a server, the gate, a proxy) and returns its tps (without initial connection time);
/// [`LoadError::PgbenchMissing`] when pgbench is not installed.
pub async fn run_with(
    env: &[(&str, String)],
    database: &str,
    connections: usize,
    duration: Duration,
) -> Result<f64, LoadError> {
    let mut command = tokio::process::Command::new(program());
    command
        .args(["-n", "-S", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(connections.to_string())
        .arg("-T")
        .arg(duration.as_secs().max(1).to_string())
        .arg(database)
        .env_remove("PGSERVICE")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = match command.output().await {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::PgbenchMissing),
        Err(e) => return Err(LoadError::PgbenchSpawn(e)),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(LoadError::PgbenchFailed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    parse_tps(&stdout).ok_or_else(|| LoadError::PgbenchOutput {
        stdout: stdout.into_owned(),
    })
}

/// `pgbench` as the emulator's clients finder has it (PATH, else the PostgreSQL installation).
fn program() -> std::path::PathBuf {
    entra_emulator::clients::pg_program("pgbench").unwrap_or_else(|| "pgbench".into())
}

/// The tps of `tps = 1234.5 (without initial connection time)`.
fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .filter(|l| l.contains("without initial connection time"))
        .find_map(|l| l.split('=').nth(1)?.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_tps;

    #[test]
    fn reads_tps_without_connection_time() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 0.640 ms\n\
                   initial connection time = 45.1 ms\ntps = 24987.402118 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(24987.402118));
        assert_eq!(parse_tps("tps = abc (without initial connection time)"), None);
        assert_eq!(parse_tps("latency average = 1 ms"), None);
    }
}
