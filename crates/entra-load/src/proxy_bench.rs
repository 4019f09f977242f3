//! The proxy's price: `pgbench -S -M prepared -c C` through `entra-proxy` against the same pgbench
//! straight at the emulator's gate, interleaved (gate, proxy, relay, gate, proxy, relay…), each ratio
//! reported as the median of the pairs with min and max.
//!
//! The third run prices the hop alone: pgbench through a bare byte relay on loopback (tokio's
//! `copy_bidirectional`, in the same process and runtime as the proxy), its TLS and token end to end to the
//! gate. Whatever the proxy costs beyond the relay is its own work; what the relay costs, any local proxy
//! pays. Where `socat` is installed, a fourth run does the same through it: the hop with a relay in C.
//!
//! Every run signs in as the emulator's principal with a valid token: the gate and relay runs with the
//! token as `PGPASSWORD` over verify-full TLS, as a hand-written script would; the proxy run with no
//! password and no TLS on loopback, the proxy opening each upstream session through the connection plan.

use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::EntraConfig;
use entra_proxy::ProxyBuilder;
use entra_token::Env;
use serde_json::json;

use crate::error::LoadError;
use crate::event::Event;
use crate::pairs::{load_average, PairedRatio};
use crate::{pgbench, setup};

/// What to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyBenchConfig {
    /// pgbench's `-c`.
    pub clients: usize,
    /// Length of each pgbench run.
    pub run_duration: Duration,
    /// Gate/proxy pairs (at least 3 for a ratio worth publishing).
    pub cycles: usize,
}

impl ProxyBenchConfig {
    /// `clients` clients, `cycles` pairs of `run_duration` runs.
    pub fn new(clients: usize, run_duration: Duration, cycles: usize) -> Self {
        ProxyBenchConfig {
            clients,
            run_duration,
            cycles,
        }
    }
}

/// One pgbench run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyRun {
    /// The pair it belongs to.
    pub cycle: usize,
    /// `gate`, `proxy`, `relay` or `socat`.
    pub target: &'static str,
    /// Transactions per second, without initial connection time.
    pub tps: f64,
    /// Load average before and after.
    pub load: (Option<[f64; 3]>, Option<[f64; 3]>),
}

/// What the proxy benchmark measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyBenchReport {
    /// The configuration.
    pub config: ProxyBenchConfig,
    /// Every run, in order.
    pub runs: Vec<ProxyRun>,
    /// Proxy tps over gate tps, per pair.
    pub proxy_over_gate: Option<PairedRatio>,
    /// Bare-relay tps over gate tps, per pair: the price of the extra hop alone.
    pub relay_over_gate: Option<PairedRatio>,
    /// The same through `socat`, a relay in C (when installed).
    pub socat_over_gate: Option<PairedRatio>,
}

/// Runs the benchmark against a fresh emulator, telling `on_event` each step as it begins;
/// [`LoadError::PgbenchMissing`] when pgbench is not installed.
pub async fn run(
    config: ProxyBenchConfig,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<ProxyBenchReport, LoadError> {
    if config.clients == 0 || config.cycles == 0 || config.run_duration.is_zero() {
        return Err(LoadError::invalid(
            "clients, cycles and the run duration must be at least 1",
        ));
    }
    on_event(Event::EmulatorStarting);
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(3600))
        .start()
        .await
        .map_err(LoadError::EmulatorStart)?;
    let pg = emulator.postgres().clone();
    setup::prepare_pgbench_db(&pg).await?;
    setup::grant_pgbench_tables(&pg, emulator.user()).await?;

    let upstream = EntraConfig::from_env()
        .env(Env::from_pairs(emulator.env_vars()))
        .dbname(setup::PGBENCH_DB);
    let proxy = ProxyBuilder::new()
        .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .max_size(config.clients.max(1) * 2)
        .start(&upstream)
        .await
        .map_err(LoadError::ProxyStart)?;
    let tokens = proxy.tokens().cloned().ok_or(LoadError::NoTokenHandle)?;
    let proxy_addr = proxy.tcp_addresses()[0];
    let gate_addr = std::net::SocketAddr::from(([127, 0, 0, 1], emulator.port()));
    let (relay_addr, relay) = byte_relay(gate_addr).await?;
    let socat = socat_relay(gate_addr).await;
    if socat.is_none() {
        on_event(Event::SocatMissing);
    }

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
        let through_proxy = [
            ("PGHOST", proxy_addr.ip().to_string()),
            ("PGPORT", proxy_addr.port().to_string()),
            ("PGUSER", emulator.user().to_string()),
            ("PGSSLMODE", "disable".to_string()),
        ];
        // pgbench's own TLS and token, end to end to the gate, through a relay on 127.0.0.1 (the gate's
        // certificate names `localhost`).
        let through = |relay: std::net::SocketAddr| -> Vec<(&str, String)> {
            let mut env = gate.to_vec();
            env[1].1 = relay.port().to_string();
            env.push(("PGHOSTADDR", relay.ip().to_string()));
            env
        };
        let mut arms: Vec<(&'static str, Vec<(&str, String)>)> = vec![
            ("gate", gate.to_vec()),
            ("proxy", through_proxy.to_vec()),
            ("relay", through(relay_addr)),
        ];
        if let Some((socat_addr, _)) = &socat {
            arms.push(("socat", through(*socat_addr)));
        }
        for (target, env) in &arms {
            let target = *target;
            let before = load_average();
            on_event(Event::Pgbench {
                clients: config.clients,
                duration: config.run_duration,
                through: Some(target),
            });
            let tps = pgbench::run_with(env, setup::PGBENCH_DB, config.clients, config.run_duration).await?;
            runs.push(ProxyRun {
                cycle,
                target,
                tps,
                load: (before, load_average()),
            });
        }
    }
    proxy.shutdown().await;
    relay.abort();
    tokens.shutdown();
    let tps = |target: &str, cycle: usize| {
        runs.iter()
            .find(|r| r.target == target && r.cycle == cycle)
            .map(|r| r.tps)
    };
    let over_gate = |target: &str| {
        PairedRatio::of_pairs((0..config.cycles).filter_map(|c| Some((tps(target, c)?, tps("gate", c)?))))
    };
    let proxy_over_gate = over_gate("proxy");
    let relay_over_gate = over_gate("relay");
    let socat_over_gate = over_gate("socat");
    drop(socat);
    Ok(ProxyBenchReport {
        config,
        runs,
        proxy_over_gate,
        relay_over_gate,
        socat_over_gate,
    })
}

/// The same hop through `socat` (a relay written in C, one process per connection), when installed.
async fn socat_relay(target: std::net::SocketAddr) -> Option<(std::net::SocketAddr, tokio::process::Child)> {
    // A free port: taken by the OS, released, then given to socat.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = tokio::process::Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,nodelay"))
        .arg(format!("TCP:{target},nodelay"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Some((address, child));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A bare byte relay on loopback to `target`: the same local hop as the proxy's, with nothing done to the
/// bytes, so that what the proxy itself costs can be told from what the hop costs.
async fn byte_relay(
    target: std::net::SocketAddr,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), LoadError> {
    entra_testkit::relay(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), move || target)
        .await
        .map_err(LoadError::Relay)
}

impl ProxyBenchReport {
    /// The summary for a person.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "\nentra-pg bench --mode proxy: pgbench -S -M prepared -c {} -j 2, {} pairs of {} s runs\n\n",
            c.clients,
            c.cycles,
            c.run_duration.as_secs()
        );
        for r in &self.runs {
            let load = r.load.0.map_or_else(|| "-".into(), |l| format!("{:.2}", l[0]));
            out.push_str(&format!(
                "  #{} {:<6} {:>10.0} tps   (load average {load})\n",
                r.cycle + 1,
                r.target,
                r.tps
            ));
        }
        out.push('\n');
        for (through, ratio, what) in [
            ("the proxy", &self.proxy_over_gate, ""),
            ("a bare relay", &self.relay_over_gate, " (the hop alone)"),
            ("socat", &self.socat_over_gate, " (the hop, a C relay)"),
        ] {
            if let Some(r) = ratio {
                let label = format!("through {through} / straight at the gate");
                out.push_str(&format!("  {label:<46} {}{what}\n", r.display()));
            }
        }
        out
    }

    /// Writes the JSON report to `proxy-<unix seconds>.json` in `dir` (created when missing); returns its
    /// path.
    pub fn write(&self, dir: &std::path::Path) -> Result<std::path::PathBuf, LoadError> {
        let io_error = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| LoadError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = dir.join(format!("proxy-{stamp}.json"));
        let text = serde_json::to_string_pretty(&self.json()).map_err(LoadError::Json)?;
        std::fs::write(&path, text).map_err(io_error(&path))?;
        Ok(path)
    }

    /// The report as JSON, the ratio under `ratios.proxy_over_gate`.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "config": {
                "clients": self.config.clients,
                "run_duration_s": self.config.run_duration.as_secs(),
                "cycles": self.config.cycles,
                "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
            },
            "runs": self.runs.iter().map(|r| json!({
                "cycle": r.cycle, "target": r.target, "tps": r.tps,
                "load_average": { "before": r.load.0, "after": r.load.1 },
            })).collect::<Vec<_>>(),
            "ratios": {
                "proxy_over_gate": self.proxy_over_gate.as_ref().map(PairedRatio::json),
                "relay_over_gate": self.relay_over_gate.as_ref().map(PairedRatio::json),
                "socat_over_gate": self.socat_over_gate.as_ref().map(PairedRatio::json),
            },
        })
    }
}
