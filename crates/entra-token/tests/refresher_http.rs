//! The refresher end to end: `ImdsSource` over real HTTP against `FakeIdentity` on loopback, on Tokio's
//! real clock (paused time and sockets do not mix). Each test takes a few seconds at most. The tests
//! assert what happened and in which order (the refresher's status, the fake's request log), never that
//! something happened within some time: the only durations asserted are lower bounds that the refresher's
//! own waits guarantee (no retry sooner than `Retry-After`), which a busy machine can only lengthen.
//! When things happen is `refresher.rs`'s subject, on the paused clock.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use common::{http, imds_source};
use entra_emulator::{Claims, Endpoint, FakeIdentity, Fault, OSSRDBMS_RESOURCE};
use entra_token::{
    AccessToken, FetchFuture, ImdsSource, RefreshPolicy, Refresher, StartMode, StaticSource, TokenError,
    TokenHandle, TokenSource, TokenState, OSSRDBMS_SCOPE,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

/// Hang prevention only: far above what any of these tests needs.
const HANG: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match timeout(HANG, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still waiting after {HANG:?}"),
    }
}

fn spawn(fake: &FakeIdentity, policy: RefreshPolicy) -> TokenHandle {
    Refresher::spawn(imds_source(fake), OSSRDBMS_SCOPE, policy)
}

/// For 3 s tokens from the fake (2–3 s left on arrival: expiry has whole seconds): renewed at half-life (the
/// refresh margin is larger than the lifetime, and renewal never comes before half-life), served until
/// 0.1 s before expiry, so the renewal is planned about a second before the token stops being served.
fn three_second_policy() -> RefreshPolicy {
    RefreshPolicy::default()
        .expiry_margin(Duration::from_millis(100))
        .refresh_margin(Duration::from_secs(10))
}

/// Makes the fake's next answer a 3 s token; the answers after it carry its usual hour tokens, so a test
/// sees exactly one rotation, whenever its own steps run.
fn first_answer_lasts_three_seconds(fake: &FakeIdentity) {
    let lifetime = Duration::from_secs(3);
    let short = fake
        .issuer()
        .sign(&Claims::new(fake.system_identity().object_id, lifetime));
    fake.push_faults([Fault::token(&short, lifetime, OSSRDBMS_RESOURCE)]);
}

/// An IMDS source whose answers, from its `from`-th fetch on (0: the first), wait after they have arrived
/// until the test lets them through: the test orders "answer arrived" and "answer handed to the
/// refresher" around its own steps with an event, where a delayed answer would race them.
#[derive(Debug)]
struct Held {
    inner: Box<dyn TokenSource>,
    from: usize,
    fetches: AtomicUsize,
    released: watch::Sender<bool>,
}

impl Held {
    fn new(fake: &FakeIdentity, from: usize) -> Arc<Self> {
        Held::wrapping(imds_source(fake), from)
    }

    fn wrapping(inner: impl TokenSource + 'static, from: usize) -> Arc<Self> {
        Arc::new(Held {
            inner: Box::new(inner),
            from,
            fetches: AtomicUsize::new(0),
            released: watch::Sender::new(false),
        })
    }

    /// Lets every held answer, and every later one, through.
    fn release(&self) {
        self.released.send_replace(true);
    }
}

impl TokenSource for Held {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn fetch<'a>(&'a self, scope: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst);
            let answer = self.inner.fetch(scope).await;
            if n >= self.from {
                let _ = self.released.subscribe().wait_for(|released| *released).await;
            }
            answer
        })
    }
}

/// A token published while gets are between their look at the empty cache and their wait reaches them
/// all. `get()` once looked at the cache before marking the status seen; a token published in between
/// left that get waiting for a change that had already come, until its `get_timeout`. The window is two
/// atomic loads wide, so this test opens it many times: each round releases the first answer (a fixed
/// token, no HTTP, so rounds are short) half-way through starting its gets. With the old order it failed
/// 6 runs of 6 on the development machine; the thousand cold gets below caught it only on a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_in_flight_when_the_token_lands_all_receive_it() {
    const ROUNDS: usize = 2000;
    const GETS: usize = 200;
    let token = AccessToken::new(
        "header.payload.signature",
        SystemTime::now() + Duration::from_secs(3600),
    );
    for round in 0..ROUNDS {
        let source = Held::wrapping(StaticSource::new(token.clone()), 0);
        let handle = Refresher::spawn(source.clone(), OSSRDBMS_SCOPE, RefreshPolicy::default());
        let mut gets = JoinSet::new();
        for i in 0..GETS {
            if i == GETS / 2 {
                source.release();
            }
            let handle = handle.clone();
            gets.spawn(async move { handle.get().await });
        }
        let results = within("the gets of a round", gets.join_all()).await;
        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} of {GETS} gets failed, the first with {:?}",
            failed.len(),
            failed[0]
        );
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cold_gets_cause_one_token_request() {
    let fake = FakeIdentity::start().await.unwrap();
    // Holding the first answer back until every get below has started keeps them all cold.
    let source = Held::new(&fake, 0);
    let handle = Refresher::spawn(source.clone(), OSSRDBMS_SCOPE, RefreshPolicy::default());
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
    source.release();
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
    // A stale copy of the rejected token changes nothing now. A quiet window for a stray request: a sleep
    // never ends early, and a busy machine can only make the window miss one, never invent one.
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
    // A watch receiver sees only the latest value, so a watcher scheduled late misses counts (3 lives only
    // for the backoff after the 429): the counts it saw only grow, up to 3 at most, until the success
    // resets them to 0. The request log below proves the whole sequence.
    let seen = within("watcher", watcher).await.unwrap();
    let (last, growing) = seen.split_last().expect("the watcher saw a status");
    assert_eq!(*last, 0, "the success reset the failure count: {seen:?}");
    assert!(
        growing.windows(2).all(|w| w[0] < w[1]) && growing.iter().all(|&n| n <= 3),
        "failure counts only grow until the success: {seen:?}"
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
    // Lower bounds only, measured between the fake's receipts: the refresher waits from the moment the
    // answer reached it, after the fake received the request.
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

/// Over HTTP, with the whole-second expiry IMDS sends, the refresher plans the renewal of a 3 s token
/// before the token stops being served, and renews it by itself. That the token is then served until the
/// renewal replaces it is a matter of time, checked on the paused clock
/// (`refresher.rs::a_token_shorter_than_its_refresh_margin_is_served_until_renewed_at_half_life`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_a_short_lived_token_before_it_expires() {
    let fake = FakeIdentity::start().await.unwrap();
    first_answer_lasts_three_seconds(&fake);
    let handle = spawn(&fake, three_second_policy());
    let mut rx = handle.watch();
    let first = within("first token", handle.get()).await.unwrap();

    // Each status published with a token carries its plan. A watcher sees the latest status, so it may
    // skip one, but never sees one that was not published.
    let plans = within("a rotation", async {
        let mut plans = Vec::new();
        loop {
            let s = rx.borrow_and_update().clone();
            if let (Some(renew_at), Some(until)) = (s.next_fetch, s.usable_until) {
                plans.push((s.refreshes, renew_at, until));
            }
            if s.refreshes == 2 {
                return plans;
            }
            rx.changed().await.expect("the refresher is running");
        }
    })
    .await;
    assert!(plans.iter().any(|(generation, ..)| *generation == 2), "{plans:?}");
    for (generation, renew_at, until) in &plans {
        assert!(
            renew_at < until,
            "token {generation}: renewal planned no earlier than the end of its service"
        );
    }
    let second = handle.current().expect("the renewed token is cached");
    assert!(!second.same_as(&first));
    assert_eq!((first.generation(), second.generation()), (1, 2));
    assert!(second.expires_on() > first.expires_on());
    assert_eq!(fake.token_requests(), 2);
    assert_eq!(
        fake.tokens_issued(),
        1,
        "the renewal's token (the first was the scripted one)"
    );
    assert_eq!(handle.status().state, TokenState::Valid);
}

/// The refresher owns the source through this `Arc`; its weak twin says when the task has let go.
fn shared_source(source: ImdsSource) -> (Arc<ImdsSource>, std::sync::Weak<ImdsSource>) {
    let source = Arc::new(source);
    let weak = Arc::downgrade(&source);
    (source, weak)
}

/// An IMDS source for the fake whose requests may wait for an answer far longer than [`HANG`]: only the
/// refresher giving up on them ends them within it.
fn patient_source(fake: &FakeIdentity) -> ImdsSource {
    ImdsSource::builder()
        .endpoint(fake.imds_authority())
        .http_options(http().timeout(PATIENT))
        .build()
        .expect("a loopback IMDS endpoint is a valid configuration")
}

/// Far beyond [`HANG`].
const PATIENT: Duration = Duration::from_secs(600);

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
    let (source, weak) = shared_source(imds_source(&fake));
    let handle = Refresher::spawn(source, OSSRDBMS_SCOPE, policy);
    let clone = handle.clone();
    // The status channel outlives the handles: its last value is the one the task left.
    let status = handle.watch();
    within("first token", handle.get()).await.unwrap();

    drop(handle);
    // A quiet window: a sleep never ends early, and a busy machine can only make it miss an early stop.
    sleep(Duration::from_millis(100)).await;
    assert_eq!(weak.strong_count(), 1, "a clone still holds the refresher");
    drop(clone);
    wait_dropped(&weak, HANG, "the refresher task").await;
    let last = status.borrow().clone();
    assert_eq!(last.state, TokenState::Stopped);
    // A live refresher renews this 3 s token (2–3 s on arrival: expiry has whole seconds) at half-life,
    // within 1.5 s of its last fetch, which came before the task ended. Two seconds on, every request the
    // fake has seen is one of the fetches the task started before it ended.
    sleep(Duration::from_secs(2)).await;
    assert!(
        fake.token_requests() as u64 <= last.fetches,
        "{} requests for {} fetches: requests after the last handle dropped",
        fake.token_requests(),
        last.fetches
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handles_ends_a_fetch_in_flight() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults([Fault::NoResponse]);
    // The request and the refresher's attempt would both wait 10 minutes: within HANG, only the task
    // abandoning the fetch lets go of the source.
    let (source, weak) = shared_source(patient_source(&fake));
    let policy = RefreshPolicy::default().fetch_timeout(PATIENT);
    let handle = Refresher::spawn(source, OSSRDBMS_SCOPE, policy);
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
    wait_dropped(&weak, HANG, "the refresher task").await;
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

/// The expiry timer is only watched between fetches: a renewal that hangs must not keep an expired token
/// in the cache. The token must be withdrawn while the renewal is still in flight (no failure counted
/// yet), not once the hanging request has failed.
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
        .fetch_timeout(PATIENT);
    let handle = Refresher::spawn(patient_source(&fake), OSSRDBMS_SCOPE, policy);
    let first = within("first token", handle.get()).await.unwrap();
    fake.push_faults([Fault::NoResponse]);
    let mut rx = handle.watch();
    let withdrawn = within(
        "the token to be withdrawn",
        rx.wait_for(|s| s.state != TokenState::Valid),
    )
    .await
    .expect("the refresher is running")
    .clone();
    assert_eq!(withdrawn.state, TokenState::Unavailable, "{withdrawn:?}");
    assert_eq!(
        (withdrawn.consecutive_failures, withdrawn.fetches),
        (0, withdrawn.refreshes + 1),
        "withdrawn while the renewal was in flight, before it failed: {withdrawn:?}"
    );
    let served = handle.current();
    assert!(
        served.is_none(),
        "current() still serves a token past its usable life: {served:?} (the first was {first:?})"
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
    // A quiet window: a loop would show in it, and a busy machine can only shorten the loop, not invent it.
    sleep(Duration::from_millis(500)).await;
    let n = fake.token_requests();
    assert!(n <= 2, "{n} token requests in 0.5 s");
}

/// A token rejected while its renewal is already in flight is replaced by that renewal; forcing another
/// fetch after it only doubles the load on the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_a_renewal_fetches_once() {
    let fake = FakeIdentity::start().await.unwrap();
    first_answer_lasts_three_seconds(&fake);
    let policy = three_second_policy().min_invalidate_interval(Duration::ZERO);
    // The renewal's answer is held until the rejection below has been reported, so the rejection comes
    // while the renewal is in flight.
    let source = Held::new(&fake, 1);
    let handle = Refresher::spawn(source.clone(), OSSRDBMS_SCOPE, policy);
    let first = within("first token", handle.get()).await.unwrap();
    wait_requests(&fake, 2).await;
    assert!(handle.invalidate(&first));
    source.release();
    let second = within("renewed", handle.get()).await.unwrap();
    assert!(!second.same_as(&first));
    // A quiet window for a redundant fetch: a busy machine can only make it miss one, never invent one.
    sleep(Duration::from_millis(400)).await;
    assert_eq!(
        fake.token_requests(),
        2,
        "the renewal in flight already replaces the rejected token"
    );
}
