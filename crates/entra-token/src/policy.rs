//! [`RefreshPolicy`]: when to renew a token, how to back off, and how long to serve the old one.

use std::time::Duration;

use rand::Rng;

use crate::RetryPolicy;

/// What [`Refresher::start`](crate::Refresher::start) does when the first fetch fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMode {
    /// Return the first fetch's error: the service fails at start-up, where the cause is easy to see.
    #[default]
    FailFast,
    /// Start anyway and keep retrying in the background; `get()` reports
    /// [`TokenError::Unavailable`](crate::TokenError::Unavailable) until a fetch succeeds.
    KeepRetrying,
}

/// When a [`Refresher`](crate::Refresher) renews its token and how it retries.
///
/// Renewal time for a token of lifetime `L` (unless the endpoint sent `refresh_in`/`refresh_on`, which wins
/// when it comes earlier than `expiry − refresh_margin`):
/// - `L ≥ 2 h`: at half-life (as MSAL does), leaving hours to ride out an identity-endpoint outage;
/// - shorter: at `expiry − refresh_margin` (5 min), but never before half-life, so short-lived tokens do
///   not trigger a refresh storm;
///
/// then moved earlier by a random `jitter` fraction of the wait, so a fleet started together does not
/// refresh in step. On failure: the [`RetryPolicy`]'s backoff (exponential with full jitter, 1 s → 60 s,
/// never sooner than the server's `Retry-After`), but never planned past the moment the cached token
/// stops being usable. The old token is served until `expiry − expiry_margin`. The first fetch of
/// [`Refresher::start`](crate::Refresher::start) retries within the retry policy's budget (70 s).
///
/// ```
/// use std::time::Duration;
/// use entra_token::RefreshPolicy;
///
/// let policy = RefreshPolicy::default()
///     .refresh_margin(Duration::from_secs(600))
///     .backoff(Duration::from_secs(2), Duration::from_secs(120));
/// assert_eq!(policy.base_refresh_delay(Duration::from_secs(3600), None), Duration::from_secs(3000));
/// ```
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    pub(crate) refresh_margin: Duration,
    pub(crate) half_life_threshold: Duration,
    pub(crate) jitter: f64,
    pub(crate) expiry_margin: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) get_timeout: Duration,
    pub(crate) min_invalidate_interval: Duration,
    pub(crate) start_mode: StartMode,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_margin: Duration::from_secs(300),
            half_life_threshold: Duration::from_secs(2 * 3600),
            jitter: 0.1,
            expiry_margin: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            get_timeout: Duration::from_secs(30),
            min_invalidate_interval: Duration::from_secs(10),
            start_mode: StartMode::FailFast,
        }
    }
}

impl RefreshPolicy {
    /// A policy for tokens that live seconds rather than hours (tests, demos and benchmarks against the
    /// emulator): renewal 1 s before expiry but never before half-life, served until 0.5 s before expiry,
    /// quick backoff (100 ms → 1 s), `get()` waiting at most 5 s, a rejected token refetched after
    /// 200 ms, and a 10 s budget for the first fetch.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = entra_token::RefreshPolicy::short_lived();
    /// assert_eq!(p.base_refresh_delay(Duration::from_secs(4), None), Duration::from_secs(3));
    /// ```
    pub fn short_lived() -> Self {
        RefreshPolicy::default()
            .expiry_margin(Duration::from_millis(500))
            .refresh_margin(Duration::from_secs(1))
            .get_timeout(Duration::from_secs(5))
            .min_invalidate_interval(Duration::from_millis(200))
            .retry(
                RetryPolicy::default()
                    .backoff(Duration::from_millis(100), Duration::from_secs(1))
                    .budget(Duration::from_secs(10))
                    .attempt_timeout(Duration::from_secs(5)),
            )
    }

    /// Renew this long before expiry (default 5 min).
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Random share of the wait by which each renewal is moved earlier, 0.0–0.5 (default 0.1).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Stop serving a token this long before it expires (default 30 s), so a connection started with it
    /// does not race the expiry.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = margin;
        self
    }

    /// Backoff after failed fetches: first delay and cap (default 1 s → 60 s). Shorthand for the same
    /// setting of [`retry`](Self::retry).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry = self.retry.backoff(initial, max);
        self
    }

    /// Give up on one fetch after this long (default 60 s); sources also have their own network timeouts.
    /// Shorthand for [`RetryPolicy::attempt_timeout`].
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.retry = self.retry.attempt_timeout(timeout);
        self
    }

    /// How failed fetches are retried, and the budget of the first fetch in
    /// [`StartMode::FailFast`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How long [`TokenHandle::get`](crate::TokenHandle::get) waits for a first or renewed token before
    /// failing with [`TokenError::Unavailable`](crate::TokenError::Unavailable) (default 30 s).
    pub fn get_timeout(mut self, timeout: Duration) -> Self {
        self.get_timeout = timeout;
        self
    }

    /// A token younger than this is not refetched when a server rejects it (default 10 s): a principal
    /// that is refused for good must not turn every connection attempt into a token request.
    pub fn min_invalidate_interval(mut self, interval: Duration) -> Self {
        self.min_invalidate_interval = interval;
        self
    }

    /// What [`Refresher::start`](crate::Refresher::start) does when the first fetch fails.
    pub fn start_mode(mut self, mode: StartMode) -> Self {
        self.start_mode = mode;
        self
    }

    /// The delay from fetch to renewal before jitter, for a token of `lifetime` whose endpoint advised
    /// `refresh_in` (if any).
    pub fn base_refresh_delay(&self, lifetime: Duration, refresh_in: Option<Duration>) -> Duration {
        let half = lifetime / 2;
        // The lifetime is measured on arrival, a little under what the issuer granted: a "2 h" token must
        // still count as one.
        let by_margin = if lifetime + Duration::from_secs(60) >= self.half_life_threshold {
            half
        } else {
            lifetime.saturating_sub(self.refresh_margin).max(half)
        };
        match refresh_in {
            // An advice of "now" (0, or a time already past) would renew in a loop: never sooner than a
            // tenth of the lifetime.
            Some(advised) => advised
                .max(lifetime / 10)
                .min(lifetime.saturating_sub(self.refresh_margin).max(half)),
            None => by_margin,
        }
    }

    /// The delay from fetch to renewal, with jitter applied.
    pub(crate) fn refresh_delay(&self, lifetime: Duration, refresh_in: Option<Duration>) -> Duration {
        let base = self.base_refresh_delay(lifetime, refresh_in);
        let spread = base.mul_f64(self.jitter);
        if spread.is_zero() {
            return base;
        }
        base - spread.mul_f64(rand::rng().random::<f64>())
    }

    /// The upper bound of the delay after `failures` consecutive failures (1 = the first): the cap of
    /// the full-jitter draw.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        self.retry.backoff_ceiling(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    #[test]
    fn long_tokens_renew_at_half_life() {
        let p = RefreshPolicy::default();
        assert_eq!(
            p.base_refresh_delay(Duration::from_secs(24 * H), None),
            Duration::from_secs(12 * H)
        );
        assert_eq!(
            p.base_refresh_delay(Duration::from_secs(2 * H), None),
            Duration::from_secs(H)
        );
        let nearly_two_hours = Duration::from_secs(2 * H - 2);
        assert_eq!(p.base_refresh_delay(nearly_two_hours, None), nearly_two_hours / 2);
    }

    #[test]
    fn hour_tokens_renew_five_minutes_before_expiry() {
        let p = RefreshPolicy::default();
        assert_eq!(
            p.base_refresh_delay(Duration::from_secs(H), None),
            Duration::from_secs(55 * 60)
        );
    }

    #[test]
    fn short_tokens_never_renew_before_half_life() {
        let p = RefreshPolicy::default();
        assert_eq!(
            p.base_refresh_delay(Duration::from_secs(3), None),
            Duration::from_millis(1500)
        );
        assert_eq!(
            p.base_refresh_delay(Duration::from_secs(400), None),
            Duration::from_secs(200)
        );
    }

    #[test]
    fn advised_refresh_in_wins_when_earlier() {
        let p = RefreshPolicy::default();
        let d = p.base_refresh_delay(Duration::from_secs(H), Some(Duration::from_secs(600)));
        assert_eq!(d, Duration::from_secs(600));
        let d = p.base_refresh_delay(Duration::from_secs(H), Some(Duration::from_secs(3590)));
        assert_eq!(d, Duration::from_secs(55 * 60));
        let d = p.base_refresh_delay(Duration::from_secs(H), Some(Duration::ZERO));
        assert_eq!(
            d,
            Duration::from_secs(360),
            "an advice of 0 waits a tenth of the lifetime"
        );
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let p = RefreshPolicy::default();
        let base = p.base_refresh_delay(Duration::from_secs(H), None);
        let mut seen_below = false;
        for _ in 0..1000 {
            let d = p.refresh_delay(Duration::from_secs(H), None);
            assert!(d <= base && d >= base.mul_f64(0.9), "{d:?}");
            seen_below |= d < base;
        }
        assert!(seen_below, "jitter never moved the renewal");
    }
}
