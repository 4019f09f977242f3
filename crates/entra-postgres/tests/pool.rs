//! The pool against the Emulator (a real PostgreSQL behind a gate that checks tokens like Azure): recovery
//! from rejected tokens, identity-endpoint outages, server restarts, rotation limits and TLS.

use std::time::Duration;

use entra_emulator::{Claims, Emulator, Fault, OSSRDBMS_RESOURCE};
use entra_postgres::{ConnectError, EntraConfig, PoolBuilder, SslMode};
use entra_testkit::{bounded, pool_builder, until};
use entra_token::{TokenError, TokenState};

async fn select_one(pool: &entra_postgres::EntraPool) -> Result<i32, String> {
    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
    let row = client
        .query_one("SELECT 1::int4", &[])
        .await
        .map_err(|e| entra_postgres::report(&e))?;
    Ok(row.get(0))
}

async fn backend_pid(pool: &entra_postgres::EntraPool) -> i32 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signs_in_as_the_principal_over_verified_tls() {
    let emulator = Emulator::start().await.unwrap();
    let pool = pool_builder(&emulator).build().await.unwrap();
    let client = bounded(60, "get", pool.get()).await.unwrap();
    let row = client
        .query_one("SELECT current_user, current_database()", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), emulator.user());
    assert_eq!(row.get::<_, String>(1), emulator.dbname());
    let status = pool.status();
    assert_eq!(status.pool.size, 1);
    assert_eq!(status.token.unwrap().state, TokenState::Valid);
    pool.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_once_and_the_pool_recovers() {
    let emulator = Emulator::start().await.unwrap();
    // The endpoint first hands out a token the server refuses (wrong audience), then good ones.
    let mut claims = Claims::new(emulator.principal().object_id.clone(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let bad = emulator.identity().issuer().sign(&claims);
    emulator
        .identity()
        .push_faults([Fault::token(&bad, Duration::from_secs(3600), OSSRDBMS_RESOURCE)]);
    let pool = pool_builder(&emulator).build().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // older than min_invalidate_interval
    assert_eq!(bounded(60, "select", select_one(&pool)).await, Ok(1));
    assert_eq!(emulator.identity().token_requests(), 2, "exactly one refetch");
    let rejected = emulator.gate().rejections();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_refused_for_good_gives_a_clear_error_and_no_request_loop() {
    let emulator = Emulator::start().await.unwrap();
    let pool = pool_builder(&emulator).build().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    emulator.gate().revoke_principal(emulator.user());
    let err = bounded(60, "get", pool.get()).await.unwrap_err();
    match ConnectError::find(&err) {
        Some(ConnectError::TokenRejected { role, code, hint, .. }) => {
            assert_eq!(role, emulator.user());
            assert_eq!(code, "28P01");
            assert!(hint.contains("pgaadauth_create_principal"), "{hint}");
        }
        other => panic!(
            "expected TokenRejected, got {other:?}: {}",
            entra_postgres::report(&err)
        ),
    }
    let before = emulator.identity().token_requests();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert!(bounded(60, "get", pool.get()).await.is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refetches are limited by min_invalidate_interval (200 ms here): over however long the attempts
    // took (measured, so a slow machine allows more), at most one per interval, plus the one in flight.
    let interval = Duration::from_millis(200);
    let allowed = (started.elapsed().as_millis() / interval.as_millis()) as usize + 1;
    let refetches = emulator.identity().token_requests() - before;
    assert!(
        refetches <= allowed,
        "{refetches} token requests for 20 refused attempts over {:?}: a loop",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_outage_longer_than_a_token_breaks_only_new_connections() {
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let pool = pool_builder(&emulator)
        .max_size(4)
        .max_lifetime(None)
        .build()
        .await
        .unwrap();
    let held = bounded(60, "get", pool.get()).await.unwrap();
    emulator.identity().set_persistent_fault(Some(Fault::status(503)));
    // The refresher withdraws the last token `expiry_margin` (500 ms in `short_lived()`) before it
    // expires: wait for that event, however late a busy machine runs the refresher's timer, then for the
    // margin (a sleep never ends early), and the token has expired.
    until(60, "the token withdrawn", || {
        !pool.status().token.expect("token mode").is_usable()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // the open connection keeps working, as on Azure
    let row = held.query_one("SELECT 2::int4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // a new connection fails with the typed token error and its cause
    let err = bounded(60, "get", pool.get()).await.unwrap_err();
    match ConnectError::find(&err) {
        Some(ConnectError::Token(TokenError::Unavailable {
            last_error: Some(cause),
            ..
        })) => {
            assert!(
                matches!(
                    **cause,
                    TokenError::Transient {
                        status: Some(503),
                        ..
                    }
                ),
                "{cause}"
            );
        }
        other => panic!(
            "expected a token error, got {other:?}: {}",
            entra_postgres::report(&err)
        ),
    }
    // service resumes by itself once the endpoint is back (how soon, the backoff cap, is checked on the
    // paused clock in entra-token's refresher tests)
    emulator.identity().set_persistent_fault(None);
    let fresh = bounded(60, "recovery", async {
        loop {
            match pool.get().await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    fresh.query_one("SELECT 1", &[]).await.unwrap();
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_an_upstream_restart_and_terminated_backends() {
    let emulator = Emulator::start().await.unwrap();
    let pool = pool_builder(&emulator).max_size(4).build().await.unwrap();
    // fill the pool, and hold the connections until each has seen its backend go
    let clients: Vec<_> = futures_join(&pool, 4).await;
    emulator.gate().terminate_sessions(emulator.user()).await.unwrap();
    until_closed(&clients).await;
    drop(clients);
    for _ in 0..8 {
        assert_eq!(
            bounded(60, "select", select_one(&pool)).await,
            Ok(1),
            "no dead connection after terminate"
        );
    }
    let clients: Vec<_> = futures_join(&pool, 4).await;
    emulator.gate().restart_upstream().await.unwrap();
    until_closed(&clients).await;
    drop(clients);
    bounded(60, "recovery after a restart", async {
        while bounded(60, "select", select_one(&pool)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for _ in 0..8 {
        assert_eq!(
            bounded(60, "select", select_one(&pool)).await,
            Ok(1),
            "no dead connection after restart"
        );
    }
}

/// Waits until every one of `clients` has seen its server go (the event the pool's recycling checks),
/// failing after 30 s.
async fn until_closed(clients: &[deadpool_postgres::Object]) {
    bounded(60, "connections noticing their backends went", async {
        while !clients.iter().all(|c| c.is_closed()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

async fn futures_join(pool: &entra_postgres::EntraPool, n: usize) -> Vec<deadpool_postgres::Object> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(bounded(60, "get", pool.get()).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_rotates_connections_and_idle_timeout_closes_them() {
    let emulator = Emulator::start().await.unwrap();
    let pool = pool_builder(&emulator)
        .max_size(2)
        .max_lifetime(Some(Duration::from_secs(1)))
        .build()
        .await
        .unwrap();
    let born = std::time::Instant::now();
    let first = backend_pid(&pool).await;
    let again = backend_pid(&pool).await;
    // Measured, not assumed: on a stalled machine a second may pass between the two.
    if born.elapsed() < Duration::from_millis(900) {
        assert_eq!(again, first, "reused while young");
    }
    // A lower bound: the connection is older than its lifetime (1 s, ± 10 % jitter) after this.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_ne!(backend_pid(&pool).await, first, "replaced after max_lifetime");

    let idle = pool_builder(&emulator)
        .max_size(4)
        .max_lifetime(None)
        .idle_timeout(Some(Duration::from_millis(500)))
        .reaper_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let held = futures_join(&idle, 3).await;
    assert_eq!(idle.status().pool.size, 3);
    drop(held);
    bounded(60, "the reaper closing idle connections", async {
        while idle.status().pool.size > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_a_wrong_host_name_and_an_untrusted_ca() {
    let emulator = Emulator::start().await.unwrap();
    // right address, wrong name: verify-full checks the name
    let err = pool_builder(&emulator)
        .with_config(|c| {
            c.host("db.wrong-name.example")
                .hostaddr("127.0.0.1".parse().unwrap())
        })
        .build()
        .await
        .unwrap()
        .get()
        .await
        .unwrap_err();
    let text = entra_postgres::report(&err);
    assert!(
        text.contains("NotValidForName") || text.contains("not valid for name"),
        "{text}"
    );
    // verify-ca accepts the same certificate without the name check
    let pool = pool_builder(&emulator)
        .with_config(|c| {
            c.host("db.wrong-name.example")
                .hostaddr("127.0.0.1".parse().unwrap())
                .ssl_mode(SslMode::VerifyCa)
        })
        .build()
        .await
        .unwrap();
    assert_eq!(bounded(60, "select", select_one(&pool)).await, Ok(1));

    // a CA that did not sign the server's certificate
    let other = entra_emulator::EmulatorCa::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other-ca.pem");
    std::fs::write(&path, other.pem()).unwrap();
    let err = pool_builder(&emulator)
        .with_config(|c| c.ssl_root_cert(&path))
        .build()
        .await
        .unwrap()
        .get()
        .await
        .unwrap_err();
    let text = entra_postgres::report(&err);
    // the other CA has the same subject name, so rustls finds it and the signature check fails
    assert!(text.contains("invalid peer certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_a_token_over_4_kb() {
    let emulator = Emulator::builder().token_padding(5000).start().await.unwrap();
    let pool = pool_builder(&emulator).build().await.unwrap();
    assert!(pool.tokens().unwrap().current().unwrap().secret().len() > 5000);
    assert_eq!(bounded(60, "select", select_one(&pool)).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_password_mode_is_plain_deadpool() {
    let emulator = Emulator::start().await.unwrap();
    let pg = emulator.postgres();
    pg.create_role("static_user", Some("s3cret")).await.unwrap();
    let pool = PoolBuilder::new(
        EntraConfig::from_env()
            .env(entra_token::Env::from_pairs([(
                "PGSSLROOTCERT",
                pg.ca_path().display().to_string(),
            )]))
            .host(pg.host())
            .port(pg.port())
            .user("static_user")
            .static_password("s3cret"),
    )
    .build()
    .await
    .unwrap();
    assert!(pool.tokens().is_none());
    assert_eq!(bounded(60, "select", select_one(&pool)).await, Ok(1));
}
