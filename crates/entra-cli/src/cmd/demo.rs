//! `entra-pg demo`: a pool under load through many token rotations, against the local emulator.
//!
//! Tokens live a few seconds and connections retire after about two, so during the run every new
//! physical connection signs in with whatever token is current, the refresher renews it several times,
//! and the load never sees an error. The summary shows that with numbers.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use entra_emulator::Emulator;
use entra_postgres::{EntraPool, PoolBuilder};
use entra_token::{Env, RefreshPolicy};
use error_log::ErrorLog;
use indicatif::{ProgressBar, ProgressStyle};

use crate::exit::{CliError, Exit};
use crate::output::Style;

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to run the load, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    duration: u64,
    /// The pool's size.
    #[arg(long, value_name = "N", default_value_t = 16)]
    connections: usize,
    /// Concurrent tasks running queries (more than connections, so tasks wait for the pool).
    #[arg(long, value_name = "N", default_value_t = 64)]
    tasks: usize,
    /// Lifetime of each token the emulator issues, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    token_lifetime: u64,
    /// Retire connections after about this many milliseconds, so they are re-created on new tokens.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    max_lifetime_ms: u64,
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    errors: AtomicU64,
}

pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    if args.tasks == 0 || args.connections == 0 || args.duration == 0 || args.token_lifetime < 2 {
        return Err(CliError::new(
            Exit::Usage,
            "--tasks, --connections and --duration must be at least 1, --token-lifetime at least 2",
        ));
    }
    eprintln!("starting the local emulator (PostgreSQL, fake IMDS, Entra gate)…");
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(args.token_lifetime))
        .start()
        .await
        .map_err(|e| super::emulate::emulator_error(&e))?;
    let pool = PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(crate::source::http_options())
        .refresh_policy(RefreshPolicy::short_lived())
        .max_size(args.connections)
        .max_lifetime(Some(Duration::from_millis(args.max_lifetime_ms.max(100))))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .token_wait(Duration::from_secs(5))
        .build()
        .await?;
    let fetches_before = emulator.identity().token_requests();
    eprintln!(
        "running {} tasks on a pool of {} as {:?} for {} s; tokens live {} s…",
        args.tasks,
        args.connections,
        pool.user(),
        args.duration,
        args.token_lifetime
    );

    let counters = Arc::new(Counters::default());
    let errors = Arc::new(ErrorLog::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.tasks {
        workers.spawn(worker(pool.clone(), counters.clone(), errors.clone(), deadline));
    }
    progress(&pool, &counters, started, deadline).await;
    let mut latencies = Vec::new();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(mut own) => latencies.append(&mut own),
            Err(e) => {
                errors.note_extra();
                errors.push(format!("a load task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();

    let mut summary = Summary {
        queries: counters.queries.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed) + errors.extra(),
        token_fetches: emulator.identity().token_requests().max(fetches_before),
        rotations: pool
            .tokens()
            .map(|t| t.status().refreshes.saturating_sub(1))
            .unwrap_or(0),
        connections: emulator.gate().sessions().len(),
        elapsed,
        latencies_us: latencies,
    };
    print!("{}", summary.table(&args));
    let style = Style::stdout();
    if summary.errors == 0 {
        println!(
            "\n{} the pool outlived {} tokens with zero errors",
            style.ok(),
            summary.rotations + 1
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{} {} errors; the first ones:", style.fail(), summary.errors);
        for e in errors.first() {
            println!("  - {e}");
        }
        Err(CliError::silent(Exit::Failure))
    }
}

/// One task: queries until the deadline, timing each (pool checkout included), counting failures.
async fn worker(
    pool: EntraPool,
    counters: Arc<Counters>,
    errors: Arc<ErrorLog>,
    deadline: Instant,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(4096);
    let mut n: i64 = 0;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let result = async {
            let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
            let statement = client
                .prepare_cached("SELECT $1::int8 + 1")
                .await
                .map_err(|e| entra_postgres::report(&e))?;
            let row = client
                .query_one(&statement, &[&n])
                .await
                .map_err(|e| entra_postgres::report(&e))?;
            let got: i64 = row.get(0);
            if got != n + 1 {
                return Err(format!("wrong answer: {n} + 1 = {got}"));
            }
            Ok::<(), String>(())
        }
        .await;
        n += 1;
        match result {
            Ok(()) => {
                counters.queries.fetch_add(1, Ordering::Relaxed);
                latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                errors.push(e);
                // Do not spin on a persistent failure.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    latencies
}

/// A live line until the deadline: a bar on a terminal, a plain line every 5 s otherwise.
async fn progress(pool: &EntraPool, counters: &Counters, started: Instant, deadline: Instant) {
    let total = deadline.saturating_duration_since(started).as_secs();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}/{len} s  {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let rotations = || {
        pool.tokens()
            .map(|t| t.status().refreshes.saturating_sub(1))
            .unwrap_or(0)
    };
    let mut last_queries = 0;
    let mut last_tick = Instant::now();
    let mut last_line = Instant::now();
    let tick = if bar.is_some() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(tick.min(deadline - now)).await;
        let queries = counters.queries.load(Ordering::Relaxed);
        let rate = (queries - last_queries) as f64 / last_tick.elapsed().as_secs_f64().max(0.001);
        last_queries = queries;
        last_tick = Instant::now();
        let line = format!(
            "{rate:>7.0} queries/s   rotations {}   errors {}",
            rotations(),
            counters.errors.load(Ordering::Relaxed)
        );
        match &bar {
            Some(bar) => {
                bar.set_position(started.elapsed().as_secs().min(total));
                bar.set_message(line);
            }
            None if last_line.elapsed() >= Duration::from_secs(4) || Instant::now() >= deadline => {
                eprintln!("[{:>3} s] {line}", started.elapsed().as_secs());
                last_line = Instant::now();
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

struct Summary {
    queries: u64,
    errors: u64,
    token_fetches: usize,
    rotations: u64,
    connections: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Summary {
    fn table(&mut self, args: &DemoArgs) -> String {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| percentile(&self.latencies_us, p).map_or("-".to_string(), format_us);
        let rate = self.queries as f64 / self.elapsed.as_secs_f64().max(0.001);
        let rows = [
            ("queries", format!("{} ({rate:.0}/s)", self.queries)),
            ("errors", self.errors.to_string()),
            ("token fetches", self.token_fetches.to_string()),
            ("rotations", self.rotations.to_string()),
            ("connections created", self.connections.to_string()),
            ("latency p50", pct(50.0)),
            ("latency p99", pct(99.0)),
            ("latency p99.9", pct(99.9)),
        ];
        let mut out = format!(
            "\nentra-pg demo: {:.1} s, {} tasks, pool of {}, tokens live {} s, connections retire after ~{} ms\n\n",
            self.elapsed.as_secs_f64(),
            args.tasks,
            args.connections,
            args.token_lifetime,
            args.max_lifetime_ms
        );
        for (label, value) in rows {
            out.push_str(&format!("  {label:<20} {value}\n"));
        }
        out
    }
}

/// The `p`th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9 % of 1000 at rank 999 despite binary floating point.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn format_us(us: u32) -> String {
    if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

mod error_log {
    //! The first few error messages, kept without unbounded growth.
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    const KEPT: usize = 5;

    #[derive(Default)]
    pub(super) struct ErrorLog {
        first: Mutex<Vec<String>>,
        extra: AtomicU64,
    }

    impl ErrorLog {
        pub(super) fn push(&self, message: String) {
            if let Ok(mut first) = self.first.lock() {
                if first.len() < KEPT && !first.contains(&message) {
                    first.push(message);
                }
            }
        }

        /// Failures that were not counted by a worker (a task that panicked).
        pub(super) fn extra(&self) -> u64 {
            self.extra.load(Ordering::Relaxed)
        }

        pub(super) fn note_extra(&self) {
            self.extra.fetch_add(1, Ordering::Relaxed);
        }

        pub(super) fn first(&self) -> Vec<String> {
            self.first.lock().map(|f| f.clone()).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
