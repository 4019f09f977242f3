//! Pools with `target_session_attrs` keep checking that their connections still match it.
//!
//! tokio-postgres checks `transaction_read_only` when a connection opens. After a switch-over (an Azure
//! replica promoted, the old primary made a replica) a connection opened to the writer may now be on a
//! read-only server: its writes fail with SQLSTATE 25006. So at checkout, every 16th reuse and after a
//! second of idleness, a `SHOW transaction_read_only` round trip confirms the connection's role; a
//! connection that no longer matches is discarded, and its replacement, opened with the same
//! `target_session_attrs`, finds the server that does. Between checks a statement on a stale connection
//! fails with 25006, before anything is written: no acknowledged write is lost.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Metrics};
use tokio_postgres::SimpleQueryMessage;

use crate::SessionAttrs;

/// A connection's role is checked every this many checkouts…
const CHECK_EVERY: usize = 16;
/// …and whenever it sat unused for this long.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The `pre_recycle` hook for `attrs`; `None` for [`SessionAttrs::Any`].
pub(crate) fn hook(attrs: SessionAttrs, pool_name: Arc<str>) -> Option<Hook> {
    let want_read_only = match attrs {
        SessionAttrs::ReadWrite => false,
        SessionAttrs::ReadOnly => true,
        _ => return None,
    };
    Some(Hook::async_fn(move |client, metrics| {
        let pool_name = pool_name.clone();
        Box::pin(async move {
            if !due(metrics) {
                return Ok(());
            }
            let messages = client
                .simple_query("SHOW transaction_read_only")
                .await
                .map_err(HookError::Backend)?;
            let read_only = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "on"),
                _ => None,
            });
            match read_only {
                Some(read_only) if read_only != want_read_only => {
                    crate::metrics::connection_retired(&pool_name, "role_changed");
                    tracing::info!(
                        read_only,
                        "the server's role changed; retiring the connection (target_session_attrs)"
                    );
                    Err(HookError::message(if read_only {
                        "the server became read-only (a switch-over): retiring the connection"
                    } else {
                        "the server became writable (a promotion): retiring the connection"
                    }))
                }
                _ => Ok(()),
            }
        })
    }))
}

fn due(metrics: &Metrics) -> bool {
    metrics.recycle_count.is_multiple_of(CHECK_EVERY) || metrics.last_used() >= CHECK_AFTER_IDLE
}
