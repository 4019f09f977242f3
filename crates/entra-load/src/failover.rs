//! The failover drill: while a load runs, the server restarts (every session dies, as when a primary
//! vanishes) and the gate accepts nothing for a while, then comes back on the same name. It measures
//! what failed and how long the pool took to serve again, by itself.

use std::time::{Duration, Instant};

use entra_emulator::Emulator;

use crate::drive::Live;
use crate::error::LoadError;
use crate::event::Event;

/// How long the drill waits, after the gate's return, for the pool to serve again before it gives up.
pub const SERVE_AGAIN_WITHIN: Duration = Duration::from_secs(60);

/// What the failover drill saw.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Drill {
    /// How long the gate stayed away.
    pub pause: Duration,
    /// Errors before the drill began (must be 0).
    pub errors_before: u64,
    /// Errors from the failure until the pool served again: what was in flight when the server went.
    pub errors: u64,
    /// From the failure to the first acknowledged statement after it.
    pub recovered_after: Duration,
    /// From the gate's return to the first acknowledged statement.
    pub served_after_return: Duration,
    /// Token requests during the drill.
    pub token_fetches: usize,
}

impl Drill {
    /// Errors after the pool served again, of a run that ended with `total` errors.
    pub fn errors_after(&self, total: u64) -> u64 {
        total.saturating_sub(self.errors_before + self.errors)
    }

    /// Whether, of a run that ended with `total` errors, only what was in flight when the server went
    /// failed: the pool recovered by itself.
    pub fn only_in_flight_failed(&self, total: u64) -> bool {
        self.errors == total
    }
}

/// Waits `at`, then takes the server away for `pause` under the load counted by `live`: the gate stops
/// accepting, the server restarts (killing every session), the gate waits out the rest of `pause`, then
/// accepts again. Returns once the load is served again, telling `on_event` when the server goes and when
/// the pool serves again.
///
/// Fails when the emulator cannot restart its server, or when the pool does not serve again within
/// [`SERVE_AGAIN_WITHIN`] of the gate's return.
pub async fn drill(
    emulator: &Emulator,
    live: &Live,
    at: Duration,
    pause: Duration,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Drill, LoadError> {
    tokio::time::sleep(at).await;
    on_event(Event::FailoverBegins { pause });
    let (errors_before, fetches_before) = (live.errors(), emulator.identity().token_requests());
    let failed_at = Instant::now();
    emulator.gate().pause_accepting(true);
    emulator
        .gate()
        .restart_upstream()
        .await
        .map_err(|source| LoadError::Emulator {
            action: "restart the server",
            source,
        })?;
    let away = pause.saturating_sub(failed_at.elapsed());
    tokio::time::sleep(away).await;
    emulator.gate().pause_accepting(false);
    let back_at = Instant::now();
    let ops = live.ops();
    while live.ops() == ops {
        if back_at.elapsed() > SERVE_AGAIN_WITHIN {
            return Err(LoadError::NotServedAgain {
                within: SERVE_AGAIN_WITHIN,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    on_event(Event::ServedAgain);
    Ok(Drill {
        pause,
        errors_before,
        errors: live.errors() - errors_before,
        recovered_after: failed_at.elapsed(),
        served_after_return: back_at.elapsed(),
        token_fetches: emulator.identity().token_requests() - fetches_before,
    })
}
