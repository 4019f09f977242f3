//! The refresher's behaviour over time, on Tokio's paused clock.

mod scripted;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use entra_token::{RefreshPolicy, Refresher, StartMode, TokenError, TokenState, OSSRDBMS_SCOPE};
use scripted::{transient, LogCapture, Scripted, Step};
use tokio::time::{sleep, Instant};

const MIN: u64 = 60;
const HOUR: u64 = 3600;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn policy() -> RefreshPolicy {
    RefreshPolicy::default()
}

#[tokio::test(start_paused = true)]
async fn renews_an_hour_token_between_jitter_bounds_before_expiry() {
    let source = Scripted::tokens(secs(HOUR));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    sleep(secs(4 * HOUR)).await;
    let times = source.fetch_times();
    assert!(times.len() >= 4, "{} fetches", times.len());
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        // 55 min, moved earlier by at most 10 % of the wait
        assert!(
            gap <= secs(55 * MIN) && gap >= secs(55 * MIN).mul_f64(0.9),
            "renewed after {gap:?}"
        );
    }
    assert_eq!(handle.status().state, TokenState::Valid);
}

#[tokio::test(start_paused = true)]
async fn renews_a_day_token_at_half_life() {
    let source = Scripted::tokens(secs(24 * HOUR));
    let _handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    sleep(secs(13 * HOUR)).await;
    let times = source.fetch_times();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap <= secs(12 * HOUR) && gap >= secs(12 * HOUR).mul_f64(0.9),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_exponentially_to_its_cap() {
    let source = Scripted::tokens(secs(HOUR)).then(Step::Token(secs(HOUR)));
    source.set_default(Step::Fail(transient()));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    let first_failure_at = Instant::now() + secs(55 * MIN);
    sleep(secs(55 * MIN + 20 * MIN)).await;
    let times: Vec<Instant> = source
        .fetch_times()
        .into_iter()
        .filter(|t| *t >= first_failure_at - secs(6 * MIN))
        .collect();
    assert!(times.len() > 10, "{} attempts", times.len());
    let p = policy();
    for (n, pair) in times.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let ceiling = p.backoff_ceiling(n as u32 + 1);
        assert!(
            gap <= ceiling.max(Duration::from_millis(50)),
            "attempt {n}: {gap:?} > {ceiling:?}"
        );
    }
    // once capped, no attempt waits more than 60 s, and over 20 min there are at least 20 more attempts
    assert!(times.len() >= 20);
    let status = handle.status();
    assert!(status.consecutive_failures as usize >= times.len() - 1);
    assert!(matches!(status.last_error, Some(TokenError::Transient { .. })));
}

#[tokio::test(start_paused = true)]
async fn honours_retry_after() {
    let throttled = TokenError::Transient {
        source_name: "scripted".into(),
        reason: "HTTP 429".into(),
        status: Some(429),
        retry_after: Some(secs(120)),
    };
    let source = Scripted::tokens(secs(HOUR)).then(Step::Fail(throttled));
    let handle = Refresher::spawn(
        source.clone(),
        OSSRDBMS_SCOPE,
        policy().start_mode(StartMode::KeepRetrying),
    );
    sleep(secs(200)).await;
    let times = source.fetch_times();
    assert_eq!(times.len(), 2);
    assert!(times[1] - times[0] >= secs(120), "{:?}", times[1] - times[0]);
    assert!(handle.current().is_some());
}

#[tokio::test(start_paused = true)]
async fn serves_cached_token_through_a_30_minute_outage() {
    let source = Scripted::tokens(secs(2 * HOUR));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    let first = handle.current().unwrap();
    source.set_default(Step::Fail(transient()));
    // renewal is due at about 1 h; the outage lasts from then until 1 h 30
    sleep(secs(HOUR)).await;
    for _ in 0..30 {
        sleep(secs(MIN)).await;
        let t = handle.get().await.expect("token served during the outage");
        assert!(t.same_as(&first));
    }
    assert_eq!(
        handle.status().state,
        TokenState::Stale,
        "{:?} {:?}",
        handle.status(),
        source.fetch_times()
    );
    source.set_default(Step::Token(secs(2 * HOUR)));
    sleep(secs(61)).await; // the cap: the next attempt comes within a minute
    let renewed = handle.current().unwrap();
    assert!(!renewed.same_as(&first));
    assert_eq!(handle.status().state, TokenState::Valid);
    assert_eq!(handle.status().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn typed_error_after_expiry_then_recovery_at_first_success() {
    let source = Scripted::tokens(secs(10 * MIN));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    source.set_default(Step::Fail(transient()));
    sleep(secs(10 * MIN - 31)).await;
    assert!(handle.current().is_some(), "still served up to expiry - 30 s");
    sleep(secs(2)).await;
    assert!(handle.current().is_none(), "not served within 30 s of expiry");
    let before = Instant::now();
    match handle.get().await {
        Err(TokenError::Unavailable {
            last_error: Some(cause),
            ..
        }) => {
            assert!(
                matches!(
                    *cause,
                    TokenError::Transient {
                        status: Some(503),
                        ..
                    }
                ),
                "{cause}"
            )
        }
        other => panic!("expected Unavailable with a cause, got {other:?}"),
    }
    assert!(Instant::now() - before <= policy_get_timeout());
    assert_eq!(handle.status().state, TokenState::Unavailable);

    source.set_default(Step::Token(secs(10 * MIN)));
    let fetches = source.fetch_count();
    // wait for exactly the next attempt, then the token is back at once
    while source.fetch_count() == fetches {
        sleep(Duration::from_millis(100)).await;
    }
    sleep(Duration::from_millis(1)).await;
    assert!(handle.get().await.is_ok());
    assert_eq!(handle.status().state, TokenState::Valid);
}

fn policy_get_timeout() -> Duration {
    secs(30)
}

#[tokio::test(start_paused = true)]
async fn a_thousand_cold_gets_share_one_fetch() {
    let source = Scripted::tokens(secs(HOUR));
    source.set_delay(Duration::from_millis(200));
    let handle = Refresher::spawn(
        source.clone(),
        OSSRDBMS_SCOPE,
        policy().start_mode(StartMode::KeepRetrying),
    );
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move { h.get().await }));
    }
    let mut firsts = Vec::new();
    for t in tasks {
        firsts.push(t.await.unwrap().unwrap());
    }
    assert_eq!(source.fetch_count(), 1);
    assert!(firsts.iter().all(|t| t.same_as(&firsts[0])));
}

#[tokio::test(start_paused = true)]
async fn a_hundred_invalidations_of_one_token_cause_one_fetch() {
    let source = Scripted::tokens(secs(HOUR));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    sleep(secs(30)).await; // older than the minimum invalidation interval
    let rejected = handle.current().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let h = handle.clone();
        let t = rejected.clone();
        tasks.push(tokio::spawn(async move {
            let triggered = h.invalidate(&t);
            let fresh = h.get().await.unwrap();
            (triggered, fresh)
        }));
    }
    let mut triggered = 0;
    for t in tasks {
        let (did, fresh) = t.await.unwrap();
        triggered += did as usize;
        assert!(!fresh.same_as(&rejected));
    }
    assert_eq!(triggered, 1);
    assert_eq!(source.fetch_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidating_a_fresh_or_stale_copy_does_nothing() {
    let source = Scripted::tokens(secs(HOUR));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    let first = handle.current().unwrap();
    assert!(!handle.invalidate(&first), "fetched moments ago: kept");
    sleep(secs(30)).await;
    assert!(handle.invalidate(&first));
    let second = handle.get().await.unwrap();
    sleep(secs(30)).await;
    assert!(!handle.invalidate(&first), "no longer current");
    assert!(handle.current().unwrap().same_as(&second));
    assert_eq!(handle.with_current(|t| t.same_as(&second)), Some(true));
    assert_eq!(source.fetch_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn revoked_principal_does_not_loop_token_requests() {
    let source = Scripted::tokens(secs(HOUR));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    sleep(secs(30)).await;
    // a server that refuses every token: each connection attempt invalidates what it was given
    for _ in 0..600 {
        let t = handle.get().await.unwrap();
        handle.invalidate(&t);
        sleep(Duration::from_millis(100)).await;
    }
    // 60 s of attempts: at most one refetch per 10 s minimum interval, plus the first fetch
    assert!(source.fetch_count() <= 8, "{} fetches", source.fetch_count());
}

#[tokio::test(start_paused = true)]
async fn fail_fast_start_returns_the_first_error() {
    let source = Scripted::new(Step::Fail(TokenError::auth_failed(
        "scripted",
        "Identity not found",
    )));
    let err = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::AuthenticationFailed { .. }), "{err}");
    let dropped = source.dropped_flag();
    drop(source);
    sleep(secs(1)).await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the task must end after a failed start"
    );
}

#[tokio::test(start_paused = true)]
async fn keep_retrying_start_recovers_when_the_source_does() {
    let source = Scripted::new(Step::Fail(transient()));
    let handle = Refresher::start(
        source.clone(),
        OSSRDBMS_SCOPE,
        policy().start_mode(StartMode::KeepRetrying),
    )
    .await
    .unwrap();
    sleep(secs(5)).await;
    assert!(matches!(handle.get().await, Err(TokenError::Unavailable { .. })));
    source.set_default(Step::Token(secs(HOUR)));
    sleep(secs(61)).await;
    assert!(handle.get().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_task_ends_when_the_last_handle_drops() {
    let source = Scripted::tokens(secs(HOUR));
    let dropped = source.dropped_flag();
    let handle = Refresher::start(source, OSSRDBMS_SCOPE, policy()).await.unwrap();
    let clone = handle.clone();
    drop(handle);
    sleep(secs(1)).await;
    assert!(!dropped.load(Ordering::SeqCst), "a clone still lives");
    drop(clone);
    sleep(secs(1)).await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "the task must drop its source when the handles are gone"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_task_and_get_says_so() {
    let source = Scripted::tokens(secs(HOUR));
    let dropped = source.dropped_flag();
    let handle = Refresher::start(source, OSSRDBMS_SCOPE, policy()).await.unwrap();
    handle.shutdown();
    sleep(secs(1)).await;
    assert!(dropped.load(Ordering::SeqCst));
    assert!(matches!(handle.get().await, Err(TokenError::Shutdown)));
    assert_eq!(
        handle.with_current(|_| ()),
        None,
        "nothing is handed out after shutdown"
    );
    assert_eq!(handle.status().state, TokenState::Stopped);
}

/// A token shorter than the refresh margin is renewed at half-life (never earlier: no refresh storm for
/// short tokens), and served without a gap until the renewal replaces it. Over real HTTP,
/// `refresher_http.rs::rotates_a_short_lived_token_before_it_expires` checks the plan and the rotation;
/// when they happen is this test's subject.
#[tokio::test(start_paused = true)]
async fn a_token_shorter_than_its_refresh_margin_is_served_until_renewed_at_half_life() {
    let source = Scripted::tokens(secs(3));
    // Each fetch takes 100 ms, so a token withdrawn before its renewal is published would be seen.
    let fetch = Duration::from_millis(100);
    source.set_delay(fetch);
    let policy = policy()
        .expiry_margin(secs(1))
        .refresh_margin(secs(10))
        .jitter(0.0);
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy)
        .await
        .unwrap();
    let mut rx = handle.watch();
    let mut states = Vec::new();
    loop {
        let (state, refreshes) = {
            let s = rx.borrow_and_update();
            (s.state, s.refreshes)
        };
        states.push(state);
        if refreshes == 4 {
            break;
        }
        rx.changed().await.unwrap();
    }
    assert!(
        states.iter().all(|s| *s == TokenState::Valid),
        "states through three rotations: {states:?}"
    );
    let times = source.fetch_times();
    assert_eq!(times.len(), 4);
    for pair in times.windows(2) {
        // No later than half of the 3 s lifetime after the token arrived (one fetch after the fetch
        // began). The lifetime is read off the wall clock as the token arrives, so it can only be a little
        // shorter than 3 s, and the renewal a little earlier.
        let gap = pair[1] - pair[0];
        assert!(
            gap <= fetch + secs(3) / 2,
            "renewed {gap:?} after the previous fetch began"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn watch_sees_every_rotation() {
    let source = Scripted::tokens(secs(10 * MIN));
    let handle = Refresher::start(source, OSSRDBMS_SCOPE, policy()).await.unwrap();
    let mut rx = handle.watch();
    let mut refreshes = vec![rx.borrow_and_update().refreshes];
    for _ in 0..3 {
        rx.changed().await.unwrap();
        while rx.borrow().state != TokenState::Valid || rx.borrow().refreshes == *refreshes.last().unwrap() {
            rx.changed().await.unwrap();
        }
        refreshes.push(rx.borrow_and_update().refreshes);
    }
    assert_eq!(refreshes, [1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn no_log_line_or_debug_output_carries_the_secret() {
    let capture = LogCapture::default();
    let _guard = capture.install();
    let source = Scripted::tokens(secs(10 * MIN))
        .then(Step::Token(secs(10 * MIN)))
        .then(Step::Fail(transient()))
        .then(Step::Fail(TokenError::invalid_response(
            "scripted",
            "truncated body",
        )))
        .then(Step::Token(secs(10 * MIN)));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    sleep(secs(5 * MIN)).await;
    let t = handle.get().await.unwrap();
    sleep(secs(30)).await;
    handle.invalidate(&t);
    sleep(secs(30 * MIN)).await;
    let mut outputs = vec![
        capture.text(),
        format!("{handle:?}"),
        format!("{:?}", handle.status()),
        format!("{t:?}"),
        format!("{t}"),
    ];
    outputs.push(format!("{:?}", handle.get().await));
    assert!(capture.text().contains("token_fetch"), "spans were captured");
    let issued = source.issued();
    assert!(issued.len() >= 3);
    for secret in &issued {
        for (i, out) in outputs.iter().enumerate() {
            assert!(!out.contains(secret.as_str()), "output {i} leaks a token");
            // nor any long piece of it
            assert!(
                !out.contains(&secret[secret.len() - 20..]),
                "output {i} leaks part of a token"
            );
        }
    }
    drop(Arc::new(handle));
}

#[tokio::test(start_paused = true)]
async fn each_published_token_is_one_generation_newer_and_a_taken_token_is_never_older_than_the_count() {
    let source = Scripted::tokens(secs(HOUR));
    let handle = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy())
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        // Read in this order, a taken token is of the generation counted before or a newer one.
        let known = handle.generation();
        let token = handle.get().await.unwrap();
        assert!(token.generation() >= known, "{} < {known}", token.generation());
        seen.push(token.generation());
        sleep(secs(HOUR)).await;
    }
    assert_eq!(seen, [1, 2, 3, 4], "one generation per renewal");
    assert_eq!(handle.status().refreshes, handle.generation());
    // A token the server refused is replaced by the next generation, not a reused number.
    let refused = handle.get().await.unwrap();
    sleep(secs(1)).await;
    assert!(handle.invalidate(&refused));
    let fresh = handle.get().await.unwrap();
    assert_eq!(fresh.generation(), refused.generation() + 1);
}
