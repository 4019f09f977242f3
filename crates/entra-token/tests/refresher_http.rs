//! The refresher end to end: `ImdsSource` over real HTTP against `FakeIdentity` on loopback, on Tokio's
//! real clock (paused time and sockets do not mix). Each test takes a few seconds at most.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::imds_source;
use entra_emulator::{Endpoint, FakeIdentity, Fault};
use entra_token::{
    AccessToken, ImdsSource, RefreshPolicy, Refresher, StartMode, TokenError, TokenHandle, TokenState,
    OSSRDBMS_SCOPE,
};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

/// Hang prevention only: far above what any of these tests needs.
const HANG: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(HANG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {HANG:?}"),
    }
}

fn spawn(fake: &FakeIdentity, policy: RefreshPolicy) -> TokenHandle {
    Refresher::spawn(imds_source(fake), OSSRDBMS_SCOPE, policy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_gets_cause_one_token_request() {
    let fake = FakeIdentity::start().await.unwrap();
    // Holding the first answer back keeps the gets below cold (checked once they have all started).
    fake.push_faults([Fault::Delay(Duration::from_millis(500))]);
    let handle = spawn(&fake, RefreshPolicy::default());
    assert!(handle.current().is_none());

    let started = Arc::new(AtomicUsize::new(0));
    let mut gets = JoinSet::new();
    for _ in 0..1000 {
        let (handle, started) = (handle.clone(), started.clone());
        gets.spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            handle.get().await
        });
    }
    within("the gets to start", async {
        while started.load(Ordering::SeqCst) < 1000 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        handle.current().is_none(),
        "the token arrived before every get() had started"
    );
    let tokens: Vec<AccessToken> = within("1000 gets", gets.join_all())
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();

    assert_eq!(tokens.len(), 1000);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(fake.tokens_issued(), 1);
    let claims = common::claims(&fake, &tokens[0]);
    assert_eq!(claims.oid, fake.system_identity().object_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_invalidations_cause_one_more_request() {
    let fake = FakeIdentity::start().await.unwrap();
    let policy = RefreshPolicy::default().min_invalidate_interval(Duration::ZERO);
    let handle = spawn(&fake, policy);
    let first = within("first token", handle.get()).await.unwrap();
    assert_eq!(fake.token_requests(), 1);

    let barrier = Barrier::new(100);
    let triggered = std::thread::scope(|s| {
        let calls: Vec<_> = (0..100)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    handle.invalidate(&first)
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().unwrap())
            .filter(|&t| t)
            .count()
    });
    assert_eq!(triggered, 1, "exactly one invalidate() triggers the refetch");

    let second = within("token after invalidation", handle.get()).await.unwrap();
    // Not comparing the texts: the fake signs identical claims within one second into identical tokens.
    assert!(!second.same_as(&first));
    // A stale copy of the rejected token changes nothing now.
    assert!(!handle.invalidate(&first));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(fake.tokens_issued(), 2);
    assert!(handle.current().unwrap().same_as(&second));
}

fn unavailable_503_retry_after_1s() -> Fault {
    Fault::Status {
        status: 503,
        body: r#"{"error":"service_unavailable","error_description":"try later"}"#.into(),
        retry_after: Some("1".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_through_a_fault_script_at_start() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([
        unavailable_503_retry_after_1s(),
        Fault::Malformed,
        Fault::status(429),
    ]);
    let policy = RefreshPolicy::default()
        .start_mode(StartMode::KeepRetrying)
        .backoff(Duration::from_millis(100), Duration::from_millis(500));
    let handle = within(
        "start",
        Refresher::start(imds_source(&fake), OSSRDBMS_SCOPE, policy),
    )
    .await
    .expect("KeepRetrying starts even when the first fetch fails");

    // Record every failure count the status goes through.
    let mut rx = handle.watch();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let (state, failures) = {
                let s = rx.borrow_and_update();
                (s.state, s.consecutive_failures)
            };
            if seen.last() != Some(&failures) {
                seen.push(failures);
            }
            if state == TokenState::Valid || rx.changed().await.is_err() {
                return seen;
            }
        }
    });

    let mut errors = Vec::new();
    let token = within("a token once the faults are used up", async {
        loop {
            match handle.get().await {
                Ok(token) => return token,
                Err(e) => {
                    assert!(matches!(e, TokenError::Unavailable { .. }), "{e:?}");
                    errors.push(e);
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;

    assert!(!errors.is_empty(), "get() failed while the endpoint did");
    let status = handle.status();
    assert_eq!(status.state, TokenState::Valid);
    assert_eq!(status.fetches, 4);
    assert_eq!(status.refreshes, 1);
    assert_eq!(status.consecutive_failures, 0);
    let seen = within("watcher", watcher).await.unwrap();
    assert!(
        seen.contains(&3) && seen.ends_with(&[0]),
        "failure counts seen: {seen:?}"
    );

    let requests: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Imds)
        .collect();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200, 429, 200], "the malformed answer is a 200");
    assert_eq!(fake.tokens_issued(), 1);
    assert_eq!(
        common::claims(&fake, &token).oid,
        fake.system_identity().object_id
    );
    let after_503 = requests[1].at - requests[0].at;
    assert!(
        after_503 >= Duration::from_secs(1),
        "retried {after_503:?} after a 503 with Retry-After: 1"
    );
    for pair in requests.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(50), "retried after {gap:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_a_short_lived_token_before_it_expires() {
    let fake = FakeIdentity::builder()
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    // A 3 s token: usable until 1 s before expiry, renewed at half-life (the refresh margin is larger
    // than the lifetime, and renewal never comes before half-life), so within about 1.5 s.
    let policy = RefreshPolicy::default()
        .expiry_margin(Duration::from_secs(1))
        .refresh_margin(Duration::from_secs(10));
    let handle = spawn(&fake, policy);
    let first = within("first token", handle.get()).await.unwrap();
    // The renewal brings an hour token, so exactly one rotation happens in this test.
    fake.set_token_lifetime(Duration::from_secs(3600));
    assert_eq!(fake.tokens_issued(), 1);

    let mut rx = handle.watch();
    let states = within("a rotation", async {
        let mut states = Vec::new();
        loop {
            let (state, refreshes) = {
                let s = rx.borrow_and_update();
                (s.state, s.refreshes)
            };
            states.push(state);
            if refreshes == 2 {
                return states;
            }
            rx.changed().await.expect("the refresher is running");
        }
    })
    .await;
    // Renewed ahead of expiry: the first token was served until the second replaced it.
    assert!(
        states.iter().all(|s| *s == TokenState::Valid),
        "states during the rotation: {states:?}"
    );
    let second = handle.current().expect("the renewed token is cached");
    assert!(!second.same_as(&first));
    assert!(second.expires_on() > first.expires_on());
    assert_eq!(fake.tokens_issued(), 2);
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(handle.status().state, TokenState::Valid);
}

/// The refresher owns the source through this `Arc`; its weak twin says when the task has let go.
fn shared_source(fake: &FakeIdentity) -> (Arc<ImdsSource>, std::sync::Weak<ImdsSource>) {
    let source = Arc::new(imds_source(fake));
    let weak = Arc::downgrade(&source);
    (source, weak)
}

/// Waits up to `limit` for the refresher task to drop its source.
async fn wait_dropped(weak: &std::sync::Weak<ImdsSource>, limit: Duration, what: &str) {
    let dropped = timeout(limit, async {
        while weak.strong_count() > 0 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(dropped.is_ok(), "{what}: still running after {limit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_ends_after_the_last_handle_drops() {
    let fake = FakeIdentity::builder()
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let policy = RefreshPolicy::default()
        .expiry_margin(Duration::from_secs(1))
        .refresh_margin(Duration::from_secs(10));
    let (source, weak) = shared_source(&fake);
    let handle = Refresher::spawn(source, OSSRDBMS_SCOPE, policy);
    let clone = handle.clone();
    within("first token", handle.get()).await.unwrap();
    assert_eq!(fake.token_requests(), 1);

    drop(handle);
    sleep(Duration::from_millis(100)).await;
    assert_eq!(weak.strong_count(), 1, "a clone still holds the refresher");
    drop(clone);
    wait_dropped(&weak, HANG, "the refresher task").await;
    // A live refresher renews this 3 s token (2–3 s on arrival: expiry has whole seconds) at half-life,
    // within 1.5 s of fetching it.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(fake.token_requests(), 1, "requests after the last handle dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handles_ends_a_fetch_in_flight() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::NoResponse]);
    let (source, weak) = shared_source(&fake);
    let handle = Refresher::spawn(source, OSSRDBMS_SCOPE, RefreshPolicy::default());
    within("the request to arrive", async {
        while fake.token_requests() == 0 {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let status = handle.status();
    assert_eq!(status.state, TokenState::Starting);
    assert_eq!(status.fetches, 1);

    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.get().await })
    };
    handle.shutdown();
    let err = within("get() after shutdown", waiter).await.unwrap().unwrap_err();
    assert!(matches!(err, TokenError::Shutdown), "{err:?}");
    assert_eq!(handle.status().state, TokenState::Stopped);
    drop(handle);
    // Well under the HTTP timeout (10 s) the fetch would wait for if the task did not abandon it.
    wait_dropped(&weak, Duration::from_secs(5), "the refresher task").await;
    assert_eq!(fake.token_requests(), 1);
}

// Reproductions of refresher bugs found in review (expired token served during a hanging renewal,
// a refresh_in of 0 looping, a redundant fetch after an invalidation during a renewal): kept as guards.

/// Waits until the fake has seen `n` token requests.
async fn wait_requests(fake: &FakeIdentity, n: usize) {
    within("token requests", async {
        while fake.token_requests() < n {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// The expiry timer is only watched between fetches: a renewal that hangs (here until the 8 s fetch
/// timeout) must not keep an expired token in the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_expired_token_is_served_while_a_renewal_hangs() {
    let fake = FakeIdentity::builder()
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let policy = RefreshPolicy::default()
        .expiry_margin(Duration::from_secs(1))
        .refresh_margin(Duration::from_secs(10))
        .fetch_timeout(Duration::from_secs(8));
    let handle = spawn(&fake, policy);
    let first = within("first token", handle.get()).await.unwrap();
    fake.push_faults([Fault::NoResponse]);
    wait_requests(&fake, 2).await;
    sleep(first.expires_in() + Duration::from_millis(200)).await;
    let served = handle.current();
    assert!(
        served.is_none(),
        "current() still serves a token that expired {:?} ago",
        served.map(|t| std::time::SystemTime::now().duration_since(t.expires_on()))
    );
}

/// An endpoint advising `refresh_in: 0` (or a `refresh_on` already past) must not turn the refresher
/// into a request loop against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advised_refresh_in_of_zero_does_not_loop() {
    let fake = FakeIdentity::start().await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    fake.set_persistent_fault(Some(Fault::Json(serde_json::json!({
        "access_token": "eyJhbGciOiJSUzI1NiJ9.cmVmcmVzaC1pbi16ZXJv.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
        "expires_in": "3600",
        "expires_on": (now + 3600).to_string(),
        "refresh_in": "0",
        "resource": "https://ossrdbms-aad.database.windows.net",
        "token_type": "Bearer",
    }))));
    let handle = spawn(&fake, RefreshPolicy::default());
    within("first token", handle.get()).await.unwrap();
    sleep(Duration::from_millis(500)).await;
    let n = fake.token_requests();
    assert!(n <= 2, "{n} token requests in 0.5 s");
}

/// A token rejected while its renewal is already in flight is replaced by that renewal; forcing another
/// fetch after it only doubles the load on the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_renewal_fetches_once() {
    let fake = FakeIdentity::builder()
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let policy = RefreshPolicy::default()
        .expiry_margin(Duration::from_secs(1))
        .refresh_margin(Duration::from_secs(10))
        .min_invalidate_interval(Duration::ZERO);
    let handle = spawn(&fake, policy);
    let first = within("first token", handle.get()).await.unwrap();
    fake.set_token_lifetime(Duration::from_secs(3600));
    fake.push_faults([Fault::Delay(Duration::from_millis(500))]);
    wait_requests(&fake, 2).await;
    assert!(handle.invalidate(&first));
    let second = within("renewed", handle.get()).await.unwrap();
    assert!(!second.same_as(&first));
    sleep(Duration::from_millis(400)).await;
    assert_eq!(
        fake.token_requests(),
        2,
        "the renewal in flight already replaces the rejected token"
    );
}
