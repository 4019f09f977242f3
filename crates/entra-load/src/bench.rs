//! The load benchmark: the same load through the emulator's gate (Entra tokens, rotating) and directly
//! against the server (static password), and `pgbench -S -M prepared` against the same server, in
//! interleaved cycles (gate, direct, pgbench; gate, direct, pgbench; …) so every ratio is a median of
//! pairs measured side by side, with its min and max, and the load average recorded around each run.
//!
//! Latency is classed by one-second window: a window holds a rotation when the refresher renewed the
//! token in it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use entra_emulator::{Emulator, TestPostgres};
use entra_postgres::{EntraPool, PoolBuilder};
use entra_token::{Env, HttpOptions, RefreshPolicy};
use serde_json::json;

use crate::bystander::Bystander;
use crate::drive::{drive, Live};
use crate::pairs::{load_average, PairedRatio};
use crate::setup::{self, WriteCheck};
use crate::stats::{format_us, Percentiles, RunStats};
use crate::workload::{Mix, Target, Workload, ACCOUNTS_POINT, PGBENCH_POINT};
use crate::{pgbench, plot};

#[cfg(feature = "clap")]
/// The command-line flags of `entra-pg bench` and `cargo bench --bench load`.
#[derive(Debug, clap::Args)]
#[non_exhaustive]
pub struct BenchArgs {
    /// Concurrent tasks running operations (more than connections, so tasks wait for the pool).
    #[arg(long, value_name = "N", default_value_t = 64)]
    tasks: usize,
    /// The pool's size (and pgbench's -c).
    #[arg(long, value_name = "N", default_value_t = 16)]
    connections: usize,
    /// Seconds each run lasts (each gate, direct and pgbench run of every cycle).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    duration: u64,
    /// Cycles of (gate, direct, pgbench), interleaved; each ratio is the median of the cycles' pairs.
    #[arg(long, value_name = "N", default_value_t = 3)]
    cycles: usize,
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
    pub out: PathBuf,
    /// `checkout` (a connection per operation), `multiplexed` (statements pipelined on --connections
    /// shared connections; pgbench then also runs at -c 16) or `proxy` (pgbench -c --connections through
    /// `entra-pg proxy` against the same straight at the gate).
    #[arg(long, value_enum, default_value_t = Mode::Checkout)]
    mode: Mode,
    /// The gate waits this long at every sign-in, as Azure's sign-in costs tens of milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    sign_in_delay_ms: u64,
    /// Replace-ahead spares for the gate's checkout pool (0: off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    replace_ahead: usize,
    /// Also run plain deadpool-postgres through the gate in each cycle: a token fetched once as its
    /// password, connections retired at the same lifetime by a pre-recycle hook, as a user would write it.
    #[arg(long)]
    plain_deadpool: bool,
    /// Also run a control in each cycle (needs --sign-in-delay-ms): the gate pool with no connection
    /// retiring and no spares, while sessions no operation waits for sign in and out through the gate at
    /// the moments the gate run before it signed in. It prices what a sign-in costs the queries around
    /// it on this machine, which no pool can avoid.
    #[arg(long)]
    bystander: bool,
    /// Skip the pgbench runs.
    #[arg(long)]
    no_pgbench: bool,
    /// Skip the direct runs (and so pgbench too).
    #[arg(long)]
    no_direct: bool,
}

#[cfg(feature = "clap")]
impl BenchArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> BenchConfig {
        BenchConfig {
            tasks: self.tasks,
            connections: self.connections,
            run_duration: Duration::from_secs(self.duration),
            cycles: self.cycles,
            token_lifetime: Duration::from_secs(self.token_lifetime),
            max_lifetime: self.max_lifetime_ms.map(Duration::from_millis),
            mix: self.mix,
            direct: !self.no_direct,
            pgbench: !self.no_pgbench,
            mode: self.mode,
            sign_in_delay: Duration::from_millis(self.sign_in_delay_ms),
            replace_ahead: self.replace_ahead,
            plain_deadpool: self.plain_deadpool,
            bystander: self.bystander,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchConfig {
    /// Concurrent tasks (more than connections, so tasks wait for the pool).
    pub tasks: usize,
    /// The pool's size, and pgbench's `-c`.
    pub connections: usize,
    /// How long each run lasts.
    pub run_duration: Duration,
    /// Cycles of (gate, direct, pgbench): at least 1; 3 or more for a published ratio.
    pub cycles: usize,
    /// Lifetime of the emulator's tokens.
    pub token_lifetime: Duration,
    /// Retire gate connections after about this long (default: the token lifetime).
    pub max_lifetime: Option<Duration>,
    /// What each operation does.
    pub mix: Mix,
    /// Run the direct load (and pgbench, for the point mix).
    pub direct: bool,
    /// Run pgbench (point mix only).
    pub pgbench: bool,
    /// How operations reach the server.
    pub mode: Mode,
    /// Added by the gate to every sign-in.
    pub sign_in_delay: Duration,
    /// Replace-ahead spares of the gate's checkout pool.
    pub replace_ahead: usize,
    /// Also run plain deadpool-postgres through the gate, retiring connections at the same lifetime.
    pub plain_deadpool: bool,
    /// Also run the bystander control (checkout mode with a sign-in delay): the gate pool with no
    /// connection retiring, beside sessions signing in and out when the gate run before it signed in.
    pub bystander: bool,
}

/// How the load reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Mode {
    /// `pool.get()` and one statement per operation.
    #[default]
    Checkout,
    /// Statements pipelined on `connections` shared connections ([`entra_postgres::MultiplexedPool`]).
    Multiplexed,
    /// `pgbench -S -c <connections>` through `entra-proxy` against the same straight at the gate
    /// ([`crate::proxy_bench`]).
    Proxy,
}

impl Mode {
    /// The name in results.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Checkout => "checkout",
            Mode::Multiplexed => "multiplexed",
            Mode::Proxy => "proxy",
        }
    }
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            tasks: 64,
            connections: 16,
            run_duration: Duration::from_secs(20),
            cycles: 3,
            token_lifetime: Duration::from_secs(5),
            max_lifetime: None,
            mix: Mix::Point,
            direct: true,
            pgbench: true,
            mode: Mode::Checkout,
            sign_in_delay: Duration::ZERO,
            replace_ahead: 0,
            plain_deadpool: false,
            bystander: false,
        }
    }
}

/// One run of the load (through the gate or direct).
#[derive(Debug)]
#[non_exhaustive]
pub struct RunResult {
    /// `gate` or `direct`.
    pub label: &'static str,
    /// The cycle it belongs to (0-based).
    pub cycle: usize,
    /// What it measured.
    pub stats: RunStats,
    /// When the token was renewed, in ms from the run's start (gate runs).
    pub rotations_ms: Vec<u32>,
    /// The first error messages.
    pub first_errors: Vec<String>,
    /// The write check, for mixes that write.
    pub writes: Option<WriteCheck>,
    /// Gate runs: token rotations, token requests and connections signed in during the run.
    pub rotations: Option<u64>,
    /// Token requests the fake identity endpoint received during the run.
    pub token_fetches: Option<u64>,
    /// Sessions the gate signed in during the run.
    pub connections_created: Option<u64>,
    /// Gate and plain runs: connections opened inside a `get()` during the run (after the warm-up that
    /// fills the pool), whose caller waited for the sign-in.
    pub opened_in_checkout: Option<u64>,
    /// Load average before and after the run.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// One pgbench run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgbenchRun {
    /// The cycle it belongs to.
    pub cycle: usize,
    /// Its `-c`.
    pub clients: usize,
    /// Transactions per second, without initial connection time.
    pub tps: f64,
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// The ratios, each a median of pairs from the same cycle.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Ratios {
    /// Our direct throughput over pgbench's tps.
    pub direct_over_pgbench: Option<PairedRatio>,
    /// Throughput through the gate over direct throughput.
    pub gate_over_direct: Option<PairedRatio>,
    /// p99 in rotation windows over p99 in the other windows, per gate run.
    pub p99_rotation_over_rest: Option<PairedRatio>,
    /// The same for p99.9.
    pub p999_rotation_over_rest: Option<PairedRatio>,
    /// Multiplexed mode: our direct throughput over pgbench's at `-c 16`.
    pub direct_over_pgbench_16: Option<PairedRatio>,
    /// `--plain-deadpool`: plain deadpool's p99 in windows with a connection retirement over its p99 in
    /// the rest.
    pub plain_p99_rotation_over_rest: Option<PairedRatio>,
    /// The same for p99.9.
    pub plain_p999_rotation_over_rest: Option<PairedRatio>,
    /// `--plain-deadpool` with replace-ahead: the gate pool without spares, p99.9 in its sign-in windows
    /// over the rest.
    pub no_spares_p999_rotation_over_rest: Option<PairedRatio>,
    /// `--bystander`: p99 in windows where a bystander signed in over the rest, the pool itself signing
    /// nothing in.
    pub bystander_p99_rotation_over_rest: Option<PairedRatio>,
    /// The same for p99.9: the floor this machine puts under `p999_rotation_over_rest`.
    pub bystander_p999_rotation_over_rest: Option<PairedRatio>,
}

/// Everything one benchmark measured.
#[derive(Debug)]
#[non_exhaustive]
pub struct BenchReport {
    /// What was run.
    pub config: BenchConfig,
    /// Gate and direct runs, in the order they ran.
    pub runs: Vec<RunResult>,
    /// pgbench runs (`None` entries: pgbench is not installed).
    pub pgbench: Vec<PgbenchRun>,
    /// pgbench was wanted but is not installed.
    pub pgbench_missing: bool,
    /// The ratios.
    pub ratios: Ratios,
    /// Load average at the start and at the end.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// Runs the benchmark against a fresh emulator. Progress lines go to stderr.
pub async fn run(config: BenchConfig) -> Result<BenchReport, String> {
    if config.mode == Mode::Proxy {
        return Err("the proxy mode is crate::proxy_bench::run (`entra-pg bench --mode proxy`)".into());
    }
    if config.tasks == 0 || config.connections == 0 || config.cycles == 0 || config.run_duration.is_zero() {
        return Err("tasks, connections, cycles and the run duration must be at least 1".into());
    }
    if config.token_lifetime < Duration::from_secs(2) {
        return Err("the token lifetime must be at least 2 s".into());
    }
    if config.bystander && (config.mode != Mode::Checkout || config.sign_in_delay.is_zero()) {
        return Err(
            "the bystander control classes windows by the gate's sign-ins: it needs the checkout mode and \
             a sign-in delay (--sign-in-delay-ms)"
                .into(),
        );
    }
    let load_start = load_average();
    eprintln!("starting the local emulator (PostgreSQL, fake IMDS, Entra gate)…");
    let emulator = Emulator::builder()
        .token_lifetime(config.token_lifetime)
        .sign_in_delay(config.sign_in_delay)
        .start()
        .await
        .map_err(|e| entra_postgres::report(&e))?;
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
        eprintln!("cycle {}/{}", cycle + 1, config.cycles);
        runs.push(run_gate(&config, &emulator, &gate, "gate", cycle, None).await?);
        if let Some((load, sessions)) = &bystander {
            let beside = Some((sessions, bystander_schedule(&config, runs.last())));
            runs.push(run_gate(&config, &emulator, load, "bystander", cycle, beside).await?);
        }
        if let Some(pool) = &no_spares {
            runs.push(run_gate(&config, &emulator, pool, "no-spares", cycle, None).await?);
        }
        if config.plain_deadpool && config.mode == Mode::Checkout {
            runs.push(run_plain(&config, &emulator, cycle).await?);
        }
        if let Some((pool, database)) = &direct {
            runs.push(run_direct(&config, &pg, pool, database, cycle).await?);
            if point && config.pgbench && !pgbench_missing {
                let mut clients = vec![config.connections];
                if config.mode == Mode::Multiplexed && config.connections != 16 {
                    clients.push(16);
                }
                for c in clients {
                    let before = load_average();
                    eprintln!(
                        "  pgbench -S -M prepared -c {c} -j 2 -T {}…",
                        config.run_duration.as_secs()
                    );
                    match pgbench::run(&pg, c, config.run_duration).await? {
                        Some(tps) => pgbench_runs.push(PgbenchRun {
                            cycle,
                            clients: c,
                            tps,
                            load: (before, load_average()),
                        }),
                        None => {
                            eprintln!("pgbench is not installed (Debian: postgresql-contrib); skipping it");
                            pgbench_missing = true;
                            break;
                        }
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

/// A pool to drive: what operations go to, and its checkout pool (tokens, user).
struct Loaded {
    target: Target,
    pool: EntraPool,
}

async fn load_target(config: &BenchConfig, builder: PoolBuilder) -> Result<Loaded, String> {
    let report = |e: &entra_postgres::BuildError| entra_postgres::report(e);
    match config.mode {
        Mode::Checkout => {
            let pool = builder.build().await.map_err(|e| report(&e))?;
            Ok(Loaded {
                target: Target::Checkout(pool.pool().clone()),
                pool,
            })
        }
        Mode::Proxy => Err("the proxy mode is crate::proxy_bench::run".into()),
        Mode::Multiplexed => {
            let m = builder
                .build_multiplexed(config.connections)
                .await
                .map_err(|e| report(&e))?;
            Ok(Loaded {
                pool: m.checkout().clone(),
                target: Target::Multiplexed(m),
            })
        }
    }
}

/// The gate pool's connection lifetime: `--max-lifetime`, else the token lifetime.
fn gate_lifetime(config: &BenchConfig) -> Duration {
    config
        .max_lifetime
        .unwrap_or(config.token_lifetime)
        .max(Duration::from_millis(100))
}

async fn gate_pool(config: &BenchConfig, emulator: &Emulator) -> Result<Loaded, String> {
    let max_lifetime = gate_lifetime(config);
    let builder = PoolBuilder::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .http_options(
            HttpOptions::default()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(20)),
        )
        .refresh_policy(RefreshPolicy::short_lived())
        .max_size(config.connections)
        .max_lifetime(Some(max_lifetime))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .token_wait(Duration::from_secs(5))
        .replace_ahead(config.replace_ahead);
    load_target(config, builder).await
}

/// For the bystander control: the load's pool (no connection retires within the run, no spares) and a
/// pool of the same size for the bystander's sessions, which take their connections out of it.
async fn bystander_pools(config: &BenchConfig, emulator: &Emulator) -> Result<(Loaded, Pool), String> {
    let mut steady = config.clone();
    steady.replace_ahead = 0;
    steady.max_lifetime = Some(Duration::from_secs(86_400));
    let load = gate_pool(&steady, emulator).await?;
    // Room for as many overlapping sessions as the pool under test can sign in at once.
    let sessions = gate_pool(&steady, emulator).await?;
    let Target::Checkout(pool) = sessions.target else {
        return Err("the bystander needs a checkout pool".into());
    };
    Ok((load, pool))
}

/// When the bystander starts its sessions: when the gate run of the same cycle signed in, each moved
/// earlier by the sign-in delay, since the gate records a sign-in once its delay is over.
fn bystander_schedule(config: &BenchConfig, gate: Option<&RunResult>) -> Vec<Duration> {
    gate.map_or(&[][..], |g| &g.rotations_ms[..])
        .iter()
        .map(|ms| Duration::from_millis(u64::from(*ms)).saturating_sub(config.sign_in_delay))
        .collect()
}

/// A pool straight at the server as its superuser, on pgbench's database for the point mix so both read
/// the same rows with the same query.
async fn direct_pool(
    config: &BenchConfig,
    pg: &TestPostgres,
    point: bool,
    app_database: &str,
) -> Result<(Loaded, String), String> {
    let database = if point {
        setup::PGBENCH_DB.to_string()
    } else {
        app_database.to_string()
    };
    let builder = PoolBuilder::from_env()
        .env(Env::from_pairs([(
            "PGSSLROOTCERT",
            pg.ca_path().display().to_string(),
        )]))
        .host(pg.host())
        .port(pg.port())
        .dbname(database.clone())
        .user(pg.superuser())
        .static_password(pg.superuser_password())
        .max_size(config.connections)
        .max_lifetime(None)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)));
    Ok((load_target(config, builder).await?, database))
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

async fn run_gate(
    config: &BenchConfig,
    emulator: &Emulator,
    loaded: &Loaded,
    label: &'static str,
    cycle: usize,
    bystander: Option<(&Pool, Vec<Duration>)>,
) -> Result<RunResult, String> {
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
    eprintln!(
        "  {label}: {} tasks on a pool of {} as {:?}, {} mix, {} s, tokens live {} s",
        config.tasks,
        config.connections,
        pool.user(),
        config.mix.name(),
        config.run_duration.as_secs(),
        config.token_lifetime.as_secs()
    );
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
        let sessions = b.stop().await?;
        eprintln!("  bystander: {sessions} sessions signed in and out beside the load");
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
async fn run_plain(config: &BenchConfig, emulator: &Emulator, cycle: usize) -> Result<RunResult, String> {
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
        .map_err(|e| entra_postgres::report(&e))?;
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
        .map_err(|e| format!("plain deadpool: {e}"))?;
    let target = Target::Checkout(pool);
    crate::drive::warm_up(&target, config.tasks).await;
    let before = load_average();
    let sessions_before = emulator.gate().sessions().len();
    let workload = Workload {
        mix: config.mix,
        point_sql: ACCOUNTS_POINT,
        run_id: run_id("plain", cycle),
    };
    eprintln!(
        "  plain deadpool through the gate: {} tasks, pool of {}, connections retire after {} ms",
        config.tasks,
        config.connections,
        lifetime.as_millis()
    );
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

async fn run_direct(
    config: &BenchConfig,
    pg: &TestPostgres,
    loaded: &Loaded,
    database: &str,
    cycle: usize,
) -> Result<RunResult, String> {
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
    eprintln!("  direct: the same load against PostgreSQL itself (superuser, static password)");
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
) -> Result<Option<WriteCheck>, String> {
    if !config.mix.writes() {
        return Ok(None);
    }
    setup::check_writes(pg, database, run_id, acked).await.map(Some)
}

fn ratio_of(a: Option<u32>, b: Option<u32>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    }
}

fn ratios(runs: &[RunResult], pgbench: &[PgbenchRun], connections: usize) -> Ratios {
    let of = |label: &str, cycle: usize| {
        runs.iter()
            .find(|r| r.label == label && r.cycle == cycle)
            .map(|r| r.stats.throughput())
    };
    let mut cycles: Vec<usize> = runs.iter().map(|r| r.cycle).collect();
    cycles.dedup();
    let gates = runs.iter().filter(|r| r.label == "gate");
    let plains = runs.iter().filter(|r| r.label == "plain");
    let bystanders = runs.iter().filter(|r| r.label == "bystander");
    Ratios {
        direct_over_pgbench: PairedRatio::of_pairs(
            pgbench
                .iter()
                .filter(|p| p.clients == connections)
                .filter_map(|p| of("direct", p.cycle).map(|d| (d, p.tps))),
        ),
        direct_over_pgbench_16: PairedRatio::of_pairs(
            pgbench
                .iter()
                .filter(|p| p.clients == 16 && connections != 16)
                .filter_map(|p| of("direct", p.cycle).map(|d| (d, p.tps))),
        ),
        gate_over_direct: PairedRatio::of_pairs(
            cycles
                .iter()
                .filter_map(|c| Some((of("gate", *c)?, of("direct", *c)?))),
        ),
        p99_rotation_over_rest: PairedRatio::of(
            gates
                .clone()
                .filter_map(|g| ratio_of(g.stats.rotation.p99, g.stats.rest.p99)),
        ),
        p999_rotation_over_rest: PairedRatio::of(
            gates.filter_map(|g| ratio_of(g.stats.rotation.p999, g.stats.rest.p999)),
        ),
        plain_p99_rotation_over_rest: PairedRatio::of(
            plains
                .clone()
                .filter_map(|p| ratio_of(p.stats.rotation.p99, p.stats.rest.p99)),
        ),
        plain_p999_rotation_over_rest: PairedRatio::of(
            plains.filter_map(|p| ratio_of(p.stats.rotation.p999, p.stats.rest.p999)),
        ),
        no_spares_p999_rotation_over_rest: PairedRatio::of(
            runs.iter()
                .filter(|r| r.label == "no-spares")
                .filter_map(|r| ratio_of(r.stats.rotation.p999, r.stats.rest.p999)),
        ),
        bystander_p99_rotation_over_rest: PairedRatio::of(
            bystanders
                .clone()
                .filter_map(|r| ratio_of(r.stats.rotation.p99, r.stats.rest.p99)),
        ),
        bystander_p999_rotation_over_rest: PairedRatio::of(
            bystanders.filter_map(|r| ratio_of(r.stats.rotation.p999, r.stats.rest.p999)),
        ),
    }
}

fn us(v: Option<u32>) -> Option<f64> {
    v.map(f64::from)
}

fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    PairedRatio::of(values).map(|r| r.median)
}

fn load_json(load: &(Option<[f64; 3]>, Option<[f64; 3]>)) -> serde_json::Value {
    json!({ "before": load.0, "after": load.1 })
}

fn percentiles_json(p: &Percentiles) -> serde_json::Value {
    json!({ "count": p.count, "p50_us": p.p50, "p99_us": p.p99, "p999_us": p.p999, "max_us": p.max })
}

fn run_json(r: &RunResult) -> serde_json::Value {
    json!({
        "label": r.label,
        "cycle": r.cycle,
        "throughput_per_s": r.stats.throughput(),
        "operations": r.stats.ops,
        "errors": r.stats.errors,
        "first_errors": r.first_errors,
        "elapsed_s": r.stats.elapsed.as_secs_f64(),
        "latency_all": percentiles_json(&r.stats.all),
        "latency_rotation_windows": percentiles_json(&r.stats.rotation),
        "latency_other_windows": percentiles_json(&r.stats.rest),
        "rotation_windows": r.stats.windows.iter().filter(|w| w.rotation).count(),
        "rotations": r.rotations,
        "rotations_at_ms": r.rotations_ms,
        "token_fetches": r.token_fetches,
        "connections_created": r.connections_created,
        "opened_in_checkout": r.opened_in_checkout,
        "writes": r.writes.map(|w| json!({
            "acknowledged": w.acknowledged, "missing": w.missing, "rows": w.rows
        })),
        "load_average": load_json(&r.load),
        "windows": r.stats.windows.iter().map(|w| json!({
            "ops": w.ops, "errors": w.errors, "p99_us": w.p99_us, "rotation": w.rotation
        })).collect::<Vec<_>>(),
    })
}

impl BenchReport {
    /// Whether anything failed: an error in a run, or an acknowledged write missing.
    pub fn failed(&self) -> bool {
        self.runs
            .iter()
            .any(|r| r.stats.errors > 0 || r.writes.is_some_and(|w| w.missing > 0))
    }

    /// The whole report as JSON, ratios under `ratios`.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.config;
        json!({
            "config": {
                "tasks": c.tasks, "connections": c.connections, "run_duration_s": c.run_duration.as_secs(),
                "cycles": c.cycles, "token_lifetime_s": c.token_lifetime.as_secs(),
                "max_lifetime_ms": c.max_lifetime.map(|d| d.as_millis() as u64), "mix": c.mix.name(),
                "mode": c.mode.name(), "sign_in_delay_ms": c.sign_in_delay.as_millis() as u64,
                "replace_ahead": c.replace_ahead, "plain_deadpool": c.plain_deadpool, "bystander": c.bystander,
                "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            },
            "load_average": load_json(&self.load),
            "runs": self.runs.iter().map(run_json).collect::<Vec<_>>(),
            "pgbench": self.pgbench.iter().map(|p| json!({
                "cycle": p.cycle, "clients": p.clients, "tps": p.tps, "load_average": load_json(&p.load),
            })).collect::<Vec<_>>(),
            "ratios": self.ratios_json(),
        })
    }

    fn ratios_json(&self) -> serde_json::Value {
        let (r, c) = (&self.ratios, &self.config);
        let (plain, bystander) = (c.plain_deadpool, c.bystander);
        let multiplexed = c.mode == Mode::Multiplexed;
        // (key, ratio, whether this run's configuration reports it)
        let rows: [(String, &Option<PairedRatio>, bool); 11] = [
            ("direct_over_pgbench".into(), &r.direct_over_pgbench, true),
            ("gate_over_direct".into(), &r.gate_over_direct, true),
            ("p99_rotation_over_rest".into(), &r.p99_rotation_over_rest, true),
            ("p999_rotation_over_rest".into(), &r.p999_rotation_over_rest, true),
            (
                "plain_p99_rotation_over_rest".into(),
                &r.plain_p99_rotation_over_rest,
                plain,
            ),
            (
                "plain_p999_rotation_over_rest".into(),
                &r.plain_p999_rotation_over_rest,
                plain,
            ),
            (
                "no_spares_p999_rotation_over_rest".into(),
                &r.no_spares_p999_rotation_over_rest,
                plain,
            ),
            (
                "bystander_p99_rotation_over_rest".into(),
                &r.bystander_p99_rotation_over_rest,
                bystander,
            ),
            (
                "bystander_p999_rotation_over_rest".into(),
                &r.bystander_p999_rotation_over_rest,
                bystander,
            ),
            (
                "multiplexed_over_pgbench".into(),
                &r.direct_over_pgbench,
                multiplexed,
            ),
            (
                format!("multiplexed_{}_over_pgbench_16", c.connections),
                &r.direct_over_pgbench_16,
                multiplexed,
            ),
        ];
        let ratios = rows
            .into_iter()
            .filter(|(_, _, shown)| *shown)
            .map(|(key, ratio, _)| (key, json!(ratio.as_ref().map(PairedRatio::json))))
            .collect();
        serde_json::Value::Object(ratios)
    }

    /// Writes `load-<timestamp>.json` and an SVG of the first gate run into `dir`; returns both paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .map_err(|e| e.to_string())?;
        let json_path = dir.join(format!("load-{stamp}.json"));
        let svg_path = dir.join(format!("load-{stamp}.svg"));
        let text = serde_json::to_string_pretty(&self.json()).map_err(|e| e.to_string())?;
        std::fs::write(&json_path, text).map_err(|e| format!("writing {}: {e}", json_path.display()))?;
        if let Some(gate) = self.runs.iter().find(|r| r.label == "gate") {
            let title = format!(
                "gate, {} mix, tokens live {} s",
                self.config.mix.name(),
                self.config.token_lifetime.as_secs()
            );
            plot::draw(&svg_path, &title, &gate.stats.windows)?;
        }
        Ok((json_path, svg_path))
    }

    /// The summary for a person: per kind of run the median over cycles, then the ratios.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "\nentra-pg bench: {} mode, {} mix, {} tasks, {} connections, {} cycles of {} s runs, tokens live {} s, \
             sign-in delay {} ms, replace-ahead {}\n\n",
            c.mode.name(),
            c.mix.name(),
            c.tasks,
            c.connections,
            c.cycles,
            c.run_duration.as_secs(),
            c.token_lifetime.as_secs(),
            c.sign_in_delay.as_millis(),
            c.replace_ahead
        );
        let labels: Vec<&str> = ["gate", "bystander", "no-spares", "plain", "direct"]
            .into_iter()
            .filter(|l| self.runs.iter().any(|r| r.label == *l))
            .collect();
        out.push_str(&format!("  {:<34}", "(median over cycles)"));
        for l in &labels {
            out.push_str(&format!("{l:>16}"));
        }
        out.push('\n');
        type Cell = fn(&RunResult) -> Option<f64>;
        let rows: [(&str, Cell, bool); 10] = [
            ("throughput (ops/s)", |r| Some(r.stats.throughput()), false),
            ("latency p50", |r| us(r.stats.all.p50), true),
            ("latency p99", |r| us(r.stats.all.p99), true),
            ("latency p99.9", |r| us(r.stats.all.p999), true),
            ("latency max", |r| us(r.stats.all.max), true),
            (
                "sign-ins inside get() (per run)",
                |r| r.opened_in_checkout.map(|n| n as f64),
                false,
            ),
            ("p99 in rotation windows", |r| us(r.stats.rotation.p99), true),
            ("p99.9 in rotation windows", |r| us(r.stats.rotation.p999), true),
            ("p99 in other windows", |r| us(r.stats.rest.p99), true),
            ("p99.9 in other windows", |r| us(r.stats.rest.p999), true),
        ];
        for (name, cell, is_latency) in rows {
            out.push_str(&format!("  {name:<34}"));
            for l in &labels {
                let m = median(self.runs.iter().filter(|r| r.label == *l).filter_map(cell));
                let shown = match (m, is_latency) {
                    (None, _) => "-".to_string(),
                    (Some(v), true) => format_us(Some(v.round() as u32)),
                    (Some(v), false) => format!("{v:.0}"),
                };
                out.push_str(&format!("{shown:>16}"));
            }
            out.push('\n');
        }
        let total = |f: fn(&RunResult) -> Option<u64>| {
            let v: Vec<u64> = self.runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| v.iter().sum::<u64>().to_string())
        };
        let sums: [(&str, Option<String>); 6] = [
            ("errors (all runs)", total(|r| Some(r.stats.errors))),
            ("token rotations (gate)", total(|r| r.rotations)),
            ("token fetches (gate)", total(|r| r.token_fetches)),
            ("connections signed in (gate)", total(|r| r.connections_created)),
            ("acknowledged writes", total(|r| r.writes.map(|w| w.acknowledged))),
            (
                "acknowledged writes missing",
                total(|r| r.writes.map(|w| w.missing)),
            ),
        ];
        out.push('\n');
        for (name, value) in sums {
            out.push_str(&format!("  {name:<34}{:>16}\n", value.as_deref().unwrap_or("-")));
        }
        out.push('\n');
        let mut clients: Vec<usize> = self.pgbench.iter().map(|p| p.clients).collect();
        clients.sort_unstable();
        clients.dedup();
        for c in clients {
            if let Some(tps) = median(self.pgbench.iter().filter(|p| p.clients == c).map(|p| p.tps)) {
                out.push_str(&format!("  pgbench -S -M prepared -c {c:<3} tps  {tps:>10.0}\n"));
            }
        }
        if self.pgbench_missing {
            out.push_str("  pgbench: not installed, no ratio to it\n");
        }
        let lines = [
            (
                "ours direct / pgbench (same -c)",
                &self.ratios.direct_over_pgbench,
            ),
            ("ours direct / pgbench -c 16", &self.ratios.direct_over_pgbench_16),
            ("through the gate / direct", &self.ratios.gate_over_direct),
            (
                "p99 rotation / other windows",
                &self.ratios.p99_rotation_over_rest,
            ),
            (
                "p99.9 rotation / other windows",
                &self.ratios.p999_rotation_over_rest,
            ),
            (
                "plain p99 retiring / other",
                &self.ratios.plain_p99_rotation_over_rest,
            ),
            (
                "plain p99.9 retiring / other",
                &self.ratios.plain_p999_rotation_over_rest,
            ),
            (
                "no-spares p99.9 rotation / other",
                &self.ratios.no_spares_p999_rotation_over_rest,
            ),
            (
                "bystander p99 sign-in / other",
                &self.ratios.bystander_p99_rotation_over_rest,
            ),
            (
                "bystander p99.9 sign-in / other",
                &self.ratios.bystander_p999_rotation_over_rest,
            ),
        ];
        for (name, r) in lines {
            if let Some(r) = r {
                out.push_str(&format!("  {name:<34}{}\n", r.display()));
            }
        }
        if let (Some(before), Some(after)) = self.load {
            out.push_str(&format!(
                "\n  load average: {:.2} before, {:.2} after (1 min); {} cores\n",
                before[0],
                after[0],
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ));
        }
        out
    }
}
