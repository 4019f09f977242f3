//! [`run`]: the interleaved cycles (gate, its controls, direct, pgbench; again…).

use std::time::Duration;

use entra_emulator::Emulator;

use super::arms::{bystander_schedule, run_direct, run_gate, run_plain};
use super::config::{BenchConfig, Mode};
use super::pools::{bystander_pools, direct_pool, gate_pool};
use super::report::{ratios, BenchReport, PgbenchRun};
use crate::error::LoadError;
use crate::event::Event;
use crate::pairs::load_average;
use crate::pgbench;
use crate::setup;
use crate::workload::Mix;

/// Runs the benchmark against a fresh emulator, telling `on_event` each step as it begins.
pub async fn run(config: BenchConfig, on_event: &(dyn Fn(Event) + Sync)) -> Result<BenchReport, LoadError> {
    if matches!(config.mode, Mode::Proxy | Mode::ProxyConnect) {
        return Err(LoadError::invalid(
            "the proxy modes are crate::proxy_bench::run and crate::proxy_connect::run (`entra-pg bench \
             --mode proxy|proxy-connect`)",
        ));
    }
    if config.tasks == 0 || config.connections == 0 || config.cycles == 0 || config.run_duration.is_zero() {
        return Err(LoadError::invalid(
            "tasks, connections, cycles and the run duration must be at least 1",
        ));
    }
    if config.token_lifetime < Duration::from_secs(2) {
        return Err(LoadError::invalid("the token lifetime must be at least 2 s"));
    }
    if config.bystander && (config.mode != Mode::Checkout || config.sign_in_delay.is_zero()) {
        return Err(LoadError::invalid(
            "the bystander control classes windows by the gate's sign-ins: it needs the checkout mode and \
             a sign-in delay (--sign-in-delay-ms)",
        ));
    }
    let load_start = load_average();
    on_event(Event::EmulatorStarting);
    let emulator = Emulator::builder()
        .token_lifetime(config.token_lifetime)
        .sign_in_delay(config.sign_in_delay)
        .start()
        .await
        .map_err(LoadError::EmulatorStart)?;
    let pg = emulator.postgres().clone();
    setup::prepare_app_tables(&pg, emulator.dbname(), emulator.user()).await?;
    let point = config.mix == Mix::Point && config.direct;
    if point {
        setup::prepare_pgbench_db(&pg).await?;
    }
    let gate = gate_pool(&config, &emulator).await?;
    // With --plain-deadpool and replace-ahead, the same gate pool without spares runs in each cycle too,
    // so the three are compared in one interleaved run.
    let no_spares = match config.plain_deadpool && config.replace_ahead > 0 && config.mode == Mode::Checkout {
        true => {
            let mut without = config.clone();
            without.replace_ahead = 0;
            Some(gate_pool(&without, &emulator).await?)
        }
        false => None,
    };
    let bystander = match config.bystander {
        true => Some(bystander_pools(&config, &emulator).await?),
        false => None,
    };
    let direct = match config.direct {
        true => Some(direct_pool(&config, &pg, point, emulator.dbname()).await?),
        false => None,
    };

    let mut runs = Vec::new();
    let mut pgbench_runs = Vec::new();
    let mut pgbench_missing = false;
    for cycle in 0..config.cycles {
        on_event(Event::Cycle {
            number: cycle + 1,
            of: config.cycles,
        });
        runs.push(run_gate(&config, &emulator, &gate, "gate", cycle, None, on_event).await?);
        if let Some((load, sessions)) = &bystander {
            let beside = Some((sessions, bystander_schedule(&config, runs.last())));
            runs.push(run_gate(&config, &emulator, load, "bystander", cycle, beside, on_event).await?);
        }
        if let Some(pool) = &no_spares {
            runs.push(run_gate(&config, &emulator, pool, "no-spares", cycle, None, on_event).await?);
        }
        if config.plain_deadpool && config.mode == Mode::Checkout {
            runs.push(run_plain(&config, &emulator, cycle, on_event).await?);
        }
        if let Some((pool, database)) = &direct {
            runs.push(run_direct(&config, &pg, pool, database, cycle, on_event).await?);
            if point && config.pgbench && !pgbench_missing {
                let mut clients = vec![config.connections];
                if config.mode == Mode::Multiplexed && config.connections != 16 {
                    clients.push(16);
                }
                for c in clients {
                    let before = load_average();
                    on_event(Event::Pgbench {
                        clients: c,
                        duration: config.run_duration,
                        through: None,
                    });
                    match pgbench::run(&pg, c, config.run_duration).await {
                        Ok(tps) => pgbench_runs.push(PgbenchRun {
                            cycle,
                            clients: c,
                            tps,
                            load: (before, load_average()),
                        }),
                        Err(LoadError::PgbenchMissing) => {
                            on_event(Event::PgbenchSkipped);
                            pgbench_missing = true;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    if let Some(tokens) = gate.pool.tokens() {
        tokens.shutdown();
    }
    let ratios = ratios(&runs, &pgbench_runs, config.connections);
    Ok(BenchReport {
        config,
        runs,
        pgbench: pgbench_runs,
        pgbench_missing,
        ratios,
        load: (load_start, load_average()),
    })
}
