//! [`ProxyStats`]: what a proxy has done so far, and the counters behind it. The counters are the one
//! record of what happened: [`ProxyHandle::stats`](crate::ProxyHandle::stats) reads them, and so does
//! the `/metrics` endpoint (see [`crate::metrics`]), so the two always agree.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_n(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn sub(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Counts one for as long as the guard lives, however its holder ends (an abort included).
    pub(crate) fn hold(&self) -> Held<'_> {
        self.add();
        Held(self)
    }
}

/// One counted in a [`Counter`] until dropped.
pub(crate) struct Held<'a>(&'a Counter);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.sub();
    }
}

/// Why a client was refused, as counted and as the `reason` label of
/// [`metrics::REFUSALS`](crate::metrics::REFUSALS) says it: a closed set of names chosen by the proxy,
/// never text a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Peer credentials or the local secret did not match.
    LocalAuth,
    /// No authenticated startup within the startup timeout.
    Timeout,
    /// Another role than the proxy's.
    Role,
    /// Another database than the proxy's.
    Database,
    /// Every upstream slot taken for the whole wait, or as many clients already waiting.
    Full,
    /// A client in the clear where TLS is required.
    TlsRequired,
    /// A message that breaks the protocol (nested encryption requests and unencrypted bytes after a TLS
    /// request included).
    Protocol,
    /// A startup message without a user.
    NoUser,
    /// A replication connection.
    Replication,
    /// The proxy is draining: no new sessions.
    Draining,
    /// The upstream session could not be opened (no token, a server refusal, the network).
    Upstream,
}

impl Reason {
    /// Every reason, in the order of [`Counters::refusals`].
    pub(crate) const ALL: [Reason; 11] = [
        Reason::LocalAuth,
        Reason::Timeout,
        Reason::Role,
        Reason::Database,
        Reason::Full,
        Reason::TlsRequired,
        Reason::Protocol,
        Reason::NoUser,
        Reason::Replication,
        Reason::Draining,
        Reason::Upstream,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::LocalAuth => "local_auth",
            Reason::Timeout => "timeout",
            Reason::Role => "role",
            Reason::Database => "database",
            Reason::Full => "full",
            Reason::TlsRequired => "tls_required",
            Reason::Protocol => "protocol",
            Reason::NoUser => "no_user",
            Reason::Replication => "replication",
            Reason::Draining => "draining",
            Reason::Upstream => "upstream",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) accepted: Counter,
    pub(crate) relayed: Counter,
    pub(crate) active: Counter,
    pub(crate) signing_in: Counter,
    pub(crate) unauthenticated: Counter,
    pub(crate) waiting: Counter,
    pub(crate) cancels: Counter,
    /// Bytes read from clients and written upstream.
    pub(crate) bytes_to_server: Counter,
    /// Bytes read from upstream and written to clients.
    pub(crate) bytes_to_client: Counter,
    /// Warm sessions idle now.
    pub(crate) warm_idle: Counter,
    /// Warm sessions signed in.
    pub(crate) warm_opened: Counter,
    /// Clients given a warm session.
    pub(crate) warm_used: Counter,
    /// Warm sessions closed unused: renewed, past their lifetime, or given up for a client's slot.
    pub(crate) warm_retired: Counter,
    /// Warm sessions found closed by their server before a client got them.
    pub(crate) warm_discarded_closed: Counter,
    /// Warm sessions taken by a client whose parameters the server would not set on them (the client
    /// then got a fresh session).
    pub(crate) warm_discarded_parameters: Counter,
    refusals: [Counter; Reason::ALL.len()],
}

impl Counters {
    /// The counter of refusals for `reason`.
    pub(crate) fn refusals(&self, reason: Reason) -> &Counter {
        &self.refusals[reason.index()]
    }

    pub(crate) fn snapshot(&self) -> ProxyStats {
        let by = |reason| self.refusals(reason).get();
        ProxyStats {
            accepted: self.accepted.get(),
            relayed: self.relayed.get(),
            active: self.active.get(),
            signing_in: self.signing_in.get(),
            unauthenticated: self.unauthenticated.get(),
            waiting: self.waiting.get(),
            refused: Reason::ALL
                .iter()
                .filter(|r| **r != Reason::Upstream)
                .map(|r| by(*r))
                .sum(),
            refused_local_auth: by(Reason::LocalAuth),
            refused_timeout: by(Reason::Timeout),
            refused_role: by(Reason::Role),
            refused_database: by(Reason::Database),
            refused_full: by(Reason::Full),
            refused_draining: by(Reason::Draining),
            refused_upstream: by(Reason::Upstream),
            cancels: self.cancels.get(),
            bytes_to_server: self.bytes_to_server.get(),
            bytes_to_client: self.bytes_to_client.get(),
            warm_idle: self.warm_idle.get(),
            warm_opened: self.warm_opened.get(),
            warm_used: self.warm_used.get(),
            warm_retired: self.warm_retired.get(),
            warm_discarded_closed: self.warm_discarded_closed.get(),
            warm_discarded_parameters: self.warm_discarded_parameters.get(),
        }
    }
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
    /// Admitted sessions being signed in upstream now (not relayed yet).
    pub signing_in: u64,
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
    /// … of which came while the proxy was draining ([`ProxyHandle::drain`](crate::ProxyHandle::drain)).
    pub refused_draining: u64,
    /// Sessions whose upstream could not be opened (no token, server refusal, network).
    pub refused_upstream: u64,
    /// Cancel requests forwarded upstream.
    pub cancels: u64,
    /// Bytes relayed from clients to the server.
    pub bytes_to_server: u64,
    /// Bytes relayed from the server to clients.
    pub bytes_to_client: u64,
    /// Warm sessions signed in and waiting for a client now ([`ProxyBuilder::warm`](crate::ProxyBuilder::warm)).
    pub warm_idle: u64,
    /// Warm sessions signed in so far.
    pub warm_opened: u64,
    /// Clients given a warm session.
    pub warm_used: u64,
    /// Warm sessions closed unused: renewed ahead of their lifetime, or their slot given to a client.
    pub warm_retired: u64,
    /// Warm sessions found closed by their server (terminated, restarted) and dropped before any client
    /// got them.
    pub warm_discarded_closed: u64,
    /// Warm sessions taken by a client whose startup parameters the server would not set after
    /// connection start; that client got a fresh session instead.
    pub warm_discarded_parameters: u64,
}

impl ProxyStats {
    /// Client sessions that a stop would cut short: those relayed and those still signing in upstream.
    pub fn sessions_open(&self) -> u64 {
        self.active + self.signing_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_label() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?} is at its index in ALL");
        }
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }

    #[test]
    fn upstream_failures_are_not_counted_among_the_proxys_own_refusals() {
        let counters = Counters::default();
        counters.refusals(Reason::Role).add();
        counters.refusals(Reason::Upstream).add();
        let stats = counters.snapshot();
        assert_eq!(
            (stats.refused, stats.refused_role, stats.refused_upstream),
            (1, 1, 1)
        );
    }
}
