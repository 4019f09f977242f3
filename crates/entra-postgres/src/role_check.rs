//! `target_session_attrs`, the one rule for what makes a server read-only; and pools keep checking that
//! their connections still match it.
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

/// The query that asks a server whether it is read-only, for pooled connections and raw sessions alike.
pub(crate) const SHOW_READ_ONLY: &str = "SHOW transaction_read_only";

/// Whether `attrs` wants a read-only server (`Some(true)`), a writable one (`Some(false)`), or any.
pub(crate) fn wanted_read_only(attrs: SessionAttrs) -> Option<bool> {
    match attrs {
        SessionAttrs::ReadWrite => Some(false),
        SessionAttrs::ReadOnly => Some(true),
        _ => None,
    }
}

/// What [`SHOW_READ_ONLY`] answers means.
pub(crate) fn is_read_only(shown: &[u8]) -> bool {
    shown == b"on"
}

/// What a server reported at startup means (libpq 14's rule: a hot standby, or a server whose sessions
/// default to read-only, is read-only); `None` when it reported neither parameter, and the server must be
/// asked ([`SHOW_READ_ONLY`]). At the start of a session the two readings agree.
pub(crate) fn reported_read_only(
    in_hot_standby: Option<&str>,
    default_read_only: Option<&str>,
) -> Option<bool> {
    match (in_hot_standby, default_read_only) {
        (Some(standby), Some(read_only)) => {
            Some(is_read_only(standby.as_bytes()) || is_read_only(read_only.as_bytes()))
        }
        _ => None,
    }
}

/// The `pre_recycle` hook for `attrs`; `None` for [`SessionAttrs::Any`].
pub(crate) fn hook(attrs: SessionAttrs, pool_name: Arc<str>) -> Option<Hook> {
    let want_read_only = wanted_read_only(attrs)?;
    Some(Hook::async_fn(move |client, metrics| {
        let pool_name = pool_name.clone();
        Box::pin(async move {
            if !due(metrics) {
                return Ok(());
            }
            let messages = client
                .simple_query(SHOW_READ_ONLY)
                .await
                .map_err(HookError::Backend)?;
            let read_only = messages.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(|v| is_read_only(v.as_bytes())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_says_what_is_read_only_for_pools_and_raw_sessions() {
        assert_eq!(wanted_read_only(SessionAttrs::ReadWrite), Some(false));
        assert_eq!(wanted_read_only(SessionAttrs::ReadOnly), Some(true));
        assert_eq!(wanted_read_only(SessionAttrs::Any), None);
        assert!(is_read_only(b"on") && !is_read_only(b"off"));
        assert_eq!(reported_read_only(Some("on"), Some("off")), Some(true));
        assert_eq!(reported_read_only(Some("off"), Some("on")), Some(true));
        assert_eq!(reported_read_only(Some("off"), Some("off")), Some(false));
        assert_eq!(
            reported_read_only(None, Some("off")),
            None,
            "asked with SHOW instead"
        );
    }
}
