//! The proxy's metrics, served in Prometheus's text format on the health listener's `/metrics`
//! ([`ProxyBuilder::health_listen`](crate::ProxyBuilder::health_listen)) and by
//! [`ProxyHandle::metrics_text`](crate::ProxyHandle::metrics_text). Every name is here and nowhere else.
//!
//! | name (as Prometheus shows it) | kind | labels | meaning |
//! |---|---|---|---|
//! | `entra_proxy_sessions_open` | gauge | | sessions being relayed now |
//! | `entra_proxy_sessions_total` | counter | | sessions signed in upstream and relayed |
//! | `entra_proxy_refusals_total` | counter | `reason` | clients refused, by reason (below) |
//! | `entra_proxy_clients_waiting` | gauge | | authenticated clients waiting for one of the `max_size` upstream slots |
//! | `entra_proxy_connections_unauthenticated` | gauge | | accepted connections that have not authenticated yet |
//! | `entra_proxy_connections_accepted_total` | counter | | connections accepted (cancel requests included) |
//! | `entra_proxy_cancels_total` | counter | | cancel requests forwarded upstream |
//! | `entra_proxy_bytes_total` | counter | `direction` (`to_server`, `to_client`) | bytes relayed each way |
//! | `entra_proxy_upstream_sign_in_seconds` | histogram | `outcome` (`ok`, `error`) | opening an upstream session: token, TCP, TLS, sign-in |
//! | `entra_proxy_ready` | gauge | | 1 while `/readiness` would answer 200, else 0 |
//! | `entra_proxy_warm_sessions` | gauge | | warm sessions signed in and waiting for a client |
//! | `entra_proxy_warm_sessions_opened_total` | counter | | warm sessions signed in |
//! | `entra_proxy_warm_sessions_used_total` | counter | | clients given a warm session |
//! | `entra_proxy_warm_sessions_dropped_total` | counter | `reason` (`renewed`, `closed`, `parameters`) | warm sessions no client used: renewed or given up for a slot, found closed, or not able to take a client's parameters |
//!
//! `reason` is one of `local_auth`, `timeout`, `role`, `database`, `full`, `tls_required`, `protocol`,
//! `no_user`, `replication`, `draining` (the proxy is draining) and `upstream` (the upstream session
//! could not be opened). Labels are the proxy's own words: text a client sent (a role, a database, an
//! `application_name`) never becomes a label, so a client cannot grow the series or write into them.
//!
//! These live in a recorder of the proxy's own, not in the `metrics` facade's global recorder: a
//! library must not install one behind its user's back. The token's metrics (`entra_token_*`) and the
//! connector's (`entra_pool_connections_*`, `db_client_connection_create_time`) are reported by
//! entra-token and entra-postgres through the facade (their feature `metrics`); to serve them on the
//! same `/metrics`, install a global Prometheus recorder and give its handle to
//! [`ProxyBuilder::extra_metrics`](crate::ProxyBuilder::extra_metrics), as `entra-pg proxy
//! --health-check` does.

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::stats::{Counters, Reason};

/// Sessions being relayed now (gauge).
pub const SESSIONS_OPEN: &str = "entra.proxy.sessions.open";
/// Sessions signed in upstream and relayed (counter).
pub const SESSIONS_TOTAL: &str = "entra.proxy.sessions_total";
/// Clients refused, by `reason` (counter).
pub const REFUSALS: &str = "entra.proxy.refusals_total";
/// Authenticated clients waiting for an upstream slot (gauge).
pub const CLIENTS_WAITING: &str = "entra.proxy.clients.waiting";
/// Accepted connections that have not authenticated yet (gauge).
pub const UNAUTHENTICATED: &str = "entra.proxy.connections.unauthenticated";
/// Connections accepted (counter).
pub const ACCEPTED: &str = "entra.proxy.connections.accepted_total";
/// Cancel requests forwarded upstream (counter).
pub const CANCELS: &str = "entra.proxy.cancels_total";
/// Bytes relayed, by `direction` (counter).
pub const BYTES: &str = "entra.proxy.bytes_total";
/// Opening an upstream session, in seconds, by `outcome` (histogram).
pub const SIGN_IN_SECONDS: &str = "entra.proxy.upstream.sign_in_seconds";
/// 1 while the proxy is ready, else 0 (gauge).
pub const READY: &str = "entra.proxy.ready";
/// Warm sessions waiting for a client (gauge).
pub const WARM_SESSIONS: &str = "entra.proxy.warm_sessions";
/// Warm sessions signed in (counter).
pub const WARM_OPENED: &str = "entra.proxy.warm_sessions.opened_total";
/// Clients given a warm session (counter).
pub const WARM_USED: &str = "entra.proxy.warm_sessions.used_total";
/// Warm sessions no client used, by `reason` (counter).
pub const WARM_DROPPED: &str = "entra.proxy.warm_sessions.dropped_total";

/// The sign-in histogram's buckets, in seconds: a loopback sign-in takes milliseconds, one to Azure tens
/// of them, and one waiting for a token or a server that is starting up seconds.
const SIGN_IN_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The proxy's recorder and the handles of its metrics.
pub(crate) struct ProxyMetrics {
    recorder: PrometheusHandle,
    extra: Option<PrometheusHandle>,
    sessions_open: Gauge,
    sessions_total: Counter,
    refusals: Vec<(Reason, Counter)>,
    clients_waiting: Gauge,
    unauthenticated: Gauge,
    accepted: Counter,
    cancels: Counter,
    bytes_to_server: Counter,
    bytes_to_client: Counter,
    ready: Gauge,
    warm_idle: Gauge,
    warm_opened: Counter,
    warm_used: Counter,
    warm_renewed: Counter,
    warm_closed: Counter,
    warm_parameters: Counter,
    sign_in_ok: Histogram,
    sign_in_error: Histogram,
}

impl ProxyMetrics {
    /// A recorder of the proxy's own with every metric registered (each refusal reason at 0), and the
    /// recorder `extra` rendered after it.
    pub(crate) fn new(extra: Option<PrometheusHandle>) -> Self {
        let builder = PrometheusBuilder::new();
        // Only an empty list of buckets is refused, and this one is not; a summary would do otherwise.
        let builder = builder
            .set_buckets_for_metric(Matcher::Full(SIGN_IN_SECONDS.to_string()), &SIGN_IN_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder: PrometheusRecorder = builder.build_recorder();
        let handle = recorder.handle();
        // Registered once through the facade's macros, bound to this recorder: the handles then record
        // into it from any thread, with no global recorder involved.
        metrics::with_local_recorder(&recorder, || {
            describe();
            ProxyMetrics {
                recorder: handle,
                extra,
                sessions_open: metrics::gauge!(SESSIONS_OPEN),
                sessions_total: metrics::counter!(SESSIONS_TOTAL),
                refusals: Reason::ALL
                    .iter()
                    .map(|r| (*r, metrics::counter!(REFUSALS, "reason" => r.label())))
                    .collect(),
                clients_waiting: metrics::gauge!(CLIENTS_WAITING),
                unauthenticated: metrics::gauge!(UNAUTHENTICATED),
                accepted: metrics::counter!(ACCEPTED),
                cancels: metrics::counter!(CANCELS),
                bytes_to_server: metrics::counter!(BYTES, "direction" => "to_server"),
                bytes_to_client: metrics::counter!(BYTES, "direction" => "to_client"),
                ready: metrics::gauge!(READY),
                warm_idle: metrics::gauge!(WARM_SESSIONS),
                warm_opened: metrics::counter!(WARM_OPENED),
                warm_used: metrics::counter!(WARM_USED),
                warm_renewed: metrics::counter!(WARM_DROPPED, "reason" => "renewed"),
                warm_closed: metrics::counter!(WARM_DROPPED, "reason" => "closed"),
                warm_parameters: metrics::counter!(WARM_DROPPED, "reason" => "parameters"),
                sign_in_ok: metrics::histogram!(SIGN_IN_SECONDS, "outcome" => "ok"),
                sign_in_error: metrics::histogram!(SIGN_IN_SECONDS, "outcome" => "error"),
            }
        })
    }

    /// Records how long opening an upstream session took.
    pub(crate) fn sign_in(&self, took: std::time::Duration, ok: bool) {
        let histogram = if ok { &self.sign_in_ok } else { &self.sign_in_error };
        histogram.record(took.as_secs_f64());
    }

    /// The metrics in Prometheus's text format: the counters' current values (copied in now, so the
    /// hot path counts once, in [`Counters`]), then the extra recorder's.
    pub(crate) fn render(&self, counters: &Counters, ready: bool) -> String {
        self.sessions_open.set(counters.active.get() as f64);
        self.sessions_total.absolute(counters.relayed.get());
        for (reason, counter) in &self.refusals {
            counter.absolute(counters.refusals(*reason).get());
        }
        self.clients_waiting.set(counters.waiting.get() as f64);
        self.unauthenticated.set(counters.unauthenticated.get() as f64);
        self.accepted.absolute(counters.accepted.get());
        self.cancels.absolute(counters.cancels.get());
        self.bytes_to_server.absolute(counters.bytes_to_server.get());
        self.bytes_to_client.absolute(counters.bytes_to_client.get());
        self.ready.set(if ready { 1.0 } else { 0.0 });
        self.warm_idle.set(counters.warm_idle.get() as f64);
        self.warm_opened.absolute(counters.warm_opened.get());
        self.warm_used.absolute(counters.warm_used.get());
        self.warm_renewed.absolute(counters.warm_retired.get());
        self.warm_closed.absolute(counters.warm_discarded_closed.get());
        self.warm_parameters
            .absolute(counters.warm_discarded_parameters.get());
        let mut text = self.recorder.render();
        if let Some(extra) = &self.extra {
            text.push_str(&extra.render());
        }
        text
    }

    /// Moves recorded histogram samples into their buckets, so a proxy nobody scrapes does not keep
    /// every sample.
    pub(crate) fn upkeep(&self) {
        self.recorder.run_upkeep();
    }
}

/// The HELP lines.
fn describe() {
    metrics::describe_gauge!(SESSIONS_OPEN, "Sessions being relayed now.");
    metrics::describe_counter!(SESSIONS_TOTAL, "Sessions signed in upstream and relayed.");
    metrics::describe_counter!(REFUSALS, "Clients refused, by reason.");
    metrics::describe_gauge!(
        CLIENTS_WAITING,
        "Authenticated clients waiting for an upstream slot (max_size)."
    );
    metrics::describe_gauge!(
        UNAUTHENTICATED,
        "Accepted connections that have not authenticated yet."
    );
    metrics::describe_counter!(ACCEPTED, "Connections accepted, cancel requests included.");
    metrics::describe_counter!(CANCELS, "Cancel requests forwarded upstream.");
    metrics::describe_counter!(BYTES, "Bytes relayed, by direction.");
    metrics::describe_histogram!(
        SIGN_IN_SECONDS,
        metrics::Unit::Seconds,
        "Opening an upstream session (token, TCP, TLS, sign-in), by outcome."
    );
    metrics::describe_gauge!(READY, "1 while /readiness answers 200, else 0.");
    metrics::describe_gauge!(WARM_SESSIONS, "Warm sessions signed in and waiting for a client.");
    metrics::describe_counter!(WARM_OPENED, "Warm sessions signed in.");
    metrics::describe_counter!(WARM_USED, "Clients given a warm session.");
    metrics::describe_counter!(
        WARM_DROPPED,
        "Warm sessions no client used: renewed (or given up for a slot), found closed, or unable to take a client's parameters."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_reason_is_a_series_from_the_start() {
        let metrics = ProxyMetrics::new(None);
        let text = metrics.render(&Counters::default(), false);
        for reason in Reason::ALL {
            let series = format!("entra_proxy_refusals_total{{reason=\"{}\"}} 0", reason.label());
            assert!(text.contains(&series), "{series} in:\n{text}");
        }
        assert!(text.contains("entra_proxy_ready 0"), "{text}");
    }

    #[test]
    fn the_counters_are_what_is_rendered() {
        let metrics = ProxyMetrics::new(None);
        let counters = Counters::default();
        counters.relayed.add();
        counters.refusals(Reason::Role).add();
        counters.bytes_to_client.add_n(42);
        metrics.sign_in(std::time::Duration::from_millis(20), true);
        let text = metrics.render(&counters, true);
        for line in [
            "entra_proxy_sessions_total 1",
            "entra_proxy_refusals_total{reason=\"role\"} 1",
            "entra_proxy_bytes_total{direction=\"to_client\"} 42",
            "entra_proxy_upstream_sign_in_seconds_count{outcome=\"ok\"} 1",
            "entra_proxy_upstream_sign_in_seconds_bucket{outcome=\"ok\",le=\"0.025\"} 1",
            "entra_proxy_ready 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn another_recorder_is_rendered_after_the_proxys_own() {
        let other = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&other, || metrics::counter!("entra.token.rotations").increment(2));
        let metrics = ProxyMetrics::new(Some(other.handle()));
        let text = metrics.render(&Counters::default(), true);
        assert!(text.contains("entra_token_rotations 2"), "{text}");
        assert!(text.contains("entra_proxy_sessions_total 0"), "{text}");
    }
}
