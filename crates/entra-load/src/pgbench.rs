//! `pgbench -S -M prepared` against the same server, as the yardstick for the pool's own throughput; and
//! `pgbench -C`, a connection per transaction, for the price of a connect.

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
        .arg(duration.as_secs().max(1).to_string());
    let stdout = output(command, env, database).await?;
    parse_tps(&stdout).ok_or(LoadError::PgbenchOutput { stdout })
}

/// What a `pgbench -C` run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ConnectingRun {
    /// `latency average`: per transaction, the connect included, from its scheduled start (under `-R`).
    pub latency_ms: f64,
    /// `average connection time`: the connect alone.
    pub connection_ms: f64,
    /// Transactions per second, connects included.
    pub tps: f64,
}

/// Runs `pgbench -n -C -S -c C -j 2 [-R R] -T T` (a new connection for every transaction, `rate`
/// transactions per second in all, or as fast as it goes without one) on `database` wherever libpq's variables in `env` point it, and
/// returns its latency and tps; [`LoadError::PgbenchMissing`] when pgbench is not installed.
pub async fn run_connecting(
    env: &[(&str, String)],
    database: &str,
    clients: usize,
    duration: Duration,
    rate: Option<u32>,
) -> Result<ConnectingRun, LoadError> {
    let mut command = tokio::process::Command::new(program());
    command
        .args(["-n", "-C", "-S", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string());
    if let Some(rate) = rate {
        command.arg("-R").arg(rate.to_string());
    }
    command.arg("-T").arg(duration.as_secs().max(1).to_string());
    let stdout = output(command, env, database).await?;
    parse_connecting(&stdout).ok_or(LoadError::PgbenchOutput { stdout })
}

/// Runs `command` on `database` with `env`, and returns its stdout once it succeeded.
async fn output(
    mut command: tokio::process::Command,
    env: &[(&str, String)],
    database: &str,
) -> Result<String, LoadError> {
    command
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
    if !output.status.success() {
        return Err(LoadError::PgbenchFailed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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

/// The number after `<name> = ` on the line that starts with `name`.
fn value(output: &str, name: &str) -> Option<f64> {
    output.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.trim_start().strip_prefix('=')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The latency, connection time and tps of a `pgbench -C` run's summary.
fn parse_connecting(output: &str) -> Option<ConnectingRun> {
    Some(ConnectingRun {
        latency_ms: value(output, "latency average")?,
        connection_ms: value(output, "average connection time")?,
        tps: value(output, "tps")?,
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_connecting, parse_tps, ConnectingRun};

    #[test]
    fn reads_tps_without_connection_time() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 0.640 ms\n\
                   initial connection time = 45.1 ms\ntps = 24987.402118 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(24987.402118));
        assert_eq!(parse_tps("tps = abc (without initial connection time)"), None);
        assert_eq!(parse_tps("latency average = 1 ms"), None);
    }

    /// pgbench 15's summary of `-C -R 20`.
    #[test]
    fn reads_latency_connection_time_and_tps_of_a_connecting_run() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 61.254 ms\n\
                   latency stddev = 9.871 ms\nrate limit schedule lag: avg 2.125 (max 20.070) ms\n\
                   average connection time = 57.964 ms\ntps = 19.617 (including reconnection times)\n";
        assert_eq!(
            parse_connecting(out),
            Some(ConnectingRun {
                latency_ms: 61.254,
                connection_ms: 57.964,
                tps: 19.617
            })
        );
        assert_eq!(parse_connecting("latency average = 1 ms\n"), None);
    }
}
