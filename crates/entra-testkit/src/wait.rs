//! Waits for events under upper bounds that only catch a hang.
//!
//! A test on a busy machine asserts on the order of events, never on how soon they came: these bounds
//! are far above what the awaited step takes on a loaded machine, and exist so that a regression fails
//! the test instead of hanging it. The tests use 60 s or more for a step that takes milliseconds: in the
//! stress run's one-core pass (a third of one core per test binary), a `pg_terminate_backend` beside a
//! write load took over 10 s.

use std::future::Future;
use std::time::Duration;

/// Awaits `future`, failing the test (instead of hanging) after `secs` seconds.
pub async fn bounded<F: Future>(secs: u64, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {secs} s"),
    }
}

/// Waits until `condition()` holds, checking every 20 ms, failing the test after `secs` seconds.
pub async fn until(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    bounded(secs, what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Terminates `role`'s sessions at `gate` until at least `count` have been terminated, failing the
/// test after `secs` seconds; returns how many were. Sessions the code under test opens in the background
/// (spares, warm sessions) may not exist yet at the first call: this waits for the event, not a guess at
/// the moment.
pub async fn terminate_sessions(
    gate: &entra_emulator::EntraGate,
    role: &str,
    count: usize,
    secs: u64,
) -> usize {
    bounded(secs, "terminating sessions at the gate", async {
        let mut terminated = 0;
        while terminated < count {
            terminated += gate
                .terminate_sessions(role)
                .await
                .unwrap_or_else(|e| panic!("terminate_sessions: {e}"));
            if terminated < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        terminated
    })
    .await
}
