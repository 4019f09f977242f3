//! Memory per idle connection: an entra-pool pool against plain deadpool-postgres, same server, same
//! password, same TLS, counted by dhat's heap statistics (bytes live on the heap; the server's memory is
//! its own process's and not counted).
//!
//! Each sample builds a pool, opens `CONNECTIONS` connections at once, returns them (idle), lets the
//! connection tasks settle, and divides the heap growth since before the pool by `CONNECTIONS`; then
//! drops the pool. Samples alternate (entra, plain, plain, entra, …) over `PAIRS` pairs, and the
//! summary prints the median of the pair ratios with min and max, and the load average.

use std::time::Duration;

use deadpool_postgres::Pool;

mod common;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CONNECTIONS: usize = 40;
const PAIRS: usize = 5;

async fn open_all(pool: &Pool) {
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        held.push(pool.get().await.expect("connection"));
    }
    for client in &held {
        client.query_one("SELECT 1", &[]).await.expect("SELECT 1");
    }
}

/// Heap bytes per idle connection of the pool `make` builds.
async fn per_connection<F, Fut>(make: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (Pool, Box<dyn std::any::Any>)>,
{
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = dhat::HeapStats::get().curr_bytes as f64;
    let (pool, keep) = make().await;
    open_all(&pool).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.status().size, CONNECTIONS);
    let after = dhat::HeapStats::get().curr_bytes as f64;
    drop(pool);
    drop(keep);
    (after - before) / CONNECTIONS as f64
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return; // `cargo test --benches`: nothing to measure
    }
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pools = common::SamePassword::start().await;
        println!("load average before: {:?}", entra_load::load_average());
        let entra = || async {
            let pool = pools.entra(CONNECTIONS).await;
            (pool.pool().clone(), Box::new(pool) as Box<dyn std::any::Any>)
        };
        let plain = || async { (pools.plain(CONNECTIONS), Box::new(()) as Box<dyn std::any::Any>) };
        // One of each first, unmeasured: lazily built statics (rustls, tokio) are not a pool's cost.
        per_connection(entra).await;
        per_connection(plain).await;
        let mut pairs = Vec::new();
        for i in 0..PAIRS {
            let (e, p) = if i % 2 == 0 {
                let e = per_connection(entra).await;
                (e, per_connection(plain).await)
            } else {
                let p = per_connection(plain).await;
                (per_connection(entra).await, p)
            };
            println!(
                "pair {}: entra {e:.0} B, plain {p:.0} B per idle connection",
                i + 1
            );
            pairs.push((e, p));
        }
        let ratio = entra_load::PairedRatio::of_pairs(pairs.iter().copied());
        println!(
            "memory per idle connection ({CONNECTIONS} connections): entra/plain {}",
            ratio.map_or_else(|| "-".into(), |r| r.display())
        );
        println!("load average after: {:?}", entra_load::load_average());
    });
}
