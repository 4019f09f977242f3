//! [`RetryPolicy`] and [`fetch_with_retry`]: Azure's retry guidance, written once.
//!
//! Every token fetch that a caller waits for (a one-shot command, a refresher's first fetch, a renewal
//! after a failure) backs off with the same rule: retry what is retryable (timeouts, resets, 404, 410,
//! 429, 5xx, malformed answers), never sooner than the server's `Retry-After`, exponentially with full
//! jitter, within a budget of about 70 s by default, which covers IMDS's "back within 70 seconds" of a
//! 410 (`azure-protocols.md` §1). A definitive answer (no identity endpoint here, an unknown identity, a
//! bad secret, `az` not signed in) fails at once.

use std::time::Duration;

use rand::Rng;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::Instrument;

use crate::{AccessToken, TokenError, TokenSource};

/// Whether an HTTP status of an identity endpoint is a transient answer to retry: 404 and 410 (IMDS
/// updating), 429 (throttled), 5xx (`azure-protocols.md` §1). Every source and adapter asks this one
/// function.
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 404 | 410 | 429 | 500..=599)
}

/// How token fetches are retried: backoff, `Retry-After`, and a budget.
///
/// The delay after the `n`-th consecutive failure is drawn uniformly from `[0, min(initial·2ⁿ⁻¹, max)]`
/// ("full jitter", so processes started together spread out), never below a small floor and never below
/// the server's `Retry-After`.
///
/// ```
/// use std::time::Duration;
/// use entra_token::RetryPolicy;
///
/// let policy = RetryPolicy::default().budget(Duration::from_secs(20));
/// assert_eq!(policy.backoff_ceiling(1), Duration::from_secs(1));
/// assert_eq!(policy.backoff_ceiling(3), Duration::from_secs(4));
/// assert_eq!(policy.get_budget(), Duration::from_secs(20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) floor: Duration,
    pub(crate) budget: Duration,
    pub(crate) attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            floor: Duration::from_millis(50),
            budget: Duration::from_secs(70),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The first delay and the cap of the exponential backoff (default 1 s → 60 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial = initial.max(Duration::from_millis(1));
        self.max = max.max(self.initial);
        self
    }

    /// How long [`fetch_with_retry`] keeps trying before it gives up (default 70 s, the time IMDS
    /// may take to come back after a 410). Zero means a single attempt.
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The budget.
    pub fn get_budget(&self) -> Duration {
        self.budget
    }

    /// The longest one attempt may take (default 60 s); sources also have their own network timeouts.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest one attempt may take.
    pub fn get_attempt_timeout(&self) -> Duration {
        self.attempt_timeout
    }

    /// The upper bound of the delay after `failures` consecutive failures (1 = the first).
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The delay before the next attempt after `failures` consecutive failures of `error`.
    ///
    /// An error that retrying cannot fix (an unknown identity, a bad secret) may still be fixed by an
    /// admin while a long-running refresher waits, so it gets the slowest pace rather than none.
    pub fn delay_after(&self, failures: u32, error: &TokenError) -> Duration {
        let ceiling = if error.is_retryable() {
            self.backoff_ceiling(failures)
        } else {
            self.max
        };
        let drawn = ceiling.mul_f64(rand::rng().random::<f64>()).max(self.floor);
        drawn.max(error.retry_after().unwrap_or_default())
    }
}

/// Fetches one token, retrying transient failures by `policy` (see [`RetryPolicy`]).
///
/// Returns the first token, or at once the first definitive error (one that
/// [`is_retryable`](TokenError::is_retryable) says retrying cannot fix), or, once the budget is spent,
/// [`TokenError::RetriesExhausted`] with the number of attempts, what each one got, and the last cause.
/// It ends within the budget plus one attempt's timeout.
///
/// ```no_run
/// # async fn demo() -> Result<(), entra_token::TokenError> {
/// use entra_token::{fetch_with_retry, ImdsSource, RetryPolicy, OSSRDBMS_SCOPE};
///
/// let source = ImdsSource::builder().build()?;
/// let token = fetch_with_retry(&source, OSSRDBMS_SCOPE, &RetryPolicy::default()).await?;
/// println!("{}", token.fingerprint());
/// # Ok(()) }
/// ```
pub async fn fetch_with_retry(
    source: &dyn TokenSource,
    scope: &str,
    policy: &RetryPolicy,
) -> Result<AccessToken, TokenError> {
    retrying(source, scope, policy).await.0
}

/// [`fetch_with_retry`], and how many requests it made.
pub(crate) async fn retrying(
    source: &dyn TokenSource,
    scope: &str,
    policy: &RetryPolicy,
) -> (Result<AccessToken, TokenError>, u32) {
    let started = Instant::now();
    let deadline = started + policy.budget;
    let mut outcomes: Vec<String> = Vec::new();
    loop {
        let attempt = outcomes.len() as u64 + 1;
        let error = match fetch_once(source, scope, policy.attempt_timeout, attempt).await {
            Ok(token) => {
                if !outcomes.is_empty() {
                    tracing::info!(
                        source = source.name(),
                        attempts = outcomes.len() + 1,
                        "token fetched after retrying"
                    );
                }
                return (Ok(token), attempt as u32);
            }
            Err(error) => error,
        };
        if !error.is_retryable() {
            return (Err(error), attempt as u32);
        }
        outcomes.push(error.outcome());
        let failures = outcomes.len() as u32;
        let now = Instant::now();
        let wait = policy.delay_after(failures, &error);
        let server_hold = error.retry_after().unwrap_or_default();
        if now >= deadline || now + server_hold > deadline {
            let exhausted = TokenError::RetriesExhausted {
                source_name: source.name().to_string(),
                attempts: failures,
                outcomes,
                elapsed: now - started,
                budget: policy.budget,
                last: Box::new(error),
            };
            return (Err(exhausted), failures);
        }
        // A drawn delay past the deadline is cut to it: one last attempt rather than giving up early.
        let next = (now + wait).min(deadline);
        tracing::warn!(
            source = source.name(),
            error = %error,
            attempt = failures,
            retry_in_ms = (next - now).as_millis() as u64,
            "token fetch failed; retrying"
        );
        sleep_until(next).await;
    }
}

/// One attempt, bounded by `limit`, in a `token_fetch` span that records its outcome (never the secret).
pub(crate) async fn fetch_once(
    source: &dyn TokenSource,
    scope: &str,
    limit: Duration,
    attempt: u64,
) -> Result<AccessToken, TokenError> {
    let span = tracing::info_span!(
        "token_fetch",
        source = source.name(),
        attempt,
        outcome = tracing::field::Empty,
        expires_in = tracing::field::Empty,
    );
    let result = match timeout(limit, source.fetch(scope)).instrument(span.clone()).await {
        Ok(result) => result,
        Err(_) => Err(TokenError::Transient {
            source_name: source.name().to_string(),
            reason: format!("no answer within {limit:?}"),
            status: None,
            retry_after: None,
        }),
    };
    crate::metrics::fetched(source.name(), &result);
    match &result {
        Ok(token) => {
            span.record("outcome", "ok");
            span.record("expires_in", token.expires_in().as_secs());
        }
        Err(_) => {
            span.record("outcome", "error");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_honours_retry_after() {
        let p = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=8).map(|n| p.backoff_ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        let throttled = TokenError::Transient {
            source_name: "imds".into(),
            reason: "429".into(),
            status: Some(429),
            retry_after: Some(Duration::from_secs(120)),
        };
        let plain = TokenError::transient("imds", "reset");
        for n in 1..=8 {
            for _ in 0..200 {
                let d = p.delay_after(n, &plain);
                assert!(d <= p.backoff_ceiling(n).max(p.floor), "{n}: {d:?}");
            }
            assert!(p.delay_after(n, &throttled) >= Duration::from_secs(120));
        }
    }

    #[test]
    fn definitive_errors_wait_at_the_slowest_pace() {
        let p = RetryPolicy::default();
        let refused = TokenError::auth_failed("imds", "identity not found");
        for _ in 0..100 {
            assert!(p.delay_after(1, &refused) <= p.max);
        }
    }
}
