//! The configuration every run's pools start from, tables for the workloads (created as the superuser
//! over the server's unix socket) and the end-of-run check that every acknowledged write is there.

use std::time::Duration;

use entra_emulator::postgres::quote_ident;
use entra_emulator::{Emulator, TestPostgres};
use entra_postgres::EntraConfig;
use entra_token::{Env, HttpOptions, RefreshPolicy};
use tokio_postgres::Client;

use crate::error::LoadError;
use crate::workload::ROWS;

/// The configuration a run's pools use against `emulator`: its environment only, the refresh policy for
/// short-lived tokens, and token requests short enough that one never seems to hang (as `entra-pg`'s own
/// commands have them).
pub fn emulator_config(emulator: &Emulator) -> EntraConfig {
    EntraConfig::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(
            HttpOptions::default()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(20)),
        )
        .refresh_policy(RefreshPolicy::short_lived())
        .token_wait(Duration::from_secs(5))
}

/// The database pgbench and our direct point run use (pgbench's own schema, scale 1).
pub const PGBENCH_DB: &str = "pgbench";

/// A superuser session on `database` over the unix socket; its connection task runs on this runtime.
pub async fn superuser(pg: &TestPostgres, database: &str) -> Result<Client, LoadError> {
    let (client, connection) = pg
        .socket_config(database)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| LoadError::Superuser {
            database: database.to_string(),
            source,
        })?;
    tokio::spawn(async move {
        // Ends when the client drops; a failure shows up on the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates `accounts` (filled) and `ledger` in `database`, readable and writable by `role`.
pub async fn prepare_app_tables(pg: &TestPostgres, database: &str, role: &str) -> Result<(), LoadError> {
    let client = superuser(pg, database).await?;
    let role = quote_role(role)?;
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS accounts (id int PRIMARY KEY, balance bigint NOT NULL, name text NOT NULL);
         INSERT INTO accounts SELECT g, g * 10, 'account ' || g FROM generate_series(1, {ROWS}) g
           ON CONFLICT DO NOTHING;
         CREATE TABLE IF NOT EXISTS ledger (id bigserial PRIMARY KEY, run smallint NOT NULL, task int NOT NULL,
           seq bigint NOT NULL, amount bigint NOT NULL, UNIQUE (run, task, seq));
         GRANT SELECT ON accounts TO {role};
         GRANT SELECT, INSERT ON ledger TO {role};
         GRANT USAGE ON SEQUENCE ledger_id_seq TO {role};"
    );
    // VACUUM cannot share the implicit transaction of a multi-statement batch.
    for sql in [sql.as_str(), "VACUUM ANALYZE accounts"] {
        client
            .batch_execute(sql)
            .await
            .map_err(LoadError::query("creating the benchmark tables"))?;
    }
    Ok(())
}

/// Creates database `pgbench` with pgbench's tables at scale 1, as `pgbench -i -s 1` would, so the
/// direct run and `pgbench -S` read the very same rows.
pub async fn prepare_pgbench_db(pg: &TestPostgres) -> Result<(), LoadError> {
    let admin = superuser(pg, "postgres").await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&PGBENCH_DB])
        .await
        .map_err(LoadError::query(format!("looking for database {PGBENCH_DB}")))?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {PGBENCH_DB}"))
            .await
            .map_err(LoadError::query(format!("creating database {PGBENCH_DB}")))?;
    }
    let client = superuser(pg, PGBENCH_DB).await?;
    let sql = format!(
        "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history;
         CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88)) WITH (fillfactor = 100);
         CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84)) WITH (fillfactor = 100);
         CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84)) WITH (fillfactor = 100);
         CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
         INSERT INTO pgbench_branches VALUES (1, 0, NULL);
         INSERT INTO pgbench_tellers SELECT g, 1, 0, NULL FROM generate_series(1, 10) g;
         INSERT INTO pgbench_accounts SELECT g, 1, 0, '' FROM generate_series(1, {ROWS}) g;"
    );
    let vacuum = "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history";
    for sql in [sql.as_str(), vacuum] {
        client
            .batch_execute(sql)
            .await
            .map_err(LoadError::query("creating pgbench's tables"))?;
    }
    Ok(())
}

/// Lets `role` read pgbench's tables (for runs that sign in as the emulator's principal).
pub async fn grant_pgbench_tables(pg: &TestPostgres, role: &str) -> Result<(), LoadError> {
    let client = superuser(pg, PGBENCH_DB).await?;
    let role = quote_role(role)?;
    client
        .batch_execute(&format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        .await
        .map_err(LoadError::query("granting pgbench's tables"))
}

/// `role` as an identifier for the GRANTs.
fn quote_role(role: &str) -> Result<String, LoadError> {
    quote_ident(role).map_err(|source| LoadError::Emulator {
        action: "quote the role name",
        source,
    })
}

/// What the ledger holds for one run.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct WriteCheck {
    /// Writes whose COMMIT was acknowledged.
    pub acknowledged: u64,
    /// Acknowledged writes not found: must be 0.
    pub missing: u64,
    /// Rows of this run in the ledger (more than acknowledged only when a COMMIT's answer was lost).
    pub rows: u64,
}

/// Looks up every acknowledged `(task, seq)` of run `run_id` in `database`'s ledger.
pub async fn check_writes(
    pg: &TestPostgres,
    database: &str,
    run_id: i16,
    acked: &[(i32, i64)],
) -> Result<WriteCheck, LoadError> {
    let client = superuser(pg, database).await?;
    let tasks: Vec<i32> = acked.iter().map(|a| a.0).collect();
    let seqs: Vec<i64> = acked.iter().map(|a| a.1).collect();
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM ledger l JOIN unnest($2::int[], $3::int8[]) AS a(task, seq)
               ON l.run = $1 AND l.task = a.task AND l.seq = a.seq",
            &[&run_id, &tasks, &seqs],
        )
        .await
        .map_err(LoadError::query("checking the ledger"))?
        .get(0);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM ledger WHERE run = $1", &[&run_id])
        .await
        .map_err(LoadError::query("checking the ledger"))?
        .get(0);
    Ok(WriteCheck {
        acknowledged: acked.len() as u64,
        missing: (acked.len() as u64).saturating_sub(found.max(0) as u64),
        rows: rows.max(0) as u64,
    })
}
