//! [`drive`]: tasks over a pool until a deadline, every operation timed, rotations watched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entra_token::{TokenHandle, TokenStatus};

use crate::stats::{RunStats, Sample};
use crate::workload::{self, Target, Workload};

/// Counters a caller can read while a run goes on (a progress line).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Live {
    /// Acknowledged operations so far.
    pub ops: AtomicU64,
    /// Failed operations so far.
    pub errors: AtomicU64,
}

impl Live {
    /// Acknowledged operations so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Failed operations so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// What [`drive`] measured.
#[derive(Debug)]
#[non_exhaustive]
pub struct Driven {
    /// Throughput, latency percentiles and per-second windows.
    pub stats: RunStats,
    /// When the token was renewed, in ms from the start (empty without a token handle).
    pub rotations_ms: Vec<u32>,
    /// The first error messages, distinct, at most five.
    pub first_errors: Vec<String>,
    /// `(task, seq)` of every write whose COMMIT was acknowledged.
    pub acked: Vec<(i32, i64)>,
}

/// What marks a window as a rotation window.
#[derive(Clone)]
pub enum Rotations<'a> {
    /// Nothing: no window is one.
    None,
    /// The refresher's renewals of this token.
    Token(&'a TokenHandle),
    /// Instants recorded by the caller (a plain pool's connection retirements).
    Recorded(Arc<parking_lot::Mutex<Vec<Instant>>>),
    /// Instants the caller reads once the run is over (the gate's sign-ins).
    Sampled(&'a (dyn Fn() -> Vec<Instant> + Sync)),
}

impl std::fmt::Debug for Rotations<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rotations::None => "None",
            Rotations::Token(_) => "Token",
            Rotations::Recorded(_) => "Recorded",
            Rotations::Sampled(_) => "Sampled",
        })
    }
}

/// Runs `tasks` tasks of `workload` on `pool` for `duration`, after opening the pool's connections (so
/// the first second does not pay for them), watching `tokens` for rotations.
pub async fn drive(
    target: &Target,
    tokens: Option<&TokenHandle>,
    workload: &Workload,
    tasks: usize,
    duration: Duration,
    live: Arc<Live>,
) -> Driven {
    let rotations = tokens.map_or(Rotations::None, Rotations::Token);
    drive_with(target, rotations, workload, tasks, duration, live).await
}

/// [`drive`], with rotation windows marked by `rotations`.
pub async fn drive_with(
    target: &Target,
    rotations: Rotations<'_>,
    workload: &Workload,
    tasks: usize,
    duration: Duration,
    live: Arc<Live>,
) -> Driven {
    warm_up(target, tasks).await;
    let started = Instant::now();
    let deadline = started + duration;
    let monitor = match &rotations {
        Rotations::Token(t) => Some(tokio::spawn(watch_rotations(t.watch(), started, deadline))),
        _ => None,
    };
    let workload = Arc::new(workload.clone());
    let mut set = tokio::task::JoinSet::new();
    for id in 0..tasks {
        set.spawn(workload::task(
            target.clone(),
            workload.clone(),
            live.clone(),
            id as i32,
            started,
            deadline,
        ));
    }
    let mut samples: Vec<Sample> = Vec::new();
    let mut errors_ms = Vec::new();
    let mut first_errors: Vec<String> = Vec::new();
    let mut note = |e: String| {
        if first_errors.len() < 5 && !first_errors.contains(&e) {
            first_errors.push(e);
        }
    };
    let mut acked = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(mut out) => {
                samples.append(&mut out.samples);
                errors_ms.append(&mut out.errors_ms);
                if let Some(e) = out.first_error {
                    note(e);
                }
                acked.extend(out.acked.iter().map(|&seq| (out.task, seq)));
            }
            Err(e) => {
                errors_ms.push(duration.as_millis().min(u32::MAX as u128) as u32);
                note(format!("a load task failed: {e}"));
            }
        }
    }
    // Operations in flight at the deadline finish after it; they count in the last window.
    let elapsed = started.elapsed().max(duration);
    let rotations_ms = match (monitor, rotations) {
        (Some(handle), _) => handle.await.unwrap_or_default(),
        (None, Rotations::Recorded(log)) => offsets(&log.lock(), started, deadline),
        (None, Rotations::Sampled(read)) => offsets(&read(), started, deadline),
        (None, _) => Vec::new(),
    };
    Driven {
        stats: RunStats::analyse(&samples, &errors_ms, &rotations_ms, elapsed),
        rotations_ms,
        first_errors,
        acked,
    }
}

/// The instants within the run, in ms from its start.
fn offsets(instants: &[Instant], started: Instant, deadline: Instant) -> Vec<u32> {
    instants
        .iter()
        .filter(|at| **at >= started && **at <= deadline)
        .map(|at| at.duration_since(started).as_millis().min(u32::MAX as u128) as u32)
        .collect()
}

/// Opens up to `tasks` of a checkout pool's connections and gives them back (a multiplexed pool opens
/// its connections when it is built). [`drive_with`] does it first; callers that count what the run itself
/// opened call it before they take their counts.
pub(crate) async fn warm_up(target: &Target, tasks: usize) {
    let Target::Checkout(pool) = target else {
        return;
    };
    let size = pool.status().max_size.min(tasks.max(1));
    let mut held = Vec::with_capacity(size);
    for _ in 0..size {
        match tokio::time::timeout(Duration::from_secs(10), pool.get()).await {
            Ok(Ok(client)) => held.push(client),
            // The run itself will count and report the failure.
            _ => break,
        }
    }
}

/// The instants (ms from `started`) at which the refresher renewed the token, until `deadline`.
async fn watch_rotations(
    mut rx: tokio::sync::watch::Receiver<TokenStatus>,
    started: Instant,
    deadline: Instant,
) -> Vec<u32> {
    let mut last = rx.borrow_and_update().refreshes;
    let mut at = Vec::new();
    let deadline = tokio::time::Instant::from_std(deadline);
    while let Ok(Ok(())) = tokio::time::timeout_at(deadline, rx.changed()).await {
        let refreshes = rx.borrow_and_update().refreshes;
        if refreshes > last {
            last = refreshes;
            at.push(started.elapsed().as_millis().min(u32::MAX as u128) as u32);
        }
    }
    at
}
