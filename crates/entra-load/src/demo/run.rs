//! [`run`]: the emulator, the pool, the load, its progress and the failover drill, side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_emulator::Emulator;
use entra_postgres::{EntraPool, PoolBuilder};

use super::config::DemoConfig;
use super::report::DemoReport;
use crate::drive::{drive, Live};
use crate::error::LoadError;
use crate::event::{Event, Progress};
use crate::workload::{Mix, Target, Workload, ACCOUNTS_POINT};

/// Starts the local emulator with short-lived tokens, runs `config.tasks` tasks of `SELECT $1::int8 + 1`
/// (the answer checked) on a pool of `config.connections` for `config.duration`, with the failover drill
/// halfway through when asked, and reports what it measured. `on_event` hears each step and, every
/// `config.progress_every`, where the load stands.
///
/// Fails before the load when the configuration cannot run, the emulator cannot start or the pool cannot
/// be built; failed queries and a failed drill are results, in the report.
pub async fn run(config: DemoConfig, on_event: &(dyn Fn(Event) + Sync)) -> Result<DemoReport, LoadError> {
    config.check()?;
    on_event(Event::EmulatorStarting);
    let emulator = Emulator::builder()
        .token_lifetime(config.token_lifetime)
        .start()
        .await
        .map_err(LoadError::EmulatorStart)?;
    let pool = PoolBuilder::new(crate::setup::emulator_config(&emulator))
        .max_size(config.connections)
        .max_lifetime(Some(config.max_lifetime.max(Duration::from_millis(100))))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()
        .await
        .map_err(|source| LoadError::PoolBuild { pool: "demo", source })?;
    let fetches_before = emulator.identity().token_requests();
    on_event(Event::DemoRunning {
        tasks: config.tasks,
        connections: config.connections,
        user: pool.role().to_string(),
        duration: config.duration,
        token_lifetime: config.token_lifetime,
    });

    let live = Arc::new(Live::default());
    let started = Instant::now();
    let workload = Workload::new(Mix::Echo, ACCOUNTS_POINT, 1);
    let target = Target::Checkout(pool.pool().clone());
    let load = drive(
        &target,
        pool.tokens(),
        &workload,
        config.tasks,
        config.duration,
        live.clone(),
    );
    let drill = async {
        match config.failover_pause {
            Some(pause) => {
                Some(crate::failover::drill(&emulator, &live, config.duration / 2, pause, on_event).await)
            }
            None => None,
        }
    };
    let progress = progress(&pool, &live, started, &config, on_event);
    let (driven, (), drill) = tokio::join!(load, progress, drill);

    Ok(DemoReport {
        token_fetches: emulator.identity().token_requests().max(fetches_before),
        rotations: rotations(&pool),
        connections_created: emulator.gate().sessions().len(),
        stats: driven.stats,
        first_errors: driven.first_errors,
        drill,
        config,
    })
}

/// Token renewals since the pool's first token.
fn rotations(pool: &EntraPool) -> u64 {
    pool.tokens()
        .map(|t| t.status().refreshes.saturating_sub(1))
        .unwrap_or(0)
}

/// An [`Event::Progress`] every `config.progress_every` until the load's deadline, and one at it.
async fn progress(
    pool: &EntraPool,
    live: &Live,
    started: Instant,
    config: &DemoConfig,
    on_event: &(dyn Fn(Event) + Sync),
) {
    let deadline = started + config.duration;
    // A zero interval would spin.
    let every = config.progress_every.max(Duration::from_millis(100));
    let mut last_ops = 0;
    let mut last_tick = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(every.min(deadline - now)).await;
        let ops = live.ops();
        let rate = (ops - last_ops) as f64 / last_tick.elapsed().as_secs_f64().max(0.001);
        last_ops = ops;
        last_tick = Instant::now();
        on_event(Event::Progress(Progress {
            elapsed: started.elapsed(),
            duration: config.duration,
            rate,
            rotations: rotations(pool),
            errors: live.errors(),
        }));
    }
}
