//! Warm sessions: signed in ahead, each given to exactly one client with that client's own settings,
//! never one whose server has ended it, renewed within their lifetime, and cancellable like any other.
//! (Clients we did not write are served warm sessions through 20 rotations in `clients.rs`.)

mod common;

use std::time::Duration;

use common::*;
use entra_emulator::Emulator;
use entra_proxy::ProxyHandle;
use entra_testkit::{bounded, until};
use tokio_postgres::NoTls;

/// Waits until the proxy holds `n` warm sessions.
async fn warmed(proxy: &ProxyHandle, n: u64) {
    until(60, "warm sessions signed in", || proxy.stats().warm_idle >= n).await;
}

async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_given_a_warm_session_with_its_own_startup_parameters() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b.warm(2)).await;
    warmed(&proxy, 2).await;

    let mut config = tcp_config(&proxy);
    config.application_name("warm \"quoted\" app");
    let first = connect(&config).await.unwrap();
    assert_eq!(proxy.stats().warm_used, 1, "{:?}", proxy.stats());
    assert_eq!(
        one(&first, "SELECT current_setting('application_name')").await,
        "warm \"quoted\" app"
    );
    // tokio-postgres asks for client_encoding UTF8 at startup; the server reports what is in effect.
    assert_eq!(one(&first, "SHOW client_encoding").await, "UTF8");

    // Never reused: a setting one client changed is not seen by the next, which gets a session of its
    // own (its backend is another process).
    first
        .batch_execute("SET TimeZone = 'Asia/Kathmandu'")
        .await
        .unwrap();
    let first_pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(first);
    warmed(&proxy, 1).await;
    let second = connect(&tcp_config(&proxy)).await.unwrap();
    let second_pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(first_pid, second_pid);
    assert_ne!(one(&second, "SHOW TimeZone").await, "Asia/Kathmandu");
    assert_eq!(proxy.stats().warm_used, 2, "{:?}", proxy.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_session_whose_server_ended_it_is_never_handed_out() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b.warm(2)).await;
    warmed(&proxy, 2).await;
    // The two warm sessions are the only ones (a third, if the proxy replaced one meanwhile, is fine).
    entra_testkit::terminate_sessions(emulator.gate(), proxy.role(), 2, 60).await;

    // At once, before the proxy's own periodic check: the client still gets a working session.
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    assert_eq!(one(&client, "SELECT current_user::text").await, proxy.role());
    // Both terminated sessions were found closed and dropped, whoever found them first.
    until(60, "both terminated sessions dropped", || {
        proxy.stats().warm_discarded_closed >= 2
    })
    .await;
    let stats = proxy.stats();
    assert_eq!(stats.refused_upstream, 0, "{stats:?}");
    assert_eq!(stats.warm_discarded_parameters, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_on_a_warm_session_can_be_cancelled() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b.warm(1)).await;
    warmed(&proxy, 1).await;
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    assert_eq!(proxy.stats().warm_used, 1, "the client got the warm session");
    let cancel = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let _watcher = wait_until_sleeping(&proxy).await;
    cancel.cancel_query(NoTls).await.unwrap();
    let result = bounded(60, "pg_sleep(30)", sleeping).await.unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_options_gets_a_fresh_session() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b.warm(2)).await;
    warmed(&proxy, 2).await;
    let mut config = tcp_config(&proxy);
    config.options("-c search_path=entra_options_path");
    let client = connect(&config).await.unwrap();
    assert_eq!(one(&client, "SHOW search_path").await, "entra_options_path");
    let stats = proxy.stats();
    assert_eq!(stats.warm_used, 0, "{stats:?}");
    assert_eq!(
        stats.warm_idle, 2,
        "the warm sessions were left for other clients: {stats:?}"
    );
}

/// With every slot held (one by a client, one by a warm session), a client that cannot use a warm
/// session takes the warm session's slot rather than waiting for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_session_gives_its_slot_to_a_client_that_needs_one() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.max_size(2).warm(2).wait_timeout(Some(Duration::from_secs(60)))
    })
    .await;
    warmed(&proxy, 2).await;
    let holder = connect(&tcp_config(&proxy)).await.unwrap();
    assert_eq!(proxy.stats().warm_used, 1);
    let mut config = tcp_config(&proxy);
    config.options("-c search_path=entra_slot_path");
    let client = bounded(60, "a client needing the warm session's slot", connect(&config))
        .await
        .unwrap();
    assert_eq!(one(&client, "SHOW search_path").await, "entra_slot_path");
    let stats = proxy.stats();
    assert_eq!((stats.waiting, stats.refused_full), (0, 0), "{stats:?}");
    assert_eq!(stats.warm_retired, 1, "{stats:?}");
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_sessions_are_renewed_within_their_lifetime_and_closed_by_a_drain() {
    let emulator = Emulator::start().await.unwrap();
    let mut proxy = proxy(&emulator, short_tokens(), |b| {
        b.warm(1).warm_lifetime(Duration::from_secs(1))
    })
    .await;
    // Renewed again and again (the replacement is signed in first when the sign-in takes less than the
    // replace-ahead share of the lifetime; a busy machine may take longer, so that order is not
    // asserted here, nor that a session is warm at any given moment).
    until(60, "three renewals", || proxy.stats().warm_retired >= 3).await;
    let stats = proxy.stats();
    assert_eq!(stats.warm_discarded_closed, 0, "{stats:?}");
    assert!(stats.warm_opened >= 3, "{stats:?}");
    // A client is served, warm or fresh.
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    assert_eq!(one(&client, "SELECT current_user::text").await, proxy.role());
    drop(client);

    let drained = bounded(60, "drain", proxy.drain(Duration::from_secs(30))).await;
    assert_eq!(
        drained.closed, 0,
        "warm sessions are not client sessions: {drained:?}"
    );
    assert_eq!(proxy.stats().warm_idle, 0);
}

/// A client that arrives while the warmer signs in on the only slot gets that warm session as soon as it
/// is ready, and one that cannot use a warm session gets its slot: neither waits for a slot that a warm
/// session holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_waiting_for_the_only_slot_get_the_warm_session_or_its_slot() {
    let emulator = Emulator::builder()
        .sign_in_delay(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.max_size(1).warm(1).wait_timeout(Some(Duration::from_secs(120)))
    })
    .await;
    // Likely while the warm session signs in; either way the client is served.
    let client = bounded(60, "a client beside the warmer", connect(&tcp_config(&proxy)))
        .await
        .unwrap();
    assert_eq!(one(&client, "SELECT current_user::text").await, proxy.role());
    drop(client);
    warmed(&proxy, 1).await;
    let mut config = tcp_config(&proxy);
    config.options("-c search_path=entra_only_slot");
    let client = bounded(60, "a client needing the warm session's slot", connect(&config))
        .await
        .unwrap();
    assert_eq!(one(&client, "SHOW search_path").await, "entra_only_slot");
    let stats = proxy.stats();
    assert_eq!(stats.refused_full, 0, "{stats:?}");
}
