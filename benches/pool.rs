//! The token must cost nothing on the hot path: `pool.get()` + `SELECT 1` through an entra-pool pool
//! against the same through a plain deadpool-postgres pool with a static password, on the same
//! `TestPostgres`, at 1, 16 and 64 concurrent tasks, in one run.
//!
//! Both pools connect directly to PostgreSQL over TCP + verified TLS (no gate); the role's password is
//! set to the very token the entra pool's source hands out, so both sign in the same way. After criterion's
//! report, 5 interleaved pairs of 2-second loops per concurrency print the median ratio with its min and
//! max: `pool c=N: plain X qps, entra Y qps (medians), entra/plain R (min–max, 5 pairs)`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use deadpool_postgres::Pool;
use entra_emulator::TestPostgres;
use entra_postgres::EntraPool;

mod common;

const TASKS: [usize; 3] = [1, 16, 64];
const POOL_SIZE: usize = 16;
const SUMMARY_RUN: Duration = Duration::from_secs(2);
/// Interleaved (plain, entra) pairs per concurrency for the summary.
const PAIRS: usize = 5;

struct Setup {
    _pg: Arc<TestPostgres>,
    plain: Pool,
    entra: EntraPool,
}

async fn setup() -> Setup {
    let pools = common::SamePassword::start().await;
    let (plain, entra) = (pools.plain(POOL_SIZE), pools.entra(POOL_SIZE).await);
    // warm both pools to full size
    for pool in [&plain, entra.pool()] {
        let held: Vec<_> = futures_all(pool, POOL_SIZE).await;
        drop(held);
    }
    Setup {
        _pg: pools.pg,
        plain,
        entra,
    }
}

async fn futures_all(pool: &Pool, n: usize) -> Vec<deadpool_postgres::Object> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(pool.get().await.expect("connection"));
    }
    v
}

async fn one_query(pool: &Pool) {
    let client = pool.get().await.expect("pool get");
    let stmt = client.prepare_cached("SELECT 1").await.expect("prepare");
    let row = client.query_one(&stmt, &[]).await.expect("SELECT 1");
    assert_eq!(row.get::<_, i32>(0), 1);
}

/// Runs `total` queries spread over `tasks` concurrent tasks; returns the elapsed time.
async fn run(pool: &Pool, tasks: usize, total: u64) -> Duration {
    let start = Instant::now();
    let per_task = total.div_ceil(tasks as u64);
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    one_query(&pool).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    start.elapsed()
}

/// Queries per second over a fixed wall-clock window.
async fn qps(pool: &Pool, tasks: usize, window: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    one_query(&pool).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    done.load(Ordering::Relaxed) as f64 / window.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let setup = rt.block_on(setup());
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("pool_get_select1");
    for tasks in TASKS {
        group.throughput(Throughput::Elements(1));
        for (name, pool) in [("plain", &setup.plain), ("entra", setup.entra.pool())] {
            group.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
                b.to_async(&rt)
                    .iter_custom(|iters| run(pool, tasks, iters.max(tasks as u64)));
            });
        }
    }
    group.finish();
    criterion.final_summary();

    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches` / `--list`: no summary runs
    }
    println!("load average before: {:?}", entra_load::load_average());
    for tasks in TASKS {
        // Interleaved pairs, order alternating, so both sides see the same machine.
        let mut pairs = Vec::new();
        for i in 0..PAIRS {
            let (plain, entra) = if i % 2 == 0 {
                let plain = rt.block_on(qps(&setup.plain, tasks, SUMMARY_RUN));
                (plain, rt.block_on(qps(setup.entra.pool(), tasks, SUMMARY_RUN)))
            } else {
                let entra = rt.block_on(qps(setup.entra.pool(), tasks, SUMMARY_RUN));
                (rt.block_on(qps(&setup.plain, tasks, SUMMARY_RUN)), entra)
            };
            pairs.push((entra, plain));
        }
        let ratio = entra_load::PairedRatio::of_pairs(pairs.iter().copied());
        let median = |side: fn(&(f64, f64)) -> f64| {
            entra_load::PairedRatio::of(pairs.iter().map(side)).map_or(0.0, |r| r.median)
        };
        println!(
            "pool c={tasks}: plain {:.0} qps, entra {:.0} qps (medians), entra/plain {}",
            median(|p| p.1),
            median(|p| p.0),
            ratio.map_or_else(|| "-".into(), |r| r.display())
        );
    }
    println!("load average after: {:?}", entra_load::load_average());
}
