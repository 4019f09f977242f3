//! The query mixes and the load tasks that run them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rand::Rng;

use crate::drive::Live;
use crate::stats::Sample;

/// Rows in the point-lookup tables (pgbench's scale 1).
pub const ROWS: i32 = 100_000;

/// What each operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Mix {
    /// `SELECT $1::int8 + 1` with the answer checked (the demo's query).
    Echo,
    /// `SELECT 1`.
    Select1,
    /// A prepared primary-key lookup on a 100k-row table.
    Point,
    /// `BEGIN; INSERT … RETURNING id; COMMIT`, every acknowledged row checked at the end.
    Write,
    /// 80 % point lookups, 10 % `SELECT 1`, 10 % writes.
    Mixed,
}

impl Mix {
    /// The name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Echo => "echo",
            Mix::Select1 => "select1",
            Mix::Point => "point",
            Mix::Write => "write",
            Mix::Mixed => "mixed",
        }
    }

    /// Whether the mix writes rows that are checked at the end.
    pub fn writes(self) -> bool {
        matches!(self, Mix::Write | Mix::Mixed)
    }
}

/// Where one run's operations go.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Workload {
    /// What each operation does.
    pub mix: Mix,
    /// The prepared point lookup, `$1` an id in 1..=ROWS.
    pub point_sql: &'static str,
    /// Tags this run's ledger rows, so the check counts only its own.
    pub run_id: i16,
}

impl Workload {
    /// `mix` with `point_sql` as the point lookup, its ledger rows tagged `run_id`.
    pub fn new(mix: Mix, point_sql: &'static str, run_id: i16) -> Workload {
        Workload {
            mix,
            point_sql,
            run_id,
        }
    }
}

/// The point lookup on our `accounts` table.
pub const ACCOUNTS_POINT: &str = "SELECT balance FROM accounts WHERE id = $1";
/// pgbench's `-S` query (`SELECT abalance FROM pgbench_accounts WHERE aid = :aid`).
pub const PGBENCH_POINT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";

const INSERT_SQL: &str = "INSERT INTO ledger (run, task, seq, amount) VALUES ($1, $2, $3, $4) RETURNING id";

/// What one task saw.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct TaskOutcome {
    /// The task's number.
    pub task: i32,
    /// Every acknowledged operation.
    pub samples: Vec<Sample>,
    /// When each failed operation failed, in ms since the start.
    pub errors_ms: Vec<u32>,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// Sequence numbers of the writes whose COMMIT was acknowledged.
    pub acked: Vec<i64>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Echo,
    Select1,
    Point,
    Write,
}

/// One task: operations back to back until `deadline`, timing each (pool checkout included).
pub async fn task(
    pool: Target,
    workload: Arc<Workload>,
    live: Arc<Live>,
    task_id: i32,
    started: Instant,
    deadline: Instant,
) -> TaskOutcome {
    let mut out = TaskOutcome {
        task: task_id,
        samples: Vec::with_capacity(8192),
        ..TaskOutcome::default()
    };
    let mut seq: i64 = 0;
    while Instant::now() < deadline {
        let op = pick(workload.mix);
        let t0 = Instant::now();
        let result = run_op(&pool, &workload, op, task_id, seq).await;
        let done = Instant::now();
        let at_ms = done.duration_since(started).as_millis().min(u32::MAX as u128) as u32;
        match result {
            Ok(()) => {
                if matches!(op, Op::Write) {
                    out.acked.push(seq);
                }
                live.ops.fetch_add(1, Ordering::Relaxed);
                let latency = done.duration_since(t0).as_micros().min(u32::MAX as u128) as u32;
                out.samples.push(Sample {
                    at_ms,
                    latency_us: latency,
                });
            }
            Err(e) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                out.errors_ms.push(at_ms);
                out.first_error.get_or_insert(e);
                // Do not spin on a persistent failure.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if matches!(op, Op::Write | Op::Echo) {
            seq += 1;
        }
    }
    out
}

fn pick(mix: Mix) -> Op {
    match mix {
        Mix::Echo => Op::Echo,
        Mix::Select1 => Op::Select1,
        Mix::Point => Op::Point,
        Mix::Write => Op::Write,
        Mix::Mixed => match rand::rng().random_range(0..10) {
            0 => Op::Select1,
            1 => Op::Write,
            _ => Op::Point,
        },
    }
}

/// Where a load's operations go: a checkout pool, or a multiplexed one (whose writes, being transactions,
/// take a connection from its checkout pool).
#[derive(Debug, Clone)]
pub enum Target {
    /// `pool.get()` per operation.
    Checkout(Pool),
    /// Statements pipelined on a few shared connections.
    Multiplexed(entra_postgres::MultiplexedPool),
}

impl Target {
    pub(crate) fn checkout_pool(&self) -> &Pool {
        match self {
            Target::Checkout(pool) => pool,
            Target::Multiplexed(m) => m.checkout().pool(),
        }
    }
}

async fn run_op(target: &Target, workload: &Workload, op: Op, task: i32, seq: i64) -> Result<(), String> {
    let report = |e: &(dyn std::error::Error + 'static)| entra_postgres::report(e);
    if let (Target::Multiplexed(m), false) = (target, matches!(op, Op::Write)) {
        return multiplexed_op(m, workload, op, seq).await;
    }
    let mut client = target.checkout_pool().get().await.map_err(|e| report(&e))?;
    match op {
        Op::Echo => {
            let n = seq;
            let statement = client
                .prepare_cached("SELECT $1::int8 + 1")
                .await
                .map_err(|e| report(&e))?;
            let row = client
                .query_one(&statement, &[&n])
                .await
                .map_err(|e| report(&e))?;
            match row.try_get::<_, i64>(0) {
                Ok(got) if got == n + 1 => Ok(()),
                other => Err(format!("wrong answer: {n} + 1 = {other:?}")),
            }
        }
        Op::Select1 => {
            let statement = client.prepare_cached("SELECT 1").await.map_err(|e| report(&e))?;
            let row = client.query_one(&statement, &[]).await.map_err(|e| report(&e))?;
            match row.try_get::<_, i32>(0) {
                Ok(1) => Ok(()),
                other => Err(format!("SELECT 1 returned {other:?}")),
            }
        }
        Op::Point => {
            let id: i32 = rand::rng().random_range(1..=ROWS);
            let statement = client
                .prepare_cached(workload.point_sql)
                .await
                .map_err(|e| report(&e))?;
            match client.query_opt(&statement, &[&id]).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no row for id {id}: the table was not filled")),
                Err(e) => Err(report(&e)),
            }
        }
        Op::Write => {
            let tx = client.transaction().await.map_err(|e| report(&e))?;
            let statement = tx.prepare_cached(INSERT_SQL).await.map_err(|e| report(&e))?;
            let amount: i64 = rand::rng().random_range(1..=1000);
            tx.query_one(&statement, &[&workload.run_id, &task, &seq, &amount])
                .await
                .map_err(|e| report(&e))?;
            tx.commit().await.map_err(|e| report(&e))
        }
    }
}

async fn multiplexed_op(
    pool: &entra_postgres::MultiplexedPool,
    workload: &Workload,
    op: Op,
    seq: i64,
) -> Result<(), String> {
    let report = |e: &(dyn std::error::Error + 'static)| entra_postgres::report(e);
    match op {
        Op::Echo => {
            let row = pool
                .query_one("SELECT $1::int8 + 1", &[&seq])
                .await
                .map_err(|e| report(&e))?;
            match row.try_get::<_, i64>(0) {
                Ok(got) if got == seq + 1 => Ok(()),
                other => Err(format!("wrong answer: {seq} + 1 = {other:?}")),
            }
        }
        Op::Select1 => {
            let row = pool.query_one("SELECT 1", &[]).await.map_err(|e| report(&e))?;
            match row.try_get::<_, i32>(0) {
                Ok(1) => Ok(()),
                other => Err(format!("SELECT 1 returned {other:?}")),
            }
        }
        Op::Point => {
            let id: i32 = rand::rng().random_range(1..=ROWS);
            match pool.query_opt(workload.point_sql, &[&id]).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(format!("no row for id {id}: the table was not filled")),
                Err(e) => Err(report(&e)),
            }
        }
        Op::Write => Err("writes run in a transaction on the checkout pool".into()),
    }
}
