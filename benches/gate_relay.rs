//! The gate's relay overhead: `SELECT 1` round trips through `EntraGate` against the same queries sent
//! straight to the `TestPostgres` behind it, with 1 and with 16 connections (16 tasks, each querying on
//! its own connection), in one run.
//!
//! Both paths use TLS from the client: the direct path ends it in PostgreSQL (TCP, SCRAM password set
//! with `ALTER ROLE`), the gate path ends it in the gate, which then relays over the server's unix socket.
//! After criterion's report, a plain 2-second loop per path and concurrency prints one comparable line:
//! `gate_relay c=N: direct X qps, gate Y qps (medians), gate/direct R (min–max, 5 pairs)`, from 5 interleaved pairs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use entra_emulator::postgres::{quote_ident, quote_literal};
use entra_emulator::Emulator;
use tokio::runtime::Runtime;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

const CONCURRENCY: [usize; 2] = [1, 16];
/// How long each path runs for the summary line.
const SUMMARY_RUN: Duration = Duration::from_secs(2);
/// Interleaved (direct, gate) pairs per concurrency for the summary.
const PAIRS: usize = 5;
/// The direct path's password (a throwaway cluster; the gate path signs in with a token).
const DIRECT_PASSWORD: &str = "gate-relay-bench-password";

/// One session and its prepared `SELECT 1`, so each query is one round trip.
struct Session {
    client: Client,
    select_one: Statement,
}

impl Session {
    async fn select_one(&self) {
        let row = self
            .client
            .query_one(&self.select_one, &[])
            .await
            .expect("SELECT 1 succeeds on a healthy session");
        let one: i32 = row.get(0);
        assert_eq!(one, 1);
    }
}

/// The emulator and as many sessions on each path as the highest concurrency needs.
struct Setup {
    _emulator: Emulator,
    direct: Vec<Arc<Session>>,
    gate: Vec<Arc<Session>>,
}

async fn connect(config: &tokio_postgres::Config, tls: &MakeRustlsConnect) -> Arc<Session> {
    let (client, connection) = config.connect(tls.clone()).await.expect("the bench can sign in");
    tokio::spawn(connection);
    let select_one = client.prepare("SELECT 1").await.expect("SELECT 1 prepares");
    Arc::new(Session { client, select_one })
}

impl Setup {
    async fn start() -> Setup {
        // The gate on this runtime, as a service's own tests would run it: measuring the relay, not wake-ups
        // across two runtimes (see `EmulatorBuilder::on_caller_runtime`).
        let emulator = Emulator::builder()
            .on_caller_runtime(true)
            .start()
            .await
            .unwrap_or_else(|e| panic!("starting the emulator: {e}"));
        let role = emulator.user().to_string();
        emulator
            .postgres()
            .execute(&format!(
                "ALTER ROLE {} PASSWORD {}",
                quote_ident(&role).expect("a valid role name"),
                quote_literal(DIRECT_PASSWORD).expect("a valid password")
            ))
            .await
            .unwrap_or_else(|e| panic!("giving the role a password: {e}"));
        let tls = MakeRustlsConnect::new(
            emulator
                .postgres()
                .ca()
                .client_config()
                .expect("a client TLS configuration"),
        );
        let config = |port: u16, password: &str| {
            let mut config = tokio_postgres::Config::new();
            config
                .host(emulator.host())
                .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .port(port)
                .user(&role)
                .password(password)
                .dbname(emulator.dbname())
                .ssl_mode(SslMode::Require);
            config
        };
        let max = CONCURRENCY.into_iter().max().unwrap_or(1);
        let direct_config = config(emulator.postgres().port(), DIRECT_PASSWORD);
        let gate_config = config(emulator.port(), &emulator.token_for(emulator.principal()));
        let mut direct = Vec::with_capacity(max);
        let mut gate = Vec::with_capacity(max);
        for _ in 0..max {
            direct.push(connect(&direct_config, &tls).await);
            gate.push(connect(&gate_config, &tls).await);
        }
        Setup {
            _emulator: emulator,
            direct,
            gate,
        }
    }

    fn path(&self, name: &str) -> &[Arc<Session>] {
        match name {
            "direct" => &self.direct,
            _ => &self.gate,
        }
    }
}

/// One `SELECT 1` on each of the first `c` sessions, each in its own task, all at once.
async fn round(sessions: &[Arc<Session>], c: usize) {
    if c == 1 {
        sessions[0].select_one().await;
        return;
    }
    let tasks: Vec<_> = sessions[..c]
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.select_one().await })
        })
        .collect();
    for task in tasks {
        task.await.expect("a query task does not panic");
    }
}

/// Queries per second over [`SUMMARY_RUN`] with `c` tasks, each looping on its own session.
async fn qps(sessions: &[Arc<Session>], c: usize) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + SUMMARY_RUN;
    let tasks: Vec<_> = sessions[..c]
        .iter()
        .map(|s| {
            let (s, done) = (s.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    s.select_one().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a query task does not panic");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn benches(c: &mut Criterion, rt: &Runtime, setup: &Setup) {
    let mut group = c.benchmark_group("gate_relay");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for concurrency in CONCURRENCY {
        group.throughput(Throughput::Elements(concurrency as u64));
        for path in ["direct", "gate"] {
            let sessions = setup.path(path);
            group.bench_function(BenchmarkId::new(path, format!("c={concurrency}")), |b| {
                b.to_async(rt).iter(|| round(sessions, concurrency))
            });
        }
    }
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");
    let setup = rt.block_on(Setup::start());

    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &rt, &setup);
    criterion.final_summary();

    // `cargo test --benches` runs each benchmark once as a smoke test: no summary then.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    println!("load average before: {:?}", entra_load::load_average());
    for concurrency in CONCURRENCY {
        // Interleaved pairs, order alternating, so both sides see the same machine.
        let mut pairs = Vec::new();
        for i in 0..PAIRS {
            let (direct, gate) = if i % 2 == 0 {
                let direct = rt.block_on(qps(&setup.direct, concurrency));
                (direct, rt.block_on(qps(&setup.gate, concurrency)))
            } else {
                let gate = rt.block_on(qps(&setup.gate, concurrency));
                (rt.block_on(qps(&setup.direct, concurrency)), gate)
            };
            pairs.push((gate, direct));
        }
        let median = |side: fn(&(f64, f64)) -> f64| {
            entra_load::PairedRatio::of(pairs.iter().map(side)).map_or(0.0, |r| r.median)
        };
        println!(
            "gate_relay c={concurrency}: direct {:.0} qps, gate {:.0} qps (medians), gate/direct {}",
            median(|p| p.1),
            median(|p| p.0),
            entra_load::PairedRatio::of_pairs(pairs.iter().copied())
                .map_or_else(|| "-".into(), |r| r.display())
        );
    }
    println!("load average after: {:?}", entra_load::load_average());
    drop(setup);
}
