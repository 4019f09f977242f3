//! The token hot path: `TokenHandle::current()` against the floor of cloning an `Arc<String>`, plus
//! `get()` on a warm cache and `current()` under concurrent readers.
//!
//! After criterion's report, a plain loop of each measures both once more in the same process and prints
//! one comparable line (`token current(): X ns, Arc<String> clone: Y ns, ratio X/Y = R`); the target is
//! within 2× and single-digit nanoseconds.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use criterion::Criterion;
use entra_token::{AccessToken, FetchFuture, RefreshPolicy, Refresher, TokenHandle, TokenSource};
use tokio::runtime::Runtime;

/// A source whose tokens live a day, so the refresher never renews during a run.
#[derive(Debug)]
struct LongLived;

impl TokenSource for LongLived {
    fn name(&self) -> &str {
        "bench"
    }
    fn fetch<'a>(&'a self, _scope: &'a str) -> FetchFuture<'a> {
        Box::pin(async {
            Ok(AccessToken::new(
                "eyJhbGciOiJSUzI1NiJ9.YmVuY2gtdG9rZW4.c2lnbmF0dXJl",
                SystemTime::now() + Duration::from_secs(24 * 3600),
            ))
        })
    }
}

/// A current-thread runtime and a handle whose cache is warm (`current()` is `Some`).
fn warm_handle() -> (Runtime, TokenHandle) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime can be built");
    let handle = rt.block_on(async {
        let handle = Refresher::spawn(LongLived, "bench/.default", RefreshPolicy::default());
        handle.get().await.expect("the bench source always succeeds");
        handle
    });
    assert!(handle.current().is_some(), "the cache is warm before measuring");
    (rt, handle)
}

fn baseline() -> Arc<String> {
    Arc::new("eyJhbGciOiJSUzI1NiJ9.YmVuY2gtdG9rZW4.c2lnbmF0dXJl".to_string())
}

const THREADS: usize = 8;

/// `iters` calls of `f` on each of [`THREADS`] threads started together; the wall time of the slowest.
fn contended(iters: u64, f: impl Fn() + Send + Sync + Clone + 'static) -> Duration {
    let barrier = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (barrier, f) = (barrier.clone(), f.clone());
            thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    f();
                }
                start.elapsed()
            })
        })
        .collect();
    workers
        .into_iter()
        .map(|w| w.join().expect("a bench thread panicked"))
        .max()
        .unwrap_or_default()
}

fn benches(c: &mut Criterion, rt: &Runtime, handle: &TokenHandle) {
    let arc = baseline();
    let mut group = c.benchmark_group("token");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("current", |b| b.iter(|| black_box(handle.current())));
    group.bench_function("arc_string_clone", |b| {
        b.iter(|| black_box(Arc::clone(black_box(&arc))))
    });
    group.bench_function("get_warm", |b| {
        b.to_async(rt).iter(|| async { black_box(handle.get().await) })
    });
    group.bench_function("current_8_threads", |b| {
        let handle = handle.clone();
        b.iter_custom(|iters| {
            let handle = handle.clone();
            contended(iters, move || {
                black_box(handle.current());
            })
        })
    });
    group.bench_function("arc_string_clone_8_threads", |b| {
        let arc = arc.clone();
        b.iter_custom(|iters| {
            let arc = arc.clone();
            contended(iters, move || {
                black_box(Arc::clone(black_box(&arc)));
            })
        })
    });
    group.finish();
}

/// Nanoseconds per call of `f` over `n` calls, after a short warm-up.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn summary(handle: &TokenHandle) {
    const N: u32 = 5_000_000;
    const PAIRS: usize = 5;
    let arc = baseline();
    // Interleaved (baseline, ours) pairs, order alternating.
    let (mut current, mut borrowed) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        let clone = || {
            per_call(N, || {
                black_box(Arc::clone(black_box(&arc)));
            })
        };
        let ours = || {
            let c = per_call(N, || {
                black_box(handle.current());
            });
            let b = per_call(N, || {
                black_box(handle.with_current(|t| t.secret().len()));
            });
            (c, b)
        };
        let (base, (c, b)) = if i % 2 == 0 {
            let base = clone();
            (base, ours())
        } else {
            let o = ours();
            (clone(), o)
        };
        current.push((c, base));
        borrowed.push((b, base));
    }
    let show = |pairs: &[(f64, f64)]| {
        entra_load::PairedRatio::of_pairs(pairs.iter().copied()).map_or_else(|| "-".into(), |r| r.display())
    };
    let median = |pairs: &[(f64, f64)], side: fn(&(f64, f64)) -> f64| {
        entra_load::PairedRatio::of(pairs.iter().map(side)).map_or(0.0, |r| r.median)
    };
    println!(
        "token current(): {:.2} ns, Arc<String> clone: {:.2} ns (medians), ratio {}",
        median(&current, |p| p.0),
        median(&current, |p| p.1),
        show(&current)
    );
    println!(
        "token with_current(): {:.2} ns, Arc<String> clone: {:.2} ns (medians), ratio {}",
        median(&borrowed, |p| p.0),
        median(&borrowed, |p| p.1),
        show(&borrowed)
    );
    breakdown(N);
}

/// Where `current()`'s time goes, on a replica of the refresher's cache (`ArcSwapOption` of a struct
/// holding the token's `Arc` and the fetch time): the guarded load alone (what a borrowing accessor
/// would cost), load plus `Arc` clone (what `current()` does) and `load_full()`, on one thread and on
/// [`THREADS`] at once (where the shared reference count, not the load, is what costs).
fn breakdown(n: u32) {
    struct Cached {
        token: Arc<String>,
        _fetched_at: Instant,
    }
    let swap = Arc::new(ArcSwapOption::from_pointee(Cached {
        token: baseline(),
        _fetched_at: Instant::now(),
    }));
    let load_only = |swap: &ArcSwapOption<Cached>| {
        black_box(black_box(swap).load().as_ref().map(|c| c.token.len()));
    };
    let load_clone = |swap: &ArcSwapOption<Cached>| {
        black_box(black_box(swap).load().as_ref().map(|c| c.token.clone()));
    };
    let load_full = |swap: &ArcSwapOption<Cached>| {
        black_box(black_box(swap).load_full());
    };
    let one = |f: fn(&ArcSwapOption<Cached>)| per_call(n, || f(&swap));
    let many = |f: fn(&ArcSwapOption<Cached>)| {
        let swap = swap.clone();
        contended(u64::from(n / 10), move || f(&swap)).as_nanos() as f64 / f64::from(n / 10)
    };
    println!(
        "  breakdown, 1 thread: load() alone {:.2} ns, load() + Arc clone {:.2} ns, load_full() {:.2} ns",
        one(load_only),
        one(load_clone),
        one(load_full)
    );
    let arc = baseline();
    let arc_many = contended(u64::from(n / 10), move || {
        black_box(Arc::clone(black_box(&arc)));
    })
    .as_nanos() as f64
        / f64::from(n / 10);
    println!(
        "  breakdown, {THREADS} threads (wall ns per call per thread): load() alone {:.2}, load() + Arc clone {:.2}, \
         load_full() {:.2}, Arc<String> clone {arc_many:.2}",
        many(load_only),
        many(load_clone),
        many(load_full)
    );
}

fn main() {
    let (rt, handle) = warm_handle();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt, &handle);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test; the 10M-call loop is for real runs.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test") {
        summary(&handle);
    }
}
