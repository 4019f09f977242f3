//! `entra-pg bench` (and `cargo bench --bench load`): N tasks over a pool of C connections for T
//! seconds through the emulator's gate with short-lived tokens, then the same load directly against the
//! server with a static password, then `pgbench -S` against the same server, so the cost of the gate
//! and of the pool are told apart.
//!
//! Latency is classed by one-second window: a window holds a rotation when the refresher renewed the
//! token in it. The results go to stdout as a table, and to `--out` as JSON and an SVG plot.

mod pgbench;
mod plot;
mod setup;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use deadpool_postgres::Pool;
use entra_emulator::Emulator;
use entra_postgres::PoolBuilder;
use entra_token::{Env, RefreshPolicy, TokenHandle};
use serde_json::json;

use crate::exit::{CliError, Exit};
use stats::{format_us, Percentiles, RunStats, Sample};
use workload::{Mix, Workload};

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Concurrent tasks running operations (more than connections, so tasks wait for the pool).
    #[arg(long, value_name = "N", default_value_t = 64)]
    tasks: usize,
    /// The pool's size (and pgbench's -c).
    #[arg(long, value_name = "N", default_value_t = 16)]
    connections: usize,
    /// Seconds each run lasts (the gate run, the direct run and pgbench's).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    duration: u64,
    /// Lifetime of each token the emulator issues, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    token_lifetime: u64,
    /// Retire gate connections after about this many milliseconds (default: the token lifetime), so
    /// new connections sign in with new tokens throughout the run.
    #[arg(long, value_name = "MS")]
    max_lifetime_ms: Option<u64>,
    /// What each operation does.
    #[arg(long, value_enum, default_value_t = Mix::Point)]
    mix: Mix,
    /// Directory for the JSON result and the SVG plot.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    out: PathBuf,
    /// Skip the pgbench run.
    #[arg(long)]
    no_pgbench: bool,
    /// Skip the direct run (and so pgbench too).
    #[arg(long)]
    no_direct: bool,
}

/// What one run (through the gate or direct) produced.
struct RunResult {
    label: &'static str,
    stats: RunStats,
    /// When the token was renewed, in ms from the run's start (gate run only).
    rotations_ms: Vec<u32>,
    first_error: Option<String>,
    writes: Option<setup::WriteCheck>,
    /// Gate run only: token rotations, token fetches and connections signed in, during the whole run.
    rotations: Option<u64>,
    token_fetches: Option<u64>,
    connections_created: Option<u64>,
}

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, CliError> {
    if args.tasks == 0 || args.connections == 0 || args.duration == 0 || args.token_lifetime < 2 {
        return Err(CliError::new(
            Exit::Usage,
            "--tasks, --connections and --duration must be at least 1, --token-lifetime at least 2",
        ));
    }
    let duration = Duration::from_secs(args.duration);
    eprintln!("starting the local emulator (PostgreSQL, fake IMDS, Entra gate)…");
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(args.token_lifetime))
        .start()
        .await
        .map_err(|e| crate::cmd::emulate::emulator_error(&e))?;
    let pg = emulator.postgres().clone();
    setup::prepare_app_tables(&pg, emulator.dbname(), emulator.user())
        .await
        .map_err(|e| CliError::new(Exit::Environment, e))?;

    let gate = run_gate(&args, &emulator, duration).await?;
    let mut runs = vec![gate];

    let mut pgbench_tps = None;
    if !args.no_direct {
        // The point mix reads pgbench's own table with pgbench's query, so the direct run and
        // `pgbench -S` are compared like for like.
        let (database, point_sql) = if args.mix == Mix::Point {
            setup::prepare_pgbench_db(&pg)
                .await
                .map_err(|e| CliError::new(Exit::Environment, e))?;
            (setup::PGBENCH_DB.to_string(), workload::PGBENCH_POINT)
        } else {
            (emulator.dbname().to_string(), workload::ACCOUNTS_POINT)
        };
        let pool = PoolBuilder::from_env()
            .env(Env::from_pairs([(
                "PGSSLROOTCERT",
                pg.ca_path().display().to_string(),
            )]))
            .host(pg.host())
            .port(pg.port())
            .dbname(database.clone())
            .user(pg.superuser())
            .static_password(pg.superuser_password())
            .max_size(args.connections)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .await?;
        let workload = Workload {
            mix: args.mix,
            point_sql,
            run_id: 2,
        };
        eprintln!("direct run: same load against PostgreSQL itself (superuser, static password)…");
        let driven = drive(pool.pool(), None, &workload, args.tasks, duration).await;
        drop(pool);
        let writes = check(&args, &pg, &database, 2, &driven.acked).await?;
        runs.push(RunResult {
            label: "direct",
            stats: driven.stats,
            rotations_ms: Vec::new(),
            first_error: driven.first_error,
            writes,
            rotations: None,
            token_fetches: None,
            connections_created: None,
        });
        if args.mix == Mix::Point && !args.no_pgbench {
            eprintln!(
                "pgbench -S -M prepared -c {} -j 2 -T {}…",
                args.connections, args.duration
            );
            pgbench_tps = pgbench::run(&pg, args.connections, duration)
                .await
                .map_err(|e| CliError::new(Exit::Environment, e))?;
            if pgbench_tps.is_none() {
                eprintln!("pgbench is not installed (Debian: postgresql-contrib); skipping it");
            }
        }
    }

    print!("{}", table(&args, &runs, pgbench_tps));
    match write_results(&args, &runs, pgbench_tps) {
        Ok((json_path, svg_path)) => {
            println!(
                "\n  results: {}\n  plot:    {}",
                json_path.display(),
                svg_path.display()
            );
        }
        Err(e) => eprintln!("entra-pg: could not write the results: {e}"),
    }
    let failed = runs
        .iter()
        .any(|r| r.stats.errors > 0 || r.writes.is_some_and(|w| w.missing > 0));
    for r in runs.iter().filter(|r| r.first_error.is_some()) {
        println!(
            "  first error ({}): {}",
            r.label,
            r.first_error.as_deref().unwrap_or_default()
        );
    }
    if failed {
        Err(CliError::silent(Exit::Failure))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// The load through the gate, with a token refresher renewing tokens of `--token-lifetime`.
async fn run_gate(args: &BenchArgs, emulator: &Emulator, duration: Duration) -> Result<RunResult, CliError> {
    let max_lifetime = Duration::from_millis(
        args.max_lifetime_ms
            .unwrap_or(args.token_lifetime * 1000)
            .max(100),
    );
    let pool = PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(crate::source::http_options())
        .refresh_policy(RefreshPolicy::short_lived())
        .max_size(args.connections)
        .max_lifetime(Some(max_lifetime))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .token_wait(Duration::from_secs(5))
        .build()
        .await?;
    let sessions_before = emulator.gate().sessions().len();
    let refreshes_before = pool.tokens().map_or(0, |t| t.status().refreshes);
    let workload = Workload {
        mix: args.mix,
        point_sql: workload::ACCOUNTS_POINT,
        run_id: 1,
    };
    eprintln!(
        "gate run: {} tasks on a pool of {} as {:?}, {} mix, {} s, tokens live {} s, connections retire after ~{} ms…",
        args.tasks,
        args.connections,
        pool.user(),
        args.mix.name(),
        args.duration,
        args.token_lifetime,
        max_lifetime.as_millis()
    );
    let driven = drive(pool.pool(), pool.tokens(), &workload, args.tasks, duration).await;
    let refreshes = pool.tokens().map_or(0, |t| t.status().refreshes);
    let token_fetches = emulator.identity().token_requests() as u64;
    let connections_created = emulator.gate().sessions().len().saturating_sub(sessions_before) as u64;
    // Stop the refresher and the connections before the next run, so they cost it nothing.
    if let Some(tokens) = pool.tokens() {
        tokens.shutdown();
    }
    drop(pool);
    let writes = check(args, emulator.postgres(), emulator.dbname(), 1, &driven.acked).await?;
    Ok(RunResult {
        label: "gate",
        stats: driven.stats,
        rotations_ms: driven.rotations_ms,
        first_error: driven.first_error,
        writes,
        rotations: Some(refreshes.saturating_sub(refreshes_before)),
        token_fetches: Some(token_fetches),
        connections_created: Some(connections_created),
    })
}

async fn check(
    args: &BenchArgs,
    pg: &entra_emulator::TestPostgres,
    database: &str,
    run_id: i16,
    acked: &[(i32, i64)],
) -> Result<Option<setup::WriteCheck>, CliError> {
    if !args.mix.writes() {
        return Ok(None);
    }
    setup::check_writes(pg, database, run_id, acked)
        .await
        .map(Some)
        .map_err(|e| CliError::new(Exit::Failure, e))
}

/// What [`drive`] measured.
struct Driven {
    stats: RunStats,
    rotations_ms: Vec<u32>,
    first_error: Option<String>,
    /// `(task, seq)` of every write whose COMMIT was acknowledged.
    acked: Vec<(i32, i64)>,
}

/// Runs `tasks` tasks on `pool` for `duration`, watching `tokens` for rotations.
async fn drive(
    pool: &Pool,
    tokens: Option<&TokenHandle>,
    workload: &Workload,
    tasks: usize,
    duration: Duration,
) -> Driven {
    warm_up(pool, tasks).await;
    let started = Instant::now();
    let deadline = started + duration;
    let monitor = tokens.map(|t| tokio::spawn(watch_rotations(t.watch(), started, deadline)));
    let workload = Arc::new(workload.clone());
    let mut set = tokio::task::JoinSet::new();
    for id in 0..tasks {
        set.spawn(workload::task(
            pool.clone(),
            workload.clone(),
            id as i32,
            started,
            deadline,
        ));
    }
    let progress = tokio::spawn(progress(started, deadline, tokens.cloned()));
    let mut samples: Vec<Sample> = Vec::new();
    let mut errors_ms = Vec::new();
    let mut first_error = None;
    let mut acked = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(mut out) => {
                samples.append(&mut out.samples);
                errors_ms.append(&mut out.errors_ms);
                if first_error.is_none() {
                    first_error = out.first_error;
                }
                acked.extend(out.acked.iter().map(|&seq| (out.task, seq)));
            }
            Err(e) => {
                errors_ms.push(duration.as_millis().min(u32::MAX as u128) as u32);
                first_error.get_or_insert(format!("a load task failed: {e}"));
            }
        }
    }
    // Operations in flight at the deadline finish after it; they count in the last window.
    let elapsed = started.elapsed().max(duration);
    progress.abort();
    let rotations_ms = match monitor {
        Some(handle) => handle.await.unwrap_or_default(),
        None => Vec::new(),
    };
    Driven {
        stats: RunStats::analyse(&samples, &errors_ms, &rotations_ms, elapsed),
        rotations_ms,
        first_error,
        acked,
    }
}

/// Opens the pool's connections before the clock starts, so the first window does not pay for them.
async fn warm_up(pool: &Pool, tasks: usize) {
    let size = pool.status().max_size.min(tasks.max(1));
    let mut held = Vec::with_capacity(size);
    for _ in 0..size {
        match tokio::time::timeout(Duration::from_secs(10), pool.get()).await {
            Ok(Ok(client)) => held.push(client),
            // The run itself will count and report the failure.
            _ => break,
        }
    }
}

/// The instants (ms from `started`) at which the refresher renewed the token, until `deadline`.
async fn watch_rotations(
    mut rx: tokio::sync::watch::Receiver<entra_token::TokenStatus>,
    started: Instant,
    deadline: Instant,
) -> Vec<u32> {
    let mut last = rx.borrow_and_update().refreshes;
    let mut at = Vec::new();
    let deadline = tokio::time::Instant::from_std(deadline);
    while let Ok(Ok(())) = tokio::time::timeout_at(deadline, rx.changed()).await {
        let refreshes = rx.borrow_and_update().refreshes;
        if refreshes > last {
            last = refreshes;
            at.push(started.elapsed().as_millis().min(u32::MAX as u128) as u32);
        }
    }
    at
}

/// A line on stderr every 10 s, so a long run shows it is alive.
async fn progress(started: Instant, deadline: Instant, tokens: Option<TokenHandle>) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if Instant::now() >= deadline {
            return;
        }
        let refreshes = tokens.as_ref().map(|t| t.status().refreshes.to_string());
        eprintln!(
            "  [{:>3} s] token refreshes so far: {}",
            started.elapsed().as_secs(),
            refreshes.as_deref().unwrap_or("- (static password)")
        );
    }
}

fn percentiles_json(p: &Percentiles) -> serde_json::Value {
    json!({ "count": p.count, "p50_us": p.p50, "p99_us": p.p99, "p999_us": p.p999 })
}

fn run_json(r: &RunResult) -> serde_json::Value {
    json!({
        "throughput_per_s": r.stats.throughput(),
        "operations": r.stats.ops,
        "errors": r.stats.errors,
        "first_error": r.first_error,
        "elapsed_s": r.stats.elapsed.as_secs_f64(),
        "latency_all": percentiles_json(&r.stats.all),
        "latency_rotation_windows": percentiles_json(&r.stats.rotation),
        "latency_other_windows": percentiles_json(&r.stats.rest),
        "p99_rotation_over_rest": r.stats.p99_ratio(),
        "rotation_windows": r.stats.windows.iter().filter(|w| w.rotation).count(),
        "rotations": r.rotations,
        "rotations_at_ms": r.rotations_ms,
        "token_fetches": r.token_fetches,
        "connections_created": r.connections_created,
        "writes": r.writes.map(|w| json!({
            "acknowledged": w.acknowledged, "missing": w.missing, "rows": w.rows
        })),
        "windows": r.stats.windows.iter().map(|w| json!({
            "ops": w.ops, "errors": w.errors, "p99_us": w.p99_us, "rotation": w.rotation
        })).collect::<Vec<_>>(),
    })
}

/// Writes `load-<timestamp>.json` and `.svg` to `--out`; returns their paths.
fn write_results(
    args: &BenchArgs,
    runs: &[RunResult],
    pgbench_tps: Option<f64>,
) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| format!("creating {}: {e}", args.out.display()))?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .map_err(|e| e.to_string())?;
    let json_path = args.out.join(format!("load-{stamp}.json"));
    let svg_path = args.out.join(format!("load-{stamp}.svg"));
    let direct = runs.iter().find(|r| r.label == "direct");
    let gate = runs.iter().find(|r| r.label == "gate");
    let document = json!({
        "config": {
            "tasks": args.tasks, "connections": args.connections, "duration_s": args.duration,
            "token_lifetime_s": args.token_lifetime, "max_lifetime_ms": args.max_lifetime_ms,
            "mix": args.mix.name(), "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        },
        "runs": runs.iter().map(|r| (r.label.to_string(), run_json(r))).collect::<serde_json::Map<_, _>>(),
        "pgbench_tps": pgbench_tps,
        "direct_over_pgbench": ratio(direct.map(|d| d.stats.throughput()), pgbench_tps),
        "gate_over_direct": ratio(gate.map(|g| g.stats.throughput()), direct.map(|d| d.stats.throughput())),
    });
    let text = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text).map_err(|e| format!("writing {}: {e}", json_path.display()))?;
    if let Some(gate) = gate {
        let title = format!(
            "gate, {} mix, tokens live {} s",
            args.mix.name(),
            args.token_lifetime
        );
        plot::draw(&svg_path, &title, &gate.stats.windows)?;
    }
    Ok((json_path, svg_path))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// How one table row shows a run.
type Cell = Box<dyn Fn(&RunResult) -> String>;

/// The summary for a person: one column per run, then the ratios.
fn table(args: &BenchArgs, runs: &[RunResult], pgbench_tps: Option<f64>) -> String {
    let mut out = format!(
        "\nentra-pg bench: {} mix, {} tasks, pool of {}, {} s per run, tokens live {} s\n\n",
        args.mix.name(),
        args.tasks,
        args.connections,
        args.duration,
        args.token_lifetime
    );
    out.push_str(&format!("  {:<34}", ""));
    for r in runs {
        out.push_str(&format!("{:>16}", r.label));
    }
    out.push('\n');
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<(&str, Cell)> = vec![
        (
            "throughput (ops/s)",
            Box::new(|r| format!("{:.0}", r.stats.throughput())),
        ),
        ("operations", Box::new(|r| r.stats.ops.to_string())),
        ("errors", Box::new(|r| r.stats.errors.to_string())),
        ("latency p50", Box::new(|r| format_us(r.stats.all.p50))),
        ("latency p99", Box::new(|r| format_us(r.stats.all.p99))),
        ("latency p99.9", Box::new(|r| format_us(r.stats.all.p999))),
        (
            "p99 in rotation windows",
            Box::new(|r| format_us(r.stats.rotation.p99)),
        ),
        (
            "p99.9 in rotation windows",
            Box::new(|r| format_us(r.stats.rotation.p999)),
        ),
        ("p99 in other windows", Box::new(|r| format_us(r.stats.rest.p99))),
        (
            "p99.9 in other windows",
            Box::new(|r| format_us(r.stats.rest.p999)),
        ),
        (
            "p99 rotation / rest",
            Box::new(|r| r.stats.p99_ratio().map_or("-".into(), |x| format!("{x:.2}"))),
        ),
        (
            "rotation windows",
            Box::new(|r| {
                format!(
                    "{}/{}",
                    r.stats.windows.iter().filter(|w| w.rotation).count(),
                    r.stats.windows.len()
                )
            }),
        ),
        ("token rotations", Box::new(move |r| opt(r.rotations))),
        ("token fetches", Box::new(move |r| opt(r.token_fetches))),
        (
            "connections created",
            Box::new(move |r| opt(r.connections_created)),
        ),
        (
            "acknowledged writes",
            Box::new(move |r| opt(r.writes.map(|w| w.acknowledged))),
        ),
        (
            "acknowledged writes missing",
            Box::new(move |r| opt(r.writes.map(|w| w.missing))),
        ),
    ];
    for (label, cell) in &rows {
        out.push_str(&format!("  {label:<34}"));
        for r in runs {
            out.push_str(&format!("{:>16}", cell(r)));
        }
        out.push('\n');
    }
    let direct = runs
        .iter()
        .find(|r| r.label == "direct")
        .map(|r| r.stats.throughput());
    let gate = runs
        .iter()
        .find(|r| r.label == "gate")
        .map(|r| r.stats.throughput());
    out.push('\n');
    if let Some(tps) = pgbench_tps {
        out.push_str(&format!("  pgbench -S -M prepared tps          {tps:.0}\n"));
        if let Some(x) = ratio(direct, pgbench_tps) {
            out.push_str(&format!("  ours direct / pgbench               {x:.3}\n"));
        }
        if let Some(x) = ratio(gate, pgbench_tps) {
            out.push_str(&format!("  ours through the gate / pgbench     {x:.3}\n"));
        }
    }
    if let Some(x) = ratio(gate, direct) {
        out.push_str(&format!("  through the gate / direct           {x:.3}\n"));
    }
    out
}
