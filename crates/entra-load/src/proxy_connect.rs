//! The price of a connect through the proxy: `pgbench -n -C -S -c C -j 2 -R R` (a new connection for
//! every transaction, at a fixed rate below what the upstream can sign in) straight at the emulator's
//! gate, through `entra-proxy` signing in for each client (`warm(0)`), and through `entra-proxy` with
//! warm sessions (`warm(N)`); and the three again beside idle loopback sockets the bench holds (10 000
//! by default: the socket table of a busy node, which the proxy's peer lookup must not have to read).
//! Each cycle runs the six arms in turn, so each ratio is the median of the per-cycle ratios, with min
//! and max. Each cycle then runs the three at full speed (no `-R`) for their tps, a figure and not a
//! target: at full speed the upstream's sign-ins bound every path, warm sessions or not.
//!
//! The figure is pgbench's latency average under `-R`: per transaction, the connect included, from the
//! transaction's scheduled start (so a backlog shows as latency rather than hiding in a lower rate).
//! Sign-ins at the gate take `--sign-in-delay-ms` more, as Azure's take tens of milliseconds; the gate
//! arm pays it once per connect, and so does the proxy arm, once per upstream session it opens.

use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::EntraConfig;
use entra_proxy::ProxyBuilder;
use entra_testkit::sockets::{tcp_sockets_on_machine, IdleSockets};
use entra_token::Env;
use serde_json::json;

use crate::error::LoadError;
use crate::event::Event;
use crate::pairs::{load_average, PairedRatio};
use crate::pgbench::{self, ConnectingRun};
use crate::setup;

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConnectConfig {
    /// pgbench's `-c`.
    pub clients: usize,
    /// Length of each pgbench run.
    pub run_duration: Duration,
    /// Cycles of the four arms (at least 3 for a ratio worth publishing).
    pub cycles: usize,
    /// pgbench's `-R`: transactions per second, all clients together.
    pub rate: u32,
    /// Added by the gate to every sign-in.
    pub sign_in_delay: Duration,
    /// Idle loopback sockets held beside the second set of arms.
    pub idle_sockets: usize,
    /// Warm sessions of the warm arm's proxy.
    pub warm: usize,
}

impl ProxyConnectConfig {
    /// `clients` clients, `cycles` cycles of `run_duration` runs, at 20 transactions per second, beside
    /// 10 000 idle sockets in the second set of arms, with a sign-in delay of `sign_in_delay`; the warm
    /// arm's proxy keeps the proxy's default number of warm sessions.
    pub fn new(clients: usize, run_duration: Duration, cycles: usize, sign_in_delay: Duration) -> Self {
        ProxyConnectConfig {
            clients,
            run_duration,
            cycles,
            rate: 20,
            sign_in_delay,
            idle_sockets: 10_000,
            warm: entra_proxy::DEFAULT_WARM,
        }
    }
}

/// One pgbench run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectRun {
    /// The cycle it belongs to.
    pub cycle: usize,
    /// `gate`, `proxy` (no warm sessions) or `proxy-warm`.
    pub target: &'static str,
    /// Under pgbench's `-R` (`false`: at full speed).
    pub paced: bool,
    /// Idle sockets the bench held during the run (0 or the configured count).
    pub idle_sockets: usize,
    /// TCP sockets of the machine as `/proc/net/tcp*` listed them just before the run.
    pub tcp_sockets: usize,
    /// What pgbench measured.
    pub measured: ConnectingRun,
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// What the connect benchmark measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConnectReport {
    /// The configuration.
    pub config: ProxyConnectConfig,
    /// Every run, in order.
    pub runs: Vec<ConnectRun>,
    /// Proxy latency over gate latency, per cycle, without the idle sockets.
    pub latency_over_gate: Option<PairedRatio>,
    /// The same, both runs beside the idle sockets.
    pub latency_over_gate_idle: Option<PairedRatio>,
    /// Proxy connection time over gate connection time (pgbench's `average connection time`: the
    /// connect alone, without the schedule's lag), per cycle, without the idle sockets.
    pub connect_over_gate: Option<PairedRatio>,
    /// The same, both runs beside the idle sockets.
    pub connect_over_gate_idle: Option<PairedRatio>,
    /// Latency through the proxy with warm sessions over the gate's, per cycle, without the idle sockets.
    pub warm_latency_over_gate: Option<PairedRatio>,
    /// The same, both runs beside the idle sockets.
    pub warm_latency_over_gate_idle: Option<PairedRatio>,
}

/// Runs the benchmark against a fresh emulator, telling `on_event` each step as it begins;
/// [`LoadError::PgbenchMissing`] when pgbench is not installed.
pub async fn run(
    config: ProxyConnectConfig,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<ProxyConnectReport, LoadError> {
    if config.clients == 0 || config.cycles == 0 || config.run_duration.is_zero() || config.rate == 0 {
        return Err(LoadError::invalid(
            "clients, cycles, the rate and the run duration must be at least 1",
        ));
    }
    on_event(Event::EmulatorStarting);
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(3600))
        .sign_in_delay(config.sign_in_delay)
        .start()
        .await
        .map_err(LoadError::EmulatorStart)?;
    let pg = emulator.postgres().clone();
    setup::prepare_pgbench_db(&pg).await?;
    setup::grant_pgbench_tables(&pg, emulator.user()).await?;

    let upstream = EntraConfig::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .dbname(setup::PGBENCH_DB);
    let start_proxy = |warm: usize| {
        ProxyBuilder::new()
            .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .max_size(config.clients.max(1) * 2 + warm)
            .warm(warm)
            .start(&upstream)
    };
    let proxy = start_proxy(0).await.map_err(LoadError::ProxyStart)?;
    let warm_proxy = start_proxy(config.warm).await.map_err(LoadError::ProxyStart)?;
    let tokens = proxy.tokens().cloned().ok_or(LoadError::NoTokenHandle)?;
    let proxy_addr = proxy.tcp_addresses()[0];
    let warm_addr = warm_proxy.tcp_addresses()[0];

    let mut runs = Vec::new();
    for cycle in 0..config.cycles {
        on_event(Event::Cycle {
            number: cycle + 1,
            of: config.cycles,
        });
        let token = tokens.get().await.map_err(LoadError::Token)?;
        let gate = [
            ("PGHOST", emulator.host().to_string()),
            ("PGPORT", emulator.port().to_string()),
            ("PGUSER", emulator.user().to_string()),
            ("PGPASSWORD", token.secret().to_string()),
            ("PGSSLMODE", "verify-full".to_string()),
            ("PGSSLROOTCERT", emulator.ca_path().display().to_string()),
        ];
        let through = |addr: std::net::SocketAddr| {
            [
                ("PGHOST", addr.ip().to_string()),
                ("PGPORT", addr.port().to_string()),
                ("PGUSER", emulator.user().to_string()),
                ("PGSSLMODE", "disable".to_string()),
            ]
        };
        let (through_proxy, through_warm) = (through(proxy_addr), through(warm_addr));
        let arms = [
            ("gate", &gate[..]),
            ("proxy", &through_proxy[..]),
            ("proxy-warm", &through_warm[..]),
        ];
        // Paced runs in both socket tables, then the full-speed runs in the machine's own.
        for (idle, paced) in [(0, true), (config.idle_sockets, true), (0, false)] {
            // Held for these runs only, so the others have the machine's own table.
            let held = if idle == 0 {
                None
            } else {
                let held = tokio::task::spawn_blocking(move || IdleSockets::hold(idle))
                    .await
                    .map_err(|e| LoadError::IdleSockets(std::io::Error::other(e.to_string())))?
                    .map_err(LoadError::IdleSockets)?;
                Some(held)
            };
            for (target, env) in arms {
                if target == "proxy-warm" {
                    // Each arm starts as the proxy stands between bursts: its warm sessions signed in.
                    let ready = async {
                        while warm_proxy.stats().warm_idle < config.warm as u64 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    if tokio::time::timeout(Duration::from_secs(60), ready)
                        .await
                        .is_err()
                    {
                        return Err(LoadError::invalid(format!(
                            "the warm proxy had {} of {} warm sessions after 60 s",
                            warm_proxy.stats().warm_idle,
                            config.warm
                        )));
                    }
                }
                let before = load_average();
                on_event(Event::ConnectRun {
                    clients: config.clients,
                    duration: config.run_duration,
                    rate: paced.then_some(config.rate),
                    through: target,
                    idle_sockets: idle,
                });
                let tcp_sockets = tcp_sockets_on_machine();
                let measured = pgbench::run_connecting(
                    env,
                    setup::PGBENCH_DB,
                    config.clients,
                    config.run_duration,
                    paced.then_some(config.rate),
                )
                .await?;
                runs.push(ConnectRun {
                    cycle,
                    target,
                    paced,
                    idle_sockets: idle,
                    tcp_sockets,
                    measured,
                    load: (before, load_average()),
                });
            }
            drop(held);
        }
    }
    proxy.shutdown().await;
    warm_proxy.shutdown().await;
    tokens.shutdown();
    let figure = |target: &str, idle: bool, cycle: usize, of: fn(&ConnectingRun) -> f64| {
        runs.iter()
            .find(|r| r.paced && r.target == target && (r.idle_sockets > 0) == idle && r.cycle == cycle)
            .map(|r| of(&r.measured))
    };
    let over_gate = |target: &str, idle: bool, of: fn(&ConnectingRun) -> f64| {
        PairedRatio::of_pairs(
            (0..config.cycles)
                .filter_map(|c| Some((figure(target, idle, c, of)?, figure("gate", idle, c, of)?))),
        )
    };
    let latency_over_gate = over_gate("proxy", false, |m| m.latency_ms);
    let latency_over_gate_idle = over_gate("proxy", true, |m| m.latency_ms);
    let connect_over_gate = over_gate("proxy", false, |m| m.connection_ms);
    let connect_over_gate_idle = over_gate("proxy", true, |m| m.connection_ms);
    let warm_latency_over_gate = over_gate("proxy-warm", false, |m| m.latency_ms);
    let warm_latency_over_gate_idle = over_gate("proxy-warm", true, |m| m.latency_ms);
    Ok(ProxyConnectReport {
        config,
        runs,
        latency_over_gate,
        latency_over_gate_idle,
        connect_over_gate,
        connect_over_gate_idle,
        warm_latency_over_gate,
        warm_latency_over_gate_idle,
    })
}

impl ProxyConnectReport {
    /// The median, min and max latency (ms) of the paced runs of `target`, with or without the idle
    /// sockets.
    pub fn latency(&self, target: &str, idle: bool) -> Option<(f64, f64, f64)> {
        let values = self
            .runs
            .iter()
            .filter(|r| r.paced && r.target == target && (r.idle_sockets > 0) == idle)
            .map(|r| r.measured.latency_ms);
        PairedRatio::of(values).map(|r| (r.median, r.min, r.max))
    }

    /// The median, min and max tps of the full-speed runs of `target`.
    pub fn full_speed_tps(&self, target: &str) -> Option<(f64, f64, f64)> {
        let values = self
            .runs
            .iter()
            .filter(|r| !r.paced && r.target == target)
            .map(|r| r.measured.tps);
        PairedRatio::of(values).map(|r| (r.median, r.min, r.max))
    }

    /// The summary for a person.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "\nentra-pg bench --mode proxy-connect: pgbench -n -C -S -c {} -j 2 -R {} -T {}, {} cycles, \
             sign-in delay {} ms, {} warm sessions in the warm arm\n\n",
            c.clients,
            c.rate,
            c.run_duration.as_secs(),
            c.cycles,
            c.sign_in_delay.as_millis(),
            c.warm
        );
        for r in &self.runs {
            let load = r.load.0.map_or_else(|| "-".into(), |l| format!("{:.2}", l[0]));
            out.push_str(&format!(
                "  #{} {:<10} {:<10} {:>6} TCP sockets  latency {:>7.2} ms  connect {:>7.2} ms  {:>6.1} tps  \
                 (load average {load})\n",
                r.cycle + 1,
                r.target,
                if r.paced { "paced" } else { "full speed" },
                r.tcp_sockets,
                r.measured.latency_ms,
                r.measured.connection_ms,
                r.measured.tps
            ));
        }
        out.push('\n');
        for (label, ratio) in [
            ("proxy / gate latency", &self.latency_over_gate),
            (
                "proxy / gate latency, beside the idle sockets",
                &self.latency_over_gate_idle,
            ),
            ("proxy / gate connection time", &self.connect_over_gate),
            (
                "proxy / gate connection time, beside the idle sockets",
                &self.connect_over_gate_idle,
            ),
            ("warm proxy / gate latency", &self.warm_latency_over_gate),
            (
                "warm proxy / gate latency, beside the idle sockets",
                &self.warm_latency_over_gate_idle,
            ),
        ] {
            if let Some(r) = ratio {
                out.push_str(&format!("  {label:<54} {}\n", r.display()));
            }
        }
        for target in ["gate", "proxy", "proxy-warm"] {
            if let Some((median, min, max)) = self.full_speed_tps(target) {
                out.push_str(&format!(
                    "  full-speed tps, {target:<10} (a figure, not a target)    {median:.1} ({min:.1}–{max:.1})\n"
                ));
            }
        }
        out
    }

    /// Writes the JSON report to `proxy-connect-<unix seconds>.json` in `dir` (created when missing);
    /// returns its path.
    pub fn write(&self, dir: &std::path::Path) -> Result<std::path::PathBuf, LoadError> {
        let io_error = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| LoadError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = dir.join(format!("proxy-connect-{stamp}.json"));
        let text = serde_json::to_string_pretty(&self.json()).map_err(LoadError::Json)?;
        std::fs::write(&path, text).map_err(io_error(&path))?;
        Ok(path)
    }

    /// The report as JSON: the latency ratio under `ratios.proxy_connect_latency_over_gate`, and beside
    /// the idle sockets under `ratios.proxy_connect_latency_over_gate_idle_sockets`; the same of the
    /// connection time under `ratios.proxy_connect_time_over_gate[_idle_sockets]`; the warm arm's latency
    /// ratio under `ratios.proxy_warm_connect_latency_over_gate[_idle_sockets]`; full-speed tps under
    /// `full_speed_tps`.
    pub fn json(&self) -> serde_json::Value {
        let c = &self.config;
        let full_speed: serde_json::Map<String, serde_json::Value> = ["gate", "proxy", "proxy-warm"]
            .iter()
            .map(|t| {
                let tps = self
                    .full_speed_tps(t)
                    .map(|(median, min, max)| json!({ "median": median, "min": min, "max": max }));
                (t.to_string(), json!(tps))
            })
            .collect();
        json!({
            "config": {
                "clients": c.clients,
                "run_duration_s": c.run_duration.as_secs(),
                "cycles": c.cycles,
                "rate": c.rate,
                "sign_in_delay_ms": c.sign_in_delay.as_millis() as u64,
                "idle_sockets": c.idle_sockets,
                "warm": c.warm,
                "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            },
            "runs": self.runs.iter().map(|r| json!({
                "cycle": r.cycle, "target": r.target, "paced": r.paced, "idle_sockets": r.idle_sockets,
                "tcp_sockets": r.tcp_sockets, "latency_ms": r.measured.latency_ms,
                "connection_ms": r.measured.connection_ms, "tps": r.measured.tps,
                "load_average": { "before": r.load.0, "after": r.load.1 },
            })).collect::<Vec<_>>(),
            "ratios": {
                "proxy_connect_latency_over_gate": self.latency_over_gate.as_ref().map(PairedRatio::json),
                "proxy_connect_latency_over_gate_idle_sockets":
                    self.latency_over_gate_idle.as_ref().map(PairedRatio::json),
                "proxy_connect_time_over_gate": self.connect_over_gate.as_ref().map(PairedRatio::json),
                "proxy_connect_time_over_gate_idle_sockets":
                    self.connect_over_gate_idle.as_ref().map(PairedRatio::json),
                "proxy_warm_connect_latency_over_gate": self.warm_latency_over_gate.as_ref().map(PairedRatio::json),
                "proxy_warm_connect_latency_over_gate_idle_sockets":
                    self.warm_latency_over_gate_idle.as_ref().map(PairedRatio::json),
            },
            "full_speed_tps": full_speed,
        })
    }
}
