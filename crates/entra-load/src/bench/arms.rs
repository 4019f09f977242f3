//! One run of each kind: through the gate, plain deadpool-postgres through the gate, and direct.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use entra_emulator::{Emulator, TestPostgres};

use super::config::BenchConfig;
use super::pools::{gate_lifetime, Loaded};
use super::report::RunResult;
use crate::bystander::Bystander;
use crate::drive::{drive, Live};
use crate::error::LoadError;
use crate::event::Event;
use crate::pairs::load_average;
use crate::setup::{self, WriteCheck};
use crate::workload::{Target, Workload, ACCOUNTS_POINT, PGBENCH_POINT};

/// When the bystander starts its sessions: when the gate run of the same cycle signed in, each moved
/// earlier by the sign-in delay, since the gate records a sign-in once its delay is over.
pub(super) fn bystander_schedule(config: &BenchConfig, gate: Option<&RunResult>) -> Vec<Duration> {
    gate.map_or(&[][..], |g| &g.rotations_ms[..])
        .iter()
        .map(|ms| Duration::from_millis(u64::from(*ms)).saturating_sub(config.sign_in_delay))
        .collect()
}

fn run_id(label: &str, cycle: usize) -> i16 {
    let base = match label {
        "gate" => 100,
        "plain" => 300,
        "no-spares" => 400,
        "bystander" => 500,
        _ => 200,
    };
    base + (cycle as i16 % 100)
}

/// The instants the gate signed sessions in, as `Instant`s of this process.
fn gate_sign_ins(emulator: &Emulator) -> Vec<std::time::Instant> {
    let (now, wall) = (std::time::Instant::now(), std::time::SystemTime::now());
    emulator
        .gate()
        .sessions()
        .iter()
        .filter_map(|s| now.checked_sub(wall.duration_since(s.at).unwrap_or_default()))
        .collect()
}

/// What marks the windows compared: with a sign-in delay, the windows in which a connection signed in
/// at the gate (whoever waited for it); otherwise the token's renewals.
fn windows_of<'a>(
    config: &BenchConfig,
    sign_ins: &'a (dyn Fn() -> Vec<std::time::Instant> + Sync),
    tokens: Option<&'a entra_token::TokenHandle>,
) -> crate::drive::Rotations<'a> {
    match (config.sign_in_delay.is_zero(), tokens) {
        (false, _) => crate::drive::Rotations::Sampled(sign_ins),
        (true, Some(t)) => crate::drive::Rotations::Token(t),
        (true, None) => crate::drive::Rotations::None,
    }
}

pub(super) async fn run_gate(
    config: &BenchConfig,
    emulator: &Emulator,
    loaded: &Loaded,
    label: &'static str,
    cycle: usize,
    bystander: Option<(&Pool, Vec<Duration>)>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<RunResult, LoadError> {
    let pool = &loaded.pool;
    // Counted from a full pool: the run's own sign-ins, not those filling it.
    crate::drive::warm_up(&loaded.target, config.tasks).await;
    let bystander = bystander.map(|(sessions, schedule)| Bystander::replay(sessions.clone(), schedule));
    let before = load_average();
    let sessions_before = emulator.gate().sessions().len();
    let fetches_before = emulator.identity().token_requests();
    let refreshes_before = pool.tokens().map_or(0, |t| t.status().refreshes);
    let in_checkout_before = pool.status().connections.opened_in_checkout;
    let workload = Workload {
        mix: config.mix,
        point_sql: ACCOUNTS_POINT,
        run_id: run_id(label, cycle),
    };
    on_event(Event::GateRun {
        label,
        tasks: config.tasks,
        connections: config.connections,
        user: pool.role().to_string(),
        mix: config.mix,
        duration: config.run_duration,
        token_lifetime: config.token_lifetime,
    });
    let sign_ins = || gate_sign_ins(emulator);
    let driven = crate::drive::drive_with(
        &loaded.target,
        windows_of(config, &sign_ins, pool.tokens()),
        &workload,
        config.tasks,
        config.run_duration,
        Arc::new(Live::default()),
    )
    .await;
    if let Some(b) = bystander {
        let sessions = b
            .stop()
            .await
            .map_err(|first_error| LoadError::Bystander { first_error })?;
        on_event(Event::BystanderSessions { sessions });
    }
    let refreshes = pool.tokens().map_or(0, |t| t.status().refreshes);
    let writes = check(
        config,
        emulator.postgres(),
        emulator.dbname(),
        workload.run_id,
        &driven.acked,
    )
    .await?;
    Ok(RunResult {
        label,
        cycle,
        stats: driven.stats,
        rotations_ms: driven.rotations_ms,
        first_errors: driven.first_errors,
        writes,
        rotations: Some(refreshes.saturating_sub(refreshes_before)),
        token_fetches: Some(
            emulator
                .identity()
                .token_requests()
                .saturating_sub(fetches_before) as u64,
        ),
        connections_created: Some(emulator.gate().sessions().len().saturating_sub(sessions_before) as u64),
        opened_in_checkout: Some(
            pool.status()
                .connections
                .opened_in_checkout
                .saturating_sub(in_checkout_before),
        ),
        load: (before, load_average()),
    })
}

/// Plain deadpool-postgres through the gate, as a user would write it without entra-pool: one token
/// fetched as a static password (long-lived, so it outlasts the run), TLS verified, connections retired
/// at the gate pool's lifetime by a pre-recycle hook (no jitter, no replace-ahead); each retirement's
/// replacement signs in inside a `get()`. Rotation windows are those where a connection was retired.
pub(super) async fn run_plain(
    config: &BenchConfig,
    emulator: &Emulator,
    cycle: usize,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<RunResult, LoadError> {
    use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, RecyclingMethod, Runtime};
    let lifetime = gate_lifetime(config);
    let token = emulator.token_for_lifetime(emulator.principal(), Duration::from_secs(24 * 3600));
    let mut pg = tokio_postgres::Config::new();
    pg.host(emulator.host())
        .port(emulator.port())
        .dbname(emulator.dbname())
        .user(emulator.user())
        .password(token.as_bytes())
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let tls_config = emulator
        .postgres()
        .ca()
        .client_config()
        .map_err(|source| LoadError::Emulator {
            action: "give plain deadpool-postgres a TLS configuration",
            source,
        })?;
    let manager = Manager::from_config(
        pg,
        tokio_postgres_rustls::MakeRustlsConnect::new(tls_config),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let retired = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = retired.clone();
    let pool = Pool::builder(manager)
        .max_size(config.connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if metrics.created.elapsed() > lifetime {
                log.lock().push(std::time::Instant::now());
                return Err(HookError::message("reached its lifetime"));
            }
            Ok(())
        }))
        .build()
        .map_err(LoadError::PlainPool)?;
    let target = Target::Checkout(pool);
    crate::drive::warm_up(&target, config.tasks).await;
    let before = load_average();
    let sessions_before = emulator.gate().sessions().len();
    let workload = Workload {
        mix: config.mix,
        point_sql: ACCOUNTS_POINT,
        run_id: run_id("plain", cycle),
    };
    on_event(Event::PlainRun {
        tasks: config.tasks,
        connections: config.connections,
        lifetime,
    });
    let sign_ins = || gate_sign_ins(emulator);
    let windows = match config.sign_in_delay.is_zero() {
        true => crate::drive::Rotations::Recorded(retired),
        false => crate::drive::Rotations::Sampled(&sign_ins),
    };
    let driven = crate::drive::drive_with(
        &target,
        windows,
        &workload,
        config.tasks,
        config.run_duration,
        Arc::new(Live::default()),
    )
    .await;
    let writes = check(
        config,
        emulator.postgres(),
        emulator.dbname(),
        workload.run_id,
        &driven.acked,
    )
    .await?;
    Ok(RunResult {
        label: "plain",
        cycle,
        stats: driven.stats,
        rotations_ms: driven.rotations_ms,
        first_errors: driven.first_errors,
        writes,
        rotations: None,
        token_fetches: None,
        connections_created: Some(emulator.gate().sessions().len().saturating_sub(sessions_before) as u64),
        // Plain deadpool opens every connection inside a get().
        opened_in_checkout: Some(emulator.gate().sessions().len().saturating_sub(sessions_before) as u64),
        load: (before, load_average()),
    })
}

pub(super) async fn run_direct(
    config: &BenchConfig,
    pg: &TestPostgres,
    loaded: &Loaded,
    database: &str,
    cycle: usize,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<RunResult, LoadError> {
    let before = load_average();
    let point_sql = if database == setup::PGBENCH_DB {
        PGBENCH_POINT
    } else {
        ACCOUNTS_POINT
    };
    let workload = Workload {
        mix: config.mix,
        point_sql,
        run_id: run_id("direct", cycle),
    };
    on_event(Event::DirectRun);
    let driven = drive(
        &loaded.target,
        None,
        &workload,
        config.tasks,
        config.run_duration,
        Arc::new(Live::default()),
    )
    .await;
    let writes = check(config, pg, database, workload.run_id, &driven.acked).await?;
    Ok(RunResult {
        label: "direct",
        cycle,
        stats: driven.stats,
        rotations_ms: Vec::new(),
        first_errors: driven.first_errors,
        writes,
        rotations: None,
        token_fetches: None,
        connections_created: None,
        opened_in_checkout: None,
        load: (before, load_average()),
    })
}

async fn check(
    config: &BenchConfig,
    pg: &TestPostgres,
    database: &str,
    run_id: i16,
    acked: &[(i32, i64)],
) -> Result<Option<WriteCheck>, LoadError> {
    if !config.mix.writes() {
        return Ok(None);
    }
    setup::check_writes(pg, database, run_id, acked).await.map(Some)
}
