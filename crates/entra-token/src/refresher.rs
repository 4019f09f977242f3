//! [`Refresher`] and [`TokenHandle`]: a task that keeps a token fresh, and the cheap handle that reads it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::status::{TokenState, TokenStatus};
use crate::{AccessToken, RefreshPolicy, StartMode, TokenError, TokenSource};

/// Starts the task that keeps a token fresh.
///
/// ```no_run
/// # async fn demo() -> Result<(), entra_token::TokenError> {
/// use entra_token::{Env, Refresher, RefreshPolicy, StaticSource, OSSRDBMS_SCOPE};
///
/// let source = StaticSource::from_env(&Env::process())?;
/// let tokens = Refresher::start(source, OSSRDBMS_SCOPE, RefreshPolicy::default()).await?;
/// let token = tokens.get().await?;           // waits only when no valid token is cached
/// println!("using {}", token.fingerprint()); // never the secret
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Refresher;

impl Refresher {
    /// Spawns the refresher on the current Tokio runtime and returns at once; the first fetch starts
    /// immediately. Panics, like `tokio::spawn`, when called outside a Tokio runtime.
    pub fn spawn(
        source: impl TokenSource + 'static,
        scope: impl Into<String>,
        policy: RefreshPolicy,
    ) -> TokenHandle {
        Self::spawn_with(Arc::new(source), scope.into(), policy, None)
    }

    /// Starts the refresher. With [`StartMode::FailFast`] (the default) it first fetches a token with
    /// [`fetch_with_retry`](crate::fetch_with_retry), within the policy's retry budget (70 s), and returns
    /// the error if that fails: at once on a definitive error (no identity endpoint, unknown identity, bad
    /// secret), or once the budget is spent on transient ones (throttling, IMDS updating). It never fails
    /// on the first 429. With [`StartMode::KeepRetrying`] it returns at once, as
    /// [`spawn`](Self::spawn) does.
    pub async fn start(
        source: impl TokenSource + 'static,
        scope: impl Into<String>,
        policy: RefreshPolicy,
    ) -> Result<TokenHandle, TokenError> {
        let source: Arc<dyn TokenSource> = Arc::new(source);
        let scope = scope.into();
        if policy.start_mode == StartMode::KeepRetrying {
            return Ok(Self::spawn_with(source, scope, policy, None));
        }
        let (token, attempts) = crate::retry::retrying(source.as_ref(), &scope, &policy.retry).await;
        let token = token?;
        usable_lifetime(&policy, source.name(), &token)?;
        Ok(Self::spawn_with(source, scope, policy, Some((token, attempts))))
    }

    fn spawn_with(
        source: Arc<dyn TokenSource>,
        scope: String,
        policy: RefreshPolicy,
        first: Option<(AccessToken, u32)>,
    ) -> TokenHandle {
        let (status_tx, _) = watch::channel(TokenStatus::new(source.name().to_string()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            scope,
            policy,
            current: ArcSwapOption::empty(),
            swap_lock: Mutex::new(()),
            force: AtomicBool::new(false),
            wake: Notify::new(),
            status: status_tx,
        });
        // Published before the task runs, so `current()` has it the moment `start` returns.
        let planned = first.and_then(|(token, attempts)| {
            shared.status.send_modify(|s| s.fetches += u64::from(attempts));
            publish(&shared, source.name(), token, Instant::now()).ok()
        });
        tokio::spawn(run(shared.clone(), source, stop_rx, planned));
        TokenHandle {
            shared,
            alive: Arc::new(Alive { stop: stop_tx }),
        }
    }
}

/// How long `token` will be served, or why it cannot be: it expires within the safety margin.
fn usable_lifetime(
    policy: &RefreshPolicy,
    source: &str,
    token: &AccessToken,
) -> Result<Duration, TokenError> {
    let lifetime = token
        .expires_on()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    if lifetime <= policy.expiry_margin {
        return Err(TokenError::invalid_response(
            source,
            format!(
                "the token expires in {lifetime:?}, within the {:?} safety margin; is this machine's clock \
                 right?",
                policy.expiry_margin
            ),
        ));
    }
    Ok(lifetime)
}

/// When a published token is renewed, and until when it is served.
#[derive(Clone, Copy)]
struct Plan {
    renew_at: Instant,
    usable_until: Instant,
}

/// Checks a fetched token and makes it the cached one.
fn publish(shared: &Shared, source: &str, token: AccessToken, now: Instant) -> Result<Plan, TokenError> {
    let policy = &shared.policy;
    let lifetime = usable_lifetime(policy, source, &token)?;
    let refresh_in = token
        .refresh_on()
        .map(|r| r.duration_since(SystemTime::now()).unwrap_or_default());
    let until = now + (lifetime - policy.expiry_margin);
    let renew_at = (now + policy.refresh_delay(lifetime, refresh_in)).min(until);
    tracing::info!(token = %token.fingerprint(), expires_in = lifetime.as_secs(), "token fetched");
    let fingerprint = token.fingerprint();
    crate::metrics::published(source, &token, until - now);
    let _guard = shared.swap_lock.lock();
    let generation = shared.status.borrow().refreshes + 1;
    shared.current.store(Some(Arc::new(Cached {
        token: token.with_generation(generation),
        fetched_at: now,
    })));
    // The new token replaces whatever a server rejected meanwhile: no second fetch for it.
    shared.force.store(false, Ordering::Release);
    shared.status.send_modify(|s| {
        s.state = TokenState::Valid;
        s.fingerprint = Some(fingerprint);
        s.usable_until = Some(until);
        s.next_fetch = Some(renew_at);
        s.last_refresh = Some(SystemTime::now());
        s.consecutive_failures = 0;
        s.last_error = None;
        s.refreshes = generation;
    });
    crate::metrics::state(source, TokenState::Valid);
    Ok(Plan {
        renew_at,
        usable_until: until,
    })
}

struct Shared {
    scope: String,
    policy: RefreshPolicy,
    current: ArcSwapOption<Cached>,
    /// Serialises the rare writers of `current` (publish, expire, invalidate) so a compare-then-clear
    /// never clears a token published in between.
    swap_lock: Mutex<()>,
    force: AtomicBool,
    wake: Notify,
    status: watch::Sender<TokenStatus>,
}

struct Cached {
    token: AccessToken,
    fetched_at: Instant,
}

/// Stops the task when the last handle drops (the sender's drop closes the task's receiver).
struct Alive {
    stop: watch::Sender<bool>,
}

/// A cheap, cloneable handle on a [`Refresher`]'s token. The refresher task ends when the last handle
/// drops, or on [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct TokenHandle {
    shared: Arc<Shared>,
    alive: Arc<Alive>,
}

impl fmt::Debug for TokenHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.shared.status.borrow();
        f.debug_struct("TokenHandle")
            .field("source", &status.source)
            .field("state", &status.state)
            .field("fingerprint", &status.fingerprint)
            .finish()
    }
}

impl TokenHandle {
    /// The cached token if it is still usable: no waiting and no lock (one atomic load). This is the hot
    /// path; `None` means call [`get`](Self::get).
    #[inline]
    pub fn current(&self) -> Option<AccessToken> {
        self.shared.current.load().as_ref().map(|c| c.token.clone())
    }

    /// Runs `f` on the cached token, if usable, without taking a reference count: one atomic load, about
    /// the cost of cloning an `Arc` (measured in `benches/token.rs`), and no shared cache-line write, so it
    /// scales across threads. For code that uses the secret at once; [`current`](Self::current) when the
    /// token must be kept.
    ///
    /// ```no_run
    /// # fn demo(tokens: &entra_token::TokenHandle) {
    /// let len = tokens.with_current(|t| t.secret().len());
    /// # }
    /// ```
    #[inline]
    pub fn with_current<R>(&self, f: impl FnOnce(&AccessToken) -> R) -> Option<R> {
        self.shared.current.load().as_ref().map(|c| f(&c.token))
    }

    /// A usable token, waiting (up to the policy's `get_timeout`) only when none is cached: at start-up or
    /// after [`invalidate`](Self::invalidate). Concurrent callers share the refresher's single fetch.
    ///
    /// Fails with [`TokenError::Unavailable`] carrying the last fetch error once the cached token has
    /// expired and renewing it keeps failing, and with [`TokenError::Shutdown`] after shutdown.
    pub async fn get(&self) -> Result<AccessToken, TokenError> {
        if let Some(token) = self.current() {
            return Ok(token);
        }
        let deadline = Instant::now() + self.shared.policy.get_timeout;
        let mut rx = self.shared.status.subscribe();
        loop {
            // The status is marked seen before the cache is read: `publish` stores the token before it
            // sends the status, so a token published before this mark is in the cache below, and one
            // published after it wakes `changed()`. The other order lost a wakeup: a token published
            // between reading an empty cache and marking its status seen left the caller waiting for a
            // change that had already come, until `get_timeout`.
            {
                let status = rx.borrow_and_update();
                if let Some(token) = self.current() {
                    return Ok(token);
                }
                match status.state {
                    TokenState::Stopped => return Err(TokenError::Shutdown),
                    TokenState::Unavailable if status.consecutive_failures > 0 => {
                        return Err(unavailable(&status, "fetching a new token keeps failing"));
                    }
                    _ => {}
                }
            }
            match timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(TokenError::Shutdown),
                Err(_) => {
                    let status = self.shared.status.borrow();
                    let reason = format!(
                        "no token within {:?} (state {:?})",
                        self.shared.policy.get_timeout, status.state
                    );
                    return Err(unavailable(&status, &reason));
                }
            }
        }
    }

    /// Reports that a server rejected `token`. If it is still the cached token, it stops being handed
    /// out and a new one is fetched at once (respecting a server's `Retry-After`). Returns whether this
    /// call triggered the refetch: when many connections fail with the same token, exactly one does.
    ///
    /// A token fetched less than the policy's `min_invalidate_interval` ago is kept: a refusal that a new
    /// token cannot fix (a revoked principal) must not turn every connection attempt into a fetch.
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        let shared = &self.shared;
        {
            let _guard = shared.swap_lock.lock();
            let current = shared.current.load();
            match current.as_ref() {
                Some(c) if c.token.same_as(token) => {
                    if c.fetched_at.elapsed() < shared.policy.min_invalidate_interval {
                        tracing::debug!(
                            token = %token.fingerprint(),
                            "token rejected but fetched moments ago; not refetching"
                        );
                        return false;
                    }
                }
                _ => return false,
            }
            shared.current.store(None);
            shared.force.store(true, Ordering::Release);
            crate::metrics::state(&shared.status.borrow().source.clone(), TokenState::Unavailable);
            shared.status.send_modify(|s| {
                s.state = TokenState::Unavailable;
                s.fingerprint = None;
                s.usable_until = None;
            });
        }
        tracing::info!(token = %token.fingerprint(), "token rejected by a server; fetching a new one");
        shared.wake.notify_one();
        true
    }

    /// How many tokens the refresher has published so far: the [generation](AccessToken::generation) of
    /// the newest one (0 before the first). Read before a token is taken, it orders the two: the token
    /// then handed out is of this generation or a later one.
    pub fn generation(&self) -> u64 {
        self.shared.status.borrow().refreshes
    }

    /// A snapshot of the refresher's state (no secret in it).
    pub fn status(&self) -> TokenStatus {
        self.shared.status.borrow().clone()
    }

    /// A receiver that sees every change of [`status`](Self::status).
    pub fn watch(&self) -> watch::Receiver<TokenStatus> {
        self.shared.status.subscribe()
    }

    /// Stops the refresher task now; later `get()` calls fail with [`TokenError::Shutdown`].
    pub fn shutdown(&self) {
        self.alive.stop.send_replace(true);
    }

    /// The scope tokens are fetched for.
    pub fn scope(&self) -> &str {
        &self.shared.scope
    }
}

fn unavailable(status: &TokenStatus, reason: &str) -> TokenError {
    TokenError::Unavailable {
        reason: format!("{}: {reason}", status.source),
        last_error: status.last_error.clone().map(Box::new),
    }
}

/// Empties the cache and reports `Stopped` however the task ends: normally, on a panicking source, or
/// when its runtime shuts down (a dropped future runs no code after its last `.await`).
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        {
            let _guard = self.0.swap_lock.lock();
            self.0.current.store(None);
        }
        crate::metrics::state(&self.0.status.borrow().source.clone(), TokenState::Stopped);
        self.0.status.send_modify(|s| {
            s.state = TokenState::Stopped;
            s.usable_until = None;
            s.next_fetch = None;
            s.fingerprint = None;
        });
    }
}

/// Stops handing out the cached token: it is within the safety margin of its expiry.
fn expire(shared: &Shared, source: &str) {
    {
        let _guard = shared.swap_lock.lock();
        shared.current.store(None);
    }
    tracing::warn!(source, "cached token expired before a renewal succeeded");
    crate::metrics::expired(source);
    crate::metrics::state(source, TokenState::Unavailable);
    shared.status.send_modify(|s| {
        s.state = TokenState::Unavailable;
        s.usable_until = None;
        s.fingerprint = None;
    });
}

/// When to retry after a failure: the retry policy's backoff, but never later than shortly before the
/// cached token stops being usable (an attempt then can still save it), and never sooner than the
/// server's `Retry-After`.
fn retry_at(now: Instant, delay: Duration, hold: Option<Duration>, usable_until: Option<Instant>) -> Instant {
    let mut at = now + delay;
    if let Some(until) = usable_until.filter(|u| *u > now) {
        let lead = (until - now).min(Duration::from_secs(2)) / 2;
        at = at.min(until - lead);
    }
    at.max(now + hold.unwrap_or_default())
}

/// The refresher task: one fetch at a time, renewals ahead of expiry, backoff on failure. `first` is the
/// plan of a token [`Refresher::start`] already fetched and published.
async fn run(
    shared: Arc<Shared>,
    source: Arc<dyn TokenSource>,
    mut stop: watch::Receiver<bool>,
    first: Option<Plan>,
) {
    let _cleanup = StopGuard(shared.clone());
    let policy = &shared.policy;
    let mut next_fetch = first.map_or_else(Instant::now, |p| p.renew_at);
    let mut usable_until: Option<Instant> = first.map(|p| p.usable_until);
    let mut hold_until = Instant::now(); // a server's Retry-After also holds forced refetches
    let mut failures: u32 = 0;
    let mut attempt: u64 = u64::from(first.is_some());

    loop {
        let wake_at = usable_until.map_or(next_fetch, |u| next_fetch.min(u));
        if Instant::now() < wake_at {
            tokio::select! {
                biased;
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                _ = shared.wake.notified() => {}
                _ = sleep_until(wake_at) => {}
            }
        }
        let now = Instant::now();
        if usable_until.is_some_and(|u| now >= u) {
            usable_until = None;
            expire(&shared, source.name());
        }
        if shared.force.swap(false, Ordering::AcqRel) {
            next_fetch = next_fetch.min(hold_until.max(now));
            if shared.current.load().is_none() {
                usable_until = None;
            }
        }
        if now < next_fetch {
            continue;
        }

        attempt += 1;
        shared.status.send_modify(|s| {
            s.fetches += 1;
            s.next_fetch = None;
        });
        let fetch = crate::retry::fetch_once(
            source.as_ref(),
            &shared.scope,
            policy.retry.attempt_timeout,
            attempt,
        );
        tokio::pin!(fetch);
        // The cached token's expiry is enforced while the fetch is in flight too: a hanging endpoint must
        // not keep an expired token in service.
        let result = loop {
            tokio::select! {
                biased;
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
                r = &mut fetch => break r,
                _ = sleep_until(usable_until.unwrap_or(now)), if usable_until.is_some() => {
                    usable_until = None;
                    expire(&shared, source.name());
                }
            }
        };
        let now = Instant::now();
        let result = result.and_then(|token| publish(&shared, source.name(), token, now));
        match result {
            Ok(plan) => {
                failures = 0;
                next_fetch = plan.renew_at;
                usable_until = Some(plan.usable_until);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = policy.retry.delay_after(failures, &error);
                if let Some(after) = error.retry_after() {
                    hold_until = now + after;
                }
                next_fetch = retry_at(now, delay, error.retry_after(), usable_until);
                let retry_in = next_fetch - now;
                tracing::warn!(
                    source = source.name(),
                    error = %error,
                    failures,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "token fetch failed"
                );
                let usable = shared.current.load().is_some();
                let state = if usable {
                    TokenState::Stale
                } else {
                    TokenState::Unavailable
                };
                crate::metrics::state(source.name(), state);
                shared.status.send_modify(|s| {
                    s.state = state;
                    s.next_fetch = Some(next_fetch);
                    s.consecutive_failures = failures;
                    s.last_error = Some(error);
                });
            }
        }
    }
    tracing::debug!(source = source.name(), "token refresher stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_never_planned_past_the_cached_tokens_last_usable_moment() {
        let now = Instant::now();
        let until = now + Duration::from_secs(20);
        let at = retry_at(now, Duration::from_secs(55), None, Some(until));
        assert!(
            at < until && at >= until - Duration::from_secs(1),
            "{:?}",
            at - now
        );
        // A server's Retry-After still wins: an earlier request would only be throttled again.
        let held = retry_at(
            now,
            Duration::from_secs(55),
            Some(Duration::from_secs(30)),
            Some(until),
        );
        assert_eq!(held, now + Duration::from_secs(30));
        // Without a cached token the backoff stands.
        assert_eq!(
            retry_at(now, Duration::from_secs(55), None, None),
            now + Duration::from_secs(55)
        );
    }
}
