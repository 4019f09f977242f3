//! Pool metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`, which also
//! turns on entra-token's token metrics; without it every function here is empty). Names follow
//! OpenTelemetry's database-client conventions where they exist (`db.client.connection.*`, attribute
//! `db.client.connection.pool.name`); ours are under `entra.pool.*`:
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `db.client.connection.count` | gauge | pool, `db.client.connection.state` (`idle`, `used`) | connections open |
//! | `db.client.connection.max` | gauge | pool | the pool's size |
//! | `db.client.connection.pending_requests` | gauge | pool | `get()` calls waiting for a connection |
//! | `db.client.connection.create_time` | histogram (s) | pool | opening a connection, token and TLS included |
//! | `db.client.connection.wait_time` | histogram (s) | pool | [`EntraPool::get`](crate::EntraPool::get), checkout to connection |
//! | `db.client.connection.timeouts` | counter | pool | `get()` calls that timed out |
//! | `entra.pool.connections.created` | counter | pool | connections opened |
//! | `entra.pool.connections.failed` | counter | pool, `kind` (`token`, `rejected`, `server`) | connections that could not be opened |
//! | `entra.pool.connections.retired` | counter | pool, `reason` (`max_lifetime`, `replaced_ahead`, `idle_timeout`, `role_changed`) | connections closed by the pool's limits (`replaced_ahead`: near its lifetime, handed its place to a spare) |
//! | `entra.pool.token_rejections` | counter | pool | server refusals of a token (each triggers one refetch) |
//!
//! Gauges are refreshed once a second while the pool lives.

#[cfg(feature = "metrics")]
mod emit {
    use std::time::Duration;

    const POOL: &str = "db.client.connection.pool.name";

    pub(crate) fn connection_created(pool: &str, took: Duration) {
        metrics::counter!("entra.pool.connections.created", POOL => pool.to_string()).increment(1);
        metrics::histogram!("db.client.connection.create_time", POOL => pool.to_string())
            .record(took.as_secs_f64());
    }

    pub(crate) fn connection_failed(pool: &str, kind: &'static str) {
        metrics::counter!("entra.pool.connections.failed", POOL => pool.to_string(), "kind" => kind)
            .increment(1);
    }

    pub(crate) fn connection_retired(pool: &str, reason: &'static str) {
        metrics::counter!("entra.pool.connections.retired", POOL => pool.to_string(), "reason" => reason)
            .increment(1);
    }

    pub(crate) fn token_rejected(pool: &str) {
        metrics::counter!("entra.pool.token_rejections", POOL => pool.to_string()).increment(1);
    }

    pub(crate) fn checkout(pool: &str, took: Duration, timed_out: bool) {
        metrics::histogram!("db.client.connection.wait_time", POOL => pool.to_string())
            .record(took.as_secs_f64());
        if timed_out {
            metrics::counter!("db.client.connection.timeouts", POOL => pool.to_string()).increment(1);
        }
    }

    pub(crate) fn status(pool: &str, status: &deadpool_postgres::Status) {
        let idle = status.available as f64;
        let used = status.size.saturating_sub(status.available) as f64;
        let state = "db.client.connection.state";
        metrics::gauge!("db.client.connection.count", POOL => pool.to_string(), state => "idle").set(idle);
        metrics::gauge!("db.client.connection.count", POOL => pool.to_string(), state => "used").set(used);
        metrics::gauge!("db.client.connection.max", POOL => pool.to_string()).set(status.max_size as f64);
        metrics::gauge!("db.client.connection.pending_requests", POOL => pool.to_string())
            .set(status.waiting as f64);
    }

    /// Refreshes the gauges every second until the pool is dropped or closed.
    pub(crate) fn spawn_status_task(pool: &deadpool_postgres::Pool, name: std::sync::Arc<str>) {
        let weak = pool.weak();
        tokio::spawn(async move {
            loop {
                let Some(pool) = weak.upgrade() else { break };
                if pool.is_closed() {
                    break;
                }
                status(&name, &pool.status());
                drop(pool);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

#[cfg(not(feature = "metrics"))]
mod emit {
    use std::time::Duration;

    pub(crate) fn connection_created(_: &str, _: Duration) {}
    pub(crate) fn connection_failed(_: &str, _: &'static str) {}
    pub(crate) fn connection_retired(_: &str, _: &'static str) {}
    pub(crate) fn token_rejected(_: &str) {}
    pub(crate) fn checkout(_: &str, _: Duration, _: bool) {}
    pub(crate) fn spawn_status_task(_: &deadpool_postgres::Pool, _: std::sync::Arc<str>) {}
}

pub(crate) use emit::{
    checkout, connection_created, connection_failed, connection_retired, spawn_status_task, token_rejected,
};
