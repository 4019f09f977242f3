//! Shared set-up of the proxy tests: an emulator, a proxy in front of it configured only through the
//! emulator's environment variables (as `entra-pg proxy` is), and the clients we did not write.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use entra_emulator::Emulator;
use entra_proxy::{ProxyBuilder, ProxyHandle};
use entra_token::RefreshPolicy;

/// Tokens that live 5 s, renewed half-way, so 20 rotations take about 50 s.
pub fn short_tokens() -> RefreshPolicy {
    RefreshPolicy::short_lived().refresh_margin(Duration::from_millis(2500))
}

/// The configuration a service's `entra-pg proxy` would read from the emulator's environment.
pub fn config(emulator: &Emulator, policy: RefreshPolicy) -> entra_postgres::EntraConfig {
    entra_testkit::config(emulator).refresh_policy(policy)
}

/// A proxy on 127.0.0.1 (a free port) in front of `emulator`, configured further by `configure`.
pub async fn proxy(
    emulator: &Emulator,
    policy: RefreshPolicy,
    configure: impl FnOnce(ProxyBuilder) -> ProxyBuilder,
) -> ProxyHandle {
    let builder = ProxyBuilder::new().listen("127.0.0.1:0".parse().unwrap());
    configure(builder)
        .start(&config(emulator, policy))
        .await
        .expect("proxy starts")
}

/// libpq's variables that point a client at the proxy over loopback TCP (no TLS: it never leaves the
/// machine), with a password that is not a token, to show it is never used.
pub fn libpq_env(proxy: &ProxyHandle) -> Vec<(String, String)> {
    let addr = proxy.tcp_addresses()[0];
    vec![
        ("PGHOST".into(), addr.ip().to_string()),
        ("PGPORT".into(), addr.port().to_string()),
        ("PGUSER".into(), proxy.role().to_string()),
        ("PGDATABASE".into(), proxy.database().to_string()),
        ("PGSSLMODE".into(), "prefer".into()),
        ("PGPASSWORD".into(), "not-a-token".into()),
        ("PGCONNECT_TIMEOUT".into(), "10".into()),
    ]
}

/// A tokio-postgres configuration for the proxy over loopback TCP.
pub fn tcp_config(proxy: &ProxyHandle) -> tokio_postgres::Config {
    let addr = proxy.tcp_addresses()[0];
    let mut config = tokio_postgres::Config::new();
    config
        .host(addr.ip().to_string())
        .port(addr.port())
        .user(proxy.role())
        .dbname(proxy.database())
        .connect_timeout(Duration::from_secs(10));
    config
}

pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.code().code())
}

/// Waits until `SELECT pg_sleep(30)` runs on the server, watching through a session of its own (returned,
/// so that it stays open).
pub async fn wait_until_sleeping(proxy: &entra_proxy::ProxyHandle) -> tokio_postgres::Client {
    let watcher = connect(&tcp_config(proxy)).await.unwrap();
    let running = Instant::now();
    loop {
        let row = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == 1 {
            return watcher;
        }
        assert!(
            running.elapsed() < Duration::from_secs(60),
            "pg_sleep never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
