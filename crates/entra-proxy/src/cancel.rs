//! Cancel keys: each relayed session gets a backend key of the proxy's own, so a client's
//! `CancelRequest` (which arrives on a new connection) finds the upstream session it means. The
//! upstream's real key never reaches the client.

use std::collections::HashMap;

use entra_postgres::CancelTarget;
use parking_lot::Mutex;
use rand::Rng;

/// The sessions that can be cancelled, by the key the client was given.
#[derive(Default)]
pub(crate) struct CancelKeys {
    sessions: Mutex<HashMap<(i32, i32), CancelTarget>>,
}

impl CancelKeys {
    /// Registers `target` under a new random key; returns the key to give the client.
    pub(crate) fn register(&self, target: CancelTarget) -> (i32, i32) {
        let mut sessions = self.sessions.lock();
        let mut rng = rand::rng();
        loop {
            // PostgreSQL's process ids are positive; keep ours so too, for clients that assume it.
            let key = (rng.random_range(1..i32::MAX), rng.random::<i32>());
            if let std::collections::hash_map::Entry::Vacant(slot) = sessions.entry(key) {
                slot.insert(target);
                return key;
            }
        }
    }

    /// Forgets a session.
    pub(crate) fn remove(&self, key: (i32, i32)) {
        self.sessions.lock().remove(&key);
    }

    /// The upstream session behind a client's key.
    pub(crate) fn find(&self, key: (i32, i32)) -> Option<CancelTarget> {
        self.sessions.lock().get(&key).cloned()
    }
}

/// Forwards a client's cancel request to the upstream session its key names. Unknown keys are ignored,
/// as PostgreSQL ignores them.
pub(crate) fn forward(
    shared: &std::sync::Arc<crate::Shared>,
    cancel: pgwire::messages::cancel::CancelRequest,
) {
    let Some(secret) = cancel.secret_key.as_i32() else {
        return;
    };
    let Some(target) = shared.cancel_keys.find((cancel.pid, secret)) else {
        tracing::debug!("proxy: cancel request for an unknown key ignored");
        return;
    };
    // A task of its own, bounded by the cancel's own timeout: the request holds no place among the
    // unauthenticated and is not cut short by their startup timeout.
    let shared = shared.clone();
    tokio::spawn(async move {
        match target.cancel().await {
            Ok(()) => shared.state.stats.cancels.add(),
            Err(e) => tracing::warn!(
                error = %crate::admission::escaped(&entra_postgres::report(&e)),
                "proxy: cancel request failed"
            ),
        }
    });
}
