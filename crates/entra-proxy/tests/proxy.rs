//! The proxy's promises, one per test: cancel requests reach the server, a client's password never goes
//! upstream, a client reaches only the configured role and database, the bind rule, and an identity
//! outage handled exactly as the pool handles it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use entra_emulator::{Emulator, Fault, TokenFingerprint};
use entra_proxy::{LocalAuth, ProxyBuilder, ProxyError};
use tokio_postgres::NoTls;

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.code().code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pg_sleep_returns_within_five_seconds() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    let cancel = client.cancel_token();
    let started = Instant::now();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("pg_sleep(30) still running 5 s after the cancel")
        .unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The proxy counts the cancel once the server has taken it, which may be after the client saw 57014.
    let counted = Instant::now();
    while proxy.stats().cancels == 0 && counted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.stats().cancels, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_password_is_ignored_and_the_token_goes_upstream() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let mut config = tcp_config(&proxy);
    config.password("an-old-token-pasted-by-mistake");
    let client = connect(&config).await.unwrap();
    let row = client.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), proxy.role());
    let token = proxy.tokens().unwrap().current().unwrap();
    let signed_in_with = &emulator.gate().sessions().last().unwrap().token.clone();
    assert_eq!(signed_in_with, &TokenFingerprint::of(token.secret()));
    assert_ne!(
        signed_in_with,
        &TokenFingerprint::of("an-old-token-pasted-by-mistake")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_local_secret_only_its_holders_get_in_and_it_never_goes_upstream() {
    let emulator = Emulator::start().await.unwrap();
    let secret = LocalAuth::generate_secret();
    let text = secrecy::ExposeSecret::expose_secret(&secret).to_string();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.local_auth(LocalAuth::Secret(secret))
    })
    .await;

    let mut wrong = tcp_config(&proxy);
    wrong.password("guess");
    let err = connect(&wrong).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("28P01"), "{err}");
    assert!(!entra_postgres::report(&err).contains(&text));

    let mut right = tcp_config(&proxy);
    right.password(text.as_str());
    let client = connect(&right).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    let session = emulator.gate().sessions().last().unwrap().clone();
    assert_ne!(
        session.token,
        TokenFingerprint::of(&text),
        "the secret is not the upstream password"
    );
    assert_eq!(proxy.stats().refused_local_auth, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_role_or_database_is_refused_with_what_to_connect_with() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;

    let mut config = tcp_config(&proxy);
    config.user("postgres");
    let err = connect(&config).await.unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert_eq!(sqlstate(&err), Some("28000"));
    assert!(message.contains(&format!("user={}", proxy.role())), "{message}");

    let mut config = tcp_config(&proxy);
    config.dbname("postgres");
    let err = connect(&config).await.unwrap_err();
    let message = err.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains(&format!("dbname={}", proxy.database())),
        "{message}"
    );

    let stats = proxy.stats();
    assert_eq!(
        (stats.refused_role, stats.refused_database, stats.relayed),
        (1, 1, 0)
    );
    assert!(emulator.gate().sessions().is_empty(), "nothing went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_bind_is_refused_unless_allowed_and_then_needs_tls_and_the_secret() {
    let emulator = Emulator::start().await.unwrap();
    let refused = ProxyBuilder::new(connector(&emulator, short_tokens()).await)
        .listen("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(refused, ProxyError::NonLoopback { .. }), "{refused}");
    let no_tls = ProxyBuilder::new(connector(&emulator, short_tokens()).await)
        .listen("0.0.0.0:0".parse().unwrap())
        .allow_non_loopback(true)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(no_tls, ProxyError::RemoteNeedsTls { .. }), "{no_tls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_clients_must_use_tls() {
    let emulator = Emulator::start().await.unwrap();
    let ca = entra_emulator::EmulatorCa::generate().unwrap();
    let cert = ca.issue_server_cert().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    let tls = entra_proxy::ClientTls::from_pem_files(&cert_path, &key_path).unwrap();
    let secret = LocalAuth::generate_secret();
    let text = secrecy::ExposeSecret::expose_secret(&secret).to_string();
    // Bound on loopback here, but configured as for other machines: the same rules apply.
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.allow_non_loopback(true)
            .client_tls(tls)
            .local_auth(LocalAuth::Secret(secret))
    })
    .await;
    let mut config = tcp_config(&proxy);
    config
        .password(text.as_str())
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = connect(&config).await.unwrap_err();
    assert!(
        err.to_string().contains("requires TLS") || entra_postgres::report(&err).contains("requires TLS"),
        "{err}"
    );

    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(ca.client_config().unwrap());
    config
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .host("localhost");
    let (client, connection) = config.connect(tls).await.unwrap();
    tokio::spawn(connection);
    let row = client.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), proxy.role());
}

/// While the identity endpoint fails and the cached token is valid, new sessions sign in with it; once
/// it expired, they fail with the pool's typed error, named to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outage_is_outlived_while_the_token_is_valid() {
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(6))
        .start()
        .await
        .unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let config = tcp_config(&proxy);
    let held = connect(&config).await.unwrap();
    emulator.identity().set_persistent_fault(Some(Fault::status(503)));
    let outage = Instant::now();
    // The cached token still signs new sessions in.
    for _ in 0..3 {
        let client = connect(&config)
            .await
            .expect("signed in with the cached token during the outage");
        client.query_one("SELECT 1", &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(outage.elapsed() < Duration::from_secs(4));
    tokio::time::sleep(Duration::from_secs(7)).await; // the token has expired
    held.query_one("SELECT 2", &[])
        .await
        .expect("an open session lives on, as on Azure");
    let err = connect(&config).await.unwrap_err();
    let message = err
        .as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&err), Some("08001"), "{err}");
    assert!(message.contains("could not get an Entra token"), "{message}");
    assert!(message.contains("503"), "the cause is named: {message}");
    // The endpoint recovers: so do new sessions.
    emulator.identity().set_persistent_fault(None);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match connect(&config).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no recovery: {e}"),
        }
    }
}
