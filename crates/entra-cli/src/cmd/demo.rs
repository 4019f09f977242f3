//! `entra-pg demo`: a pool under load through many token rotations, against the local emulator.
//!
//! Tokens live a few seconds and connections retire after about two, so during the run every new
//! physical connection signs in with whatever token is current, the refresher renews it several times,
//! and the load never sees an error. The summary shows that with numbers.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use entra_emulator::Emulator;
use entra_load::stats::{format_us, RunStats};
use entra_load::{Event, Live, Mix, Workload};
use entra_postgres::{EntraPool, PoolBuilder};
use entra_token::{Env, RefreshPolicy};
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
    /// Halfway through, a failover drill: the server restarts (every session dies, as when a primary
    /// vanishes) and the gate accepts nothing for --failover-pause seconds, then comes back on the same
    /// name; the summary says which statements failed and how long the pool took to serve again.
    #[arg(long)]
    failover: bool,
    /// How long the gate stays away during the drill.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    failover_pause: u64,
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

    let live = Arc::new(Live::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let workload = Workload::new(Mix::Echo, entra_load::workload::ACCOUNTS_POINT, 1);
    let target = entra_load::Target::Checkout(pool.pool().clone());
    let run = entra_load::drive(
        &target,
        pool.tokens(),
        &workload,
        args.tasks,
        Duration::from_secs(args.duration),
        live.clone(),
    );
    let drill = async {
        match args.failover {
            true => Some(
                entra_load::failover::drill(
                    &emulator,
                    &live,
                    Duration::from_secs(args.duration) / 2,
                    Duration::from_secs(args.failover_pause),
                    &show,
                )
                .await,
            ),
            false => None,
        }
    };
    let (driven, (), drill) = tokio::join!(run, progress(&pool, &live, started, deadline), drill);

    let summary = Summary {
        errors: driven.stats.errors,
        token_fetches: emulator.identity().token_requests().max(fetches_before),
        rotations: pool
            .tokens()
            .map(|t| t.status().refreshes.saturating_sub(1))
            .unwrap_or(0),
        connections: emulator.gate().sessions().len(),
        stats: driven.stats,
    };
    print!("{}", summary.table(&args));
    let style = Style::stdout();
    if let Some(drill) = drill {
        let drill = drill.map_err(|e| {
            CliError::new(
                Exit::Failure,
                format!("the failover drill failed: {}", entra_postgres::report(&e)),
            )
        })?;
        println!(
            "\nfailover drill: the server restarted and the gate was away {} s",
            drill.pause.as_secs()
        );
        println!(
            "  {:<20} {} while the server was away (statements and sign-ins in flight when it went), {} before, {} after it served again",
            "errors",
            drill.errors,
            drill.errors_before,
            drill.errors_after(summary.errors)
        );
        println!(
            "  {:<20} {:.1} s after the failure, {} ms after the gate came back",
            "served again",
            drill.recovered_after.as_secs_f64(),
            drill.served_after_return.as_millis()
        );
        println!(
            "  {:<20} {} during the drill",
            "token fetches", drill.token_fetches
        );
        if drill.only_in_flight_failed(summary.errors) {
            println!(
                "\n{} only statements in flight failed; the pool served again by itself",
                style.ok()
            );
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "\n{} {} errors outside the drill; the first ones:",
            style.fail(),
            summary.errors
        );
        for e in &driven.first_errors {
            println!("  - {e}");
        }
        return Err(CliError::silent(Exit::Failure));
    }
    if summary.errors == 0 {
        println!(
            "\n{} the pool outlived {} tokens with zero errors",
            style.ok(),
            summary.rotations + 1
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\n{} {} errors; the first ones:", style.fail(), summary.errors);
        for e in &driven.first_errors {
            println!("  - {e}");
        }
        Err(CliError::silent(Exit::Failure))
    }
}

/// A step of the run (the failover drill's), as a line on stderr.
fn show(event: Event) {
    eprintln!("{event}");
}

/// A live line until the deadline: a bar on a terminal, a plain line every 5 s otherwise.
async fn progress(pool: &EntraPool, live: &Live, started: Instant, deadline: Instant) {
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
        let queries = live.ops();
        let rate = (queries - last_queries) as f64 / last_tick.elapsed().as_secs_f64().max(0.001);
        last_queries = queries;
        last_tick = Instant::now();
        let line = format!(
            "{rate:>7.0} queries/s   rotations {}   errors {}",
            rotations(),
            live.errors()
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
    errors: u64,
    token_fetches: usize,
    rotations: u64,
    connections: usize,
    stats: RunStats,
}

impl Summary {
    fn table(&self, args: &DemoArgs) -> String {
        let all = &self.stats.all;
        let rows = [
            (
                "queries",
                format!("{} ({:.0}/s)", self.stats.ops, self.stats.throughput()),
            ),
            ("errors", self.errors.to_string()),
            ("token fetches", self.token_fetches.to_string()),
            ("rotations", self.rotations.to_string()),
            ("connections created", self.connections.to_string()),
            ("latency p50", format_us(all.p50)),
            ("latency p99", format_us(all.p99)),
            ("latency p99.9", format_us(all.p999)),
        ];
        let mut out = format!(
            "\nentra-pg demo: {:.1} s, {} tasks, pool of {}, tokens live {} s, connections retire after ~{} ms\n\n",
            self.stats.elapsed.as_secs_f64(),
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
