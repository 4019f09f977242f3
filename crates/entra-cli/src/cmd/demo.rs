//! `entra-pg demo`: the demo of `entra_load::demo`, with its flags, its progress and its summary.
//!
//! Tokens live a few seconds and connections retire after about two, so during the run every new
//! physical connection signs in with whatever token is current, the refresher renews it several times,
//! and the load never sees an error. The summary shows that with numbers.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::Args;
use entra_load::demo::{DemoConfig, Verdict};
use entra_load::{Event, LoadError};
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

impl DemoArgs {
    /// The demo these flags describe; progress as often as `progress_every`.
    fn config(&self, progress_every: Duration) -> DemoConfig {
        let mut config = DemoConfig::default();
        config.tasks = self.tasks;
        config.connections = self.connections;
        config.duration = Duration::from_secs(self.duration);
        config.token_lifetime = Duration::from_secs(self.token_lifetime);
        config.max_lifetime = Duration::from_millis(self.max_lifetime_ms);
        config.failover_pause = self.failover.then(|| Duration::from_secs(self.failover_pause));
        config.progress_every = progress_every;
        config
    }
}

pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, CliError> {
    let terminal = std::io::stderr().is_terminal();
    // A bar moves smoothly on a terminal; a log gets a line every 5 s.
    let progress_every = Duration::from_millis(if terminal { 500 } else { 5000 });
    let screen = Screen {
        terminal,
        bar: OnceLock::new(),
    };
    let report = entra_load::demo::run(args.config(progress_every), &|e| screen.show(e)).await;
    screen.finish();
    let report = report.map_err(failed)?;

    print!("{}", report.table());
    let style = Style::stdout();
    match report.verdict() {
        Verdict::ZeroErrors { tokens } => {
            println!(
                "\n{} the pool outlived {tokens} tokens with zero errors",
                style.ok()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::OnlyInFlightFailed => {
            println!(
                "\n{} only statements in flight failed; the pool served again by itself",
                style.ok()
            );
            Ok(ExitCode::SUCCESS)
        }
        Verdict::DrillFailed(e) => Err(CliError::new(
            Exit::Failure,
            format!("the failover drill failed: {}", entra_postgres::report(e)),
        )),
        Verdict::Errors { count, outside_drill } => {
            let outside = if outside_drill { " outside the drill" } else { "" };
            println!("\n{} {count} errors{outside}; the first ones:", style.fail());
            for e in &report.first_errors {
                println!("  - {e}");
            }
            Err(CliError::silent(Exit::Failure))
        }
    }
}

/// The demo could not run: what the user can fix is a usage error, a missing program an environment one.
fn failed(e: LoadError) -> CliError {
    match e {
        LoadError::InvalidConfig { reason } => CliError::new(Exit::Usage, reason),
        LoadError::EmulatorStart(e) => super::emulate::emulator_error(&e),
        LoadError::PoolBuild { source, .. } => CliError::from(source),
        other => CliError::new(Exit::Failure, entra_postgres::report(&other)),
    }
}

/// Where the demo's steps go: lines on stderr, and on a terminal a progress bar while the load runs.
struct Screen {
    terminal: bool,
    /// Made at the first progress report, so the lines before the load stand above it.
    bar: OnceLock<ProgressBar>,
}

impl Screen {
    fn show(&self, event: Event) {
        match (self.terminal, event) {
            (true, Event::Progress(p)) => {
                let bar = self.bar.get_or_init(|| {
                    let bar = ProgressBar::new(p.duration.as_secs());
                    if let Ok(style) =
                        ProgressStyle::with_template("{spinner} [{bar:30}] {pos:>3}/{len} s  {msg}")
                    {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar
                });
                bar.set_position(p.elapsed.as_secs().min(p.duration.as_secs()));
                bar.set_message(p.to_string());
            }
            (_, event) => match self.bar.get() {
                // Above the bar, which is drawn again below the line.
                Some(bar) => bar.suspend(|| eprintln!("{event}")),
                None => eprintln!("{event}"),
            },
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
