//! A control for the sign-in windows: sessions that sign in and out through the gate at a steady pace,
//! beside a load that none of them serves.
//!
//! A connection that signs in costs the machine CPU whoever waits for it: the TLS handshakes at the
//! client and at the gate, the token's check, the backend's fork and, when it closes, the backend's exit.
//! When client and server share the cores, every query in flight at that moment pays a share. A pool that
//! keeps its callers out of every sign-in still cannot make that cost go away, so "p99.9 in sign-in
//! windows over the rest" has a floor on a given machine. The bystander measures it: the load runs on a
//! pool whose connections never retire, while these sessions, at the very moments the pool under test
//! signed in during the run before (the same count, the same bunching), each sign in, run one point lookup
//! and close. Its sessions are cheaper than a pool's retirements (their
//! backends touch a few pages, not thousands, before they exit), so the floor it gives is a low one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use parking_lot::Mutex;
use tokio::task::{JoinHandle, JoinSet};

use crate::workload::ACCOUNTS_POINT;

/// Sessions signing in and out on a schedule, until [`Bystander::stop`].
pub(crate) struct Bystander {
    task: JoinHandle<()>,
    sessions: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Bystander {
    /// Starts one session at each offset of `schedule` from now, each on its own task, so sessions close
    /// together overlap as the sign-ins they copy did. Each session is taken out of `pool` and closed, so
    /// every `get()` signs in; `pool` needs room for the sessions that overlap.
    pub(crate) fn replay(pool: Pool, schedule: Vec<Duration>) -> Bystander {
        let sessions = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(Mutex::new(None));
        let task = tokio::spawn({
            let (sessions, first_error) = (sessions.clone(), first_error.clone());
            async move {
                let start = tokio::time::Instant::now();
                let mut running = JoinSet::new();
                for offset in schedule {
                    tokio::time::sleep_until(start + offset).await;
                    let (pool, sessions, first_error) = (pool.clone(), sessions.clone(), first_error.clone());
                    running.spawn(async move {
                        match one_session(&pool).await {
                            Ok(()) => {
                                sessions.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                first_error.lock().get_or_insert(e);
                            }
                        }
                    });
                }
                while running.join_next().await.is_some() {}
            }
        });
        Bystander {
            task,
            sessions,
            first_error,
        }
    }

    /// Stops (sessions still signing in are dropped), and returns how many sessions completed, or the
    /// first failure (every layer of it).
    pub(crate) async fn stop(self) -> Result<u64, String> {
        self.task.abort();
        // Aborted on purpose: the outcome says nothing; what it did is in the counters.
        let _ = self.task.await;
        match self.first_error.lock().take() {
            Some(e) => Err(e),
            None => Ok(self.sessions.load(Ordering::Relaxed)),
        }
    }
}

/// One session: sign in, one point lookup, close.
async fn one_session(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
    client
        .query_one(ACCOUNTS_POINT, &[&1i32])
        .await
        .map_err(|e| entra_postgres::report(&e))?;
    // Out of the pool and dropped: the connection closes and its backend exits, as a retired one does.
    drop(Object::take(client));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use entra_emulator::Emulator;
    use entra_postgres::PoolBuilder;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_scheduled_session_signs_in_at_the_gate_and_closes() {
        let emulator = Emulator::builder().start().await.expect("the emulator starts");
        crate::setup::prepare_app_tables(emulator.postgres(), emulator.dbname(), emulator.user())
            .await
            .expect("tables");
        let pool = PoolBuilder::new(crate::setup::emulator_config(&emulator))
            .max_size(4)
            .build()
            .await
            .expect("pool");
        let before = emulator.gate().sessions().len();
        // Two sessions start together, as sign-ins bunched in a retirement do.
        let schedule = [0, 150, 150].map(Duration::from_millis).to_vec();
        let bystander = Bystander::replay(pool.pool().clone(), schedule);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while bystander.sessions.load(Ordering::Relaxed) < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(bystander.stop().await, Ok(3));
        assert_eq!(
            emulator.gate().sessions().len() - before,
            3,
            "one sign-in per session"
        );
        assert_eq!(pool.pool().status().size, 0, "no session stays in the pool");
    }
}
