//! A fleet of queue workers, each with its own pool and so its own token refresher, draining a `jobs`
//! table with `FOR UPDATE SKIP LOCKED`. It shows that the refreshers, though started together, renew at
//! different instants (the refresh policy's jitter), and that no job is done twice.
//!
//! ```sh
//! # against the in-process emulator, with 20-second tokens so renewals happen during the run
//! EMULATOR=1 cargo run --example worker_fleet
//! # knobs: WORKERS (4), JOBS (1000), WORK_MS (simulated work per job, 150)
//! EMULATOR=1 WORKERS=8 WORK_MS=100 cargo run --example worker_fleet
//! ```
//!
//! Against a real server (Service Connector's variables) it creates the tables `jobs` and `job_runs` if
//! missing and adds its jobs to them: point it at a scratch database.
//!
//! In production, one process usually shares one refresher between its pools
//! (`EntraConfig::token_handle`); separate processes each have their own, which is what the separate
//! pools here stand for.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig, EntraPool, PoolBuilder};
use entra_pool::token::{Env, RefreshPolicy, StartMode};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

/// Lifetime of the emulator's tokens: short, so each worker renews a few times during the run.
const EMULATOR_TOKEN_LIFETIME: Duration = Duration::from_secs(20);
/// Consecutive failures after which a worker gives up instead of retrying.
const MAX_CONSECUTIVE_ERRORS: u32 = 5;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("worker_fleet: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a valid number")),
        Err(_) => Ok(default),
    }
}

/// What the workers need to build their own pools.
struct Setup {
    env: Option<Env>,
    short_tokens: bool,
}

impl Setup {
    fn builder(&self, name: &str) -> PoolBuilder {
        let mut config = EntraConfig::from_env().application_name(name);
        if let Some(env) = &self.env {
            config = config.env(env.clone());
        }
        if self.short_tokens {
            config = config.refresh_policy(short_policy());
        }
        let builder = PoolBuilder::new(config).max_size(2);
        if !self.short_tokens {
            return builder;
        }
        // Retire connections well within a token's life, so new sign-ins keep happening and each one
        // has to use a renewed token.
        builder.max_lifetime(Some(Duration::from_secs(8)))
    }
}

/// The default policy assumes tokens of an hour or more (renew 5 min before expiry, stop serving 30 s
/// before): scaled down for 20-second tokens, renewal comes 5 s before expiry (15 s after the fetch),
/// moved earlier by up to 20 % of that wait at random.
fn short_policy() -> RefreshPolicy {
    RefreshPolicy::default()
        .refresh_margin(Duration::from_secs(5))
        .expiry_margin(Duration::from_secs(2))
        .jitter(0.2)
        .backoff(Duration::from_millis(200), Duration::from_secs(2))
        .get_timeout(Duration::from_secs(5))
        .min_invalidate_interval(Duration::from_millis(500))
        .start_mode(StartMode::FailFast)
}

async fn run() -> Result<(), String> {
    let workers: usize = env_number("WORKERS", 4)?;
    let jobs: i32 = env_number("JOBS", 1000)?;
    let work = Duration::from_millis(env_number("WORK_MS", 150)?);
    if workers == 0 || jobs <= 0 {
        return Err("WORKERS and JOBS must be at least 1".into());
    }

    // Kept until the end: dropping the emulator stops its server.
    let emulator = match std::env::var_os("EMULATOR") {
        Some(_) => Some(
            Emulator::builder()
                .token_lifetime(EMULATOR_TOKEN_LIFETIME)
                .start()
                .await
                .map_err(|e| report(&e))?,
        ),
        None => None,
    };
    let setup = Arc::new(Setup {
        env: emulator.as_ref().map(|e| Env::from_pairs(e.env_vars())),
        short_tokens: emulator.is_some(),
    });

    let admin = setup
        .builder("worker-fleet-setup")
        .build()
        .await
        .map_err(|e| report(&e))?;
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    seed(&admin, jobs).await?;
    println!("seeded {jobs} jobs (run {run_id}); starting {workers} workers, {work:?} of work per job");

    let start = Instant::now();
    // Every worker builds its pool first, then all start together: the refreshers' first fetches
    // coincide, so any spread in later renewals comes from the policy's jitter.
    let barrier = Arc::new(tokio::sync::Barrier::new(workers));
    let mut tasks = Vec::with_capacity(workers);
    for n in 0..workers {
        let setup = setup.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let pool = setup
                .builder(&format!("worker-{n}"))
                .build()
                .await
                .map_err(|e| format!("worker {n}: {}", report(&e)))?;
            let renewals = Arc::new(Mutex::new(Vec::new()));
            let watcher = watch_renewals(n, &pool, start, renewals.clone());
            barrier.wait().await;
            let outcome = work_queue(n, &pool, run_id, work).await;
            watcher.abort();
            pool.close();
            if let Some(tokens) = pool.tokens() {
                tokens.shutdown();
            }
            let renewals = renewals.lock().clone();
            outcome.map(|counts| (counts, renewals))
        }));
    }

    let mut results = Vec::with_capacity(workers);
    for task in tasks {
        results.push(task.await);
    }
    let mut done_total = 0u64;
    let mut duplicates_total = 0u64;
    let mut failures = Vec::new();
    println!("\nsummary after {:.1} s:", start.elapsed().as_secs_f64());
    for (n, result) in results.into_iter().enumerate() {
        match result {
            Ok(Ok((counts, renewals))) => {
                done_total += counts.done;
                duplicates_total += counts.duplicates;
                let instants: Vec<String> = renewals.iter().map(|t| format!("+{t:.2}s")).collect();
                println!(
                    "  worker {n}: {} jobs, {} duplicates refused, token renewed at [{}]",
                    counts.done,
                    counts.duplicates,
                    instants.join(", ")
                );
            }
            Ok(Err(message)) => failures.push(message),
            Err(e) => failures.push(format!("worker {n} panicked or was cancelled: {e}")),
        }
    }

    let client = admin.get().await.map_err(|e| report(&e))?;
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM job_runs WHERE run = $1", &[&run_id])
        .await
        .map_err(|e| report(&e))?
        .get(0);
    let left: i64 = client
        .query_one("SELECT count(*) FROM jobs WHERE NOT done", &[])
        .await
        .map_err(|e| report(&e))?
        .get(0);
    drop(client);
    println!(
        "  total: {done_total} jobs done, {recorded} recorded in job_runs, {left} left in the queue, \
         duplicates: {duplicates_total}"
    );
    if let Some(emulator) = &emulator {
        let stats = emulator.gate().stats();
        println!(
            "  gate: {} sign-ins accepted, {} refused; identity endpoint issued {} tokens",
            stats.accepted,
            stats.rejected_total(),
            emulator.identity().tokens_issued()
        );
    }
    admin.close();

    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    // Each job claimed once: the per-worker counts, the rows with a unique job id, and an empty queue agree.
    if duplicates_total != 0 || recorded != done_total as i64 || left != 0 {
        return Err(format!(
            "inconsistent queue: {done_total} done by workers, {recorded} recorded, {duplicates_total} \
             duplicates, {left} left"
        ));
    }
    Ok(())
}

async fn seed(pool: &EntraPool, jobs: i32) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| report(&e))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS jobs (
                 id bigserial PRIMARY KEY,
                 payload integer NOT NULL,
                 done boolean NOT NULL DEFAULT false
             );
             CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (id) WHERE NOT done;
             -- one row per job ever done: the primary key refuses a second worker doing the same job
             CREATE TABLE IF NOT EXISTS job_runs (
                 job_id bigint PRIMARY KEY REFERENCES jobs (id),
                 run bigint NOT NULL,
                 worker integer NOT NULL,
                 done_at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await
        .map_err(|e| format!("creating the tables: {}", report(&e)))?;
    client
        .execute(
            "INSERT INTO jobs (payload) SELECT g FROM generate_series(1, $1) AS g",
            &[&jobs],
        )
        .await
        .map_err(|e| format!("seeding the jobs: {}", report(&e)))?;
    Ok(())
}

/// Prints, and records as seconds since `start`, every renewal of the pool's token.
fn watch_renewals(
    worker: usize,
    pool: &EntraPool,
    start: Instant,
    renewals: Arc<Mutex<Vec<f64>>>,
) -> tokio::task::JoinHandle<()> {
    let Some(tokens) = pool.tokens() else {
        return tokio::spawn(async {});
    };
    let mut status = tokens.watch();
    tokio::spawn(async move {
        let mut seen = status.borrow_and_update().refreshes;
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            if now.refreshes > seen {
                seen = now.refreshes;
                let at = start.elapsed().as_secs_f64();
                renewals.lock().push(at);
                println!(
                    "[+{at:6.2}s] worker {worker}: token renewed ({}), usable for {:.1} s",
                    now.fingerprint.map(|f| f.to_string()).unwrap_or_default(),
                    now.usable_for().unwrap_or_default().as_secs_f64()
                );
            }
        }
    })
}

struct Counts {
    done: u64,
    duplicates: u64,
}

enum Step {
    Done,
    Duplicate,
    /// Every pending job is locked by another worker: wait for them to commit (or roll back).
    Busy,
    Empty,
}

async fn work_queue(worker: usize, pool: &EntraPool, run_id: i64, work: Duration) -> Result<Counts, String> {
    let mut counts = Counts {
        done: 0,
        duplicates: 0,
    };
    let mut errors = 0u32;
    loop {
        match take_one(worker, pool, run_id, work).await {
            Ok(Step::Done) => counts.done += 1,
            Ok(Step::Duplicate) => counts.duplicates += 1,
            Ok(Step::Busy) => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(Step::Empty) => return Ok(counts),
            Err(message) => {
                errors += 1;
                eprintln!("worker {worker}: {message} (attempt {errors} of {MAX_CONSECUTIVE_ERRORS})");
                if errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(format!("worker {worker} gave up: {message}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        errors = 0;
    }
}

async fn take_one(worker: usize, pool: &EntraPool, run_id: i64, work: Duration) -> Result<Step, String> {
    let mut client = pool.get().await.map_err(|e| report(&e))?;
    let tx = client.transaction().await.map_err(|e| report(&e))?;
    let claimed = tx
        .query_opt(
            "SELECT id FROM jobs WHERE done = false ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| report(&e))?;
    let Some(row) = claimed else {
        let pending: bool = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM jobs WHERE NOT done)", &[])
            .await
            .map_err(|e| report(&e))?
            .get(0);
        return Ok(if pending { Step::Busy } else { Step::Empty });
    };
    let id: i64 = row.get(0);
    // The job's work, done while holding the row lock so no other worker can claim it meanwhile.
    tokio::time::sleep(work).await;
    let recorded = tx
        .execute(
            "INSERT INTO job_runs (job_id, run, worker) VALUES ($1, $2, $3)",
            &[&id, &run_id, &(worker as i32)],
        )
        .await;
    match recorded {
        Ok(_) => {}
        // Dropping the transaction rolls it back; the job stays done by whoever recorded it first.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(Step::Duplicate),
        Err(e) => return Err(report(&e)),
    }
    tx.execute("UPDATE jobs SET done = true WHERE id = $1", &[&id])
        .await
        .map_err(|e| report(&e))?;
    tx.commit().await.map_err(|e| report(&e))?;
    Ok(Step::Done)
}
