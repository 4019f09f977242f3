//! [`ProxyStats`]: what a proxy has done so far, and the counters behind it.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn sub(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: Counter,
    pub(crate) relayed: Counter,
    pub(crate) active: Counter,
    pub(crate) unauthenticated: Counter,
    pub(crate) waiting: Counter,
    pub(crate) refused: Counter,
    pub(crate) refused_local_auth: Counter,
    pub(crate) refused_timeout: Counter,
    pub(crate) refused_role: Counter,
    pub(crate) refused_database: Counter,
    pub(crate) refused_full: Counter,
    pub(crate) refused_upstream: Counter,
    pub(crate) cancels: Counter,
}

/// What a proxy has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProxyStats {
    /// Connections accepted (cancel requests included).
    pub accepted: u64,
    /// Sessions signed in upstream and relayed.
    pub relayed: u64,
    /// Sessions being relayed now.
    pub active: u64,
    /// Connections accepted that have not authenticated yet, now (at most
    /// [`ProxyBuilder::max_unauthenticated`](crate::ProxyBuilder::max_unauthenticated)).
    pub unauthenticated: u64,
    /// Authenticated clients waiting for an upstream slot, now (at most [`ProxyBuilder::max_size`](crate::ProxyBuilder::max_size)).
    pub waiting: u64,
    /// Connections refused by the proxy itself, for any reason.
    pub refused: u64,
    /// … of which failed local authentication.
    pub refused_local_auth: u64,
    /// … of which had not authenticated within the [`ProxyBuilder::startup_timeout`](crate::ProxyBuilder::startup_timeout).
    pub refused_timeout: u64,
    /// … of which asked for another role.
    pub refused_role: u64,
    /// … of which asked for another database.
    pub refused_database: u64,
    /// … of which found every upstream slot taken.
    pub refused_full: u64,
    /// Sessions whose upstream could not be opened (no token, server refusal, network).
    pub refused_upstream: u64,
    /// Cancel requests forwarded upstream.
    pub cancels: u64,
}
