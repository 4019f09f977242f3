//! Connection rotation: a maximum age (with jitter) and an idle timeout, enforced when a connection is
//! recycled (a `pre_recycle` hook) and by a reaper task for connections that sit unused.
//!
//! Rotation moves connections onto new tokens' sessions, new servers after a failover and fresh backend
//! processes; jitter keeps a pool from replacing all its connections at once.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Hook, HookError, Metrics, Pool};

use crate::spares::{Spares, EARLY_FRACTION};

/// The age and idleness limits of a pool's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) jitter: f64,
}

impl Limits {
    /// This connection's own maximum age: `max_lifetime` ± `jitter`, fixed per connection (derived from
    /// its creation instant, so no per-connection state is needed).
    pub(crate) fn lifetime_of(&self, created: Instant) -> Option<Duration> {
        let max = self.max_lifetime?;
        let mut h = DefaultHasher::new();
        created.hash(&mut h);
        let unit = (h.finish() % 10_001) as f64 / 10_000.0; // 0.0..=1.0
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        Some(max.mul_f64(factor.max(0.0)))
    }

    /// Why a connection must be retired, if it must: the metrics label and the message. Runs at every
    /// checkout, so it reads the clock once and hashes only connections old enough to be near their
    /// jittered lifetime.
    pub(crate) fn expired(&self, metrics: &Metrics, now: Instant) -> Option<(&'static str, &'static str)> {
        if let Some(max) = self.max_lifetime {
            let age = now.saturating_duration_since(metrics.created);
            let earliest = max.mul_f64((1.0 - self.jitter).max(0.0));
            if age >= earliest && self.lifetime_of(metrics.created).is_some_and(|life| age >= life) {
                return Some(("max_lifetime", "connection reached its max_lifetime"));
            }
        }
        if let Some(idle) = self.idle_timeout {
            let last = metrics.recycled.unwrap_or(metrics.created);
            if now.saturating_duration_since(last) >= idle {
                return Some(("idle_timeout", "connection idle longer than idle_timeout"));
            }
        }
        None
    }

    /// Whether the connection is in the last [`EARLY_FRACTION`] of its own lifetime, where it may hand
    /// its place to a spare (replace-ahead). Hashes only connections old enough to be there.
    fn near_end(&self, metrics: &Metrics, now: Instant) -> bool {
        let Some(max) = self.max_lifetime else {
            return false;
        };
        let age = now.saturating_duration_since(metrics.created);
        let keep = 1.0 - EARLY_FRACTION;
        age >= max.mul_f64((1.0 - self.jitter).max(0.0) * keep)
            && self
                .lifetime_of(metrics.created)
                .is_some_and(|life| age >= life.mul_f64(keep))
    }

    pub(crate) fn is_active(&self) -> bool {
        self.max_lifetime.is_some() || self.idle_timeout.is_some()
    }

    /// The `pre_recycle` hook that refuses retired connections (deadpool then opens a new one), and, with
    /// replace-ahead, connections near their end whose place a spare can take now.
    pub(crate) fn hook(self, pool_name: Arc<str>, spares: Option<Arc<Spares>>) -> Hook {
        Hook::sync_fn(move |_client, metrics| {
            let now = Instant::now();
            let early = || {
                spares
                    .as_ref()
                    .filter(|s| self.near_end(metrics, now) && s.retire_early(now))
                    .map(|_| {
                        (
                            "replaced_ahead",
                            "connection near its max_lifetime handed its place to a spare",
                        )
                    })
            };
            match self.expired(metrics, now).or_else(early) {
                Some((label, reason)) => {
                    tracing::debug!(age_s = metrics.age().as_secs(), reason, "retiring connection");
                    crate::metrics::connection_retired(&pool_name, label);
                    Err(HookError::message(reason))
                }
                None => Ok(()),
            }
        })
    }

    /// Spawns the reaper: every `every`, drops idle connections that are retired. It holds the pool
    /// weakly, looks at it at least once a second, and ends within a second of the pool being dropped or
    /// closed.
    pub(crate) fn spawn_reaper(self, pool: &Pool, every: Duration, pool_name: Arc<str>) {
        let weak = pool.weak();
        let check = every.min(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut next_prune = tokio::time::Instant::now() + every;
            loop {
                tokio::time::sleep(check).await;
                let Some(pool) = weak.upgrade() else { break };
                if pool.is_closed() {
                    break;
                }
                if tokio::time::Instant::now() < next_prune {
                    continue;
                }
                next_prune += every;
                let removed = pool
                    .retain(|_, metrics| match self.expired(&metrics, Instant::now()) {
                        Some((label, _)) => {
                            crate::metrics::connection_retired(&pool_name, label);
                            false
                        }
                        None => true,
                    })
                    .removed
                    .len();
                if removed > 0 {
                    tracing::debug!(removed, "reaper closed retired idle connections");
                }
            }
            tracing::trace!("connection reaper stopped");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_within_the_jitter() {
        let limits = Limits {
            max_lifetime: Some(Duration::from_secs(3600)),
            idle_timeout: None,
            jitter: 0.1,
        };
        let base = Instant::now();
        let lifetimes: Vec<Duration> = (0..200)
            .map(|i| limits.lifetime_of(base + Duration::from_nanos(i * 7919)).unwrap())
            .collect();
        assert!(lifetimes
            .iter()
            .all(|l| *l >= Duration::from_secs(3240) && *l <= Duration::from_secs(3960)));
        let min = lifetimes.iter().min().unwrap();
        let max = lifetimes.iter().max().unwrap();
        assert!(
            *max - *min > Duration::from_secs(300),
            "jitter spreads lifetimes: {min:?}..{max:?}"
        );
        assert_eq!(
            limits.lifetime_of(base),
            limits.lifetime_of(base),
            "fixed per connection"
        );
    }

    #[test]
    fn a_connection_may_hand_over_early_only_in_the_last_part_of_its_own_lifetime() {
        let limits = Limits {
            max_lifetime: Some(Duration::from_secs(1000)),
            idle_timeout: None,
            jitter: 0.1,
        };
        let created = Instant::now();
        let metrics = Metrics {
            created,
            recycled: None,
            recycle_count: 0,
        };
        let life = limits.lifetime_of(created).unwrap();
        let early_from = life.mul_f64(1.0 - EARLY_FRACTION);
        let before = created + early_from - Duration::from_millis(1);
        assert!(!limits.near_end(&metrics, before));
        assert!(limits.near_end(&metrics, created + early_from));
        assert!(
            limits.expired(&metrics, created + early_from).is_none(),
            "not yet retired"
        );
        assert!(limits.expired(&metrics, created + life).is_some());
        let forever = Limits {
            max_lifetime: None,
            ..limits
        };
        assert!(!forever.near_end(&metrics, created + Duration::from_secs(1_000_000)));
    }
}
