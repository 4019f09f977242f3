//! PgBouncer beside the proxy, both ways round (docs/pgbouncer.md, "With entra-pg proxy"):
//! - in front of it: PgBouncer pools clients' connections in transaction mode, and the proxy signs each of
//!   PgBouncer's server connections in with the token current at that moment;
//! - behind it: the proxy signs in to a PgBouncer upstream, as to Azure's built-in one on port 6432.
//!
//! Clients are pgbench with a new connection per transaction (`-C`), while 5 s tokens rotate.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use entra_emulator::{Emulator, PoolMode, TestPgBouncer};
use entra_proxy::{LocalAuth, ProxyHandle};
use entra_testkit::{bounded, pg_client, run, text};

/// Tokens the gate saw in sessions opened after the first `since`.
fn tokens_since(emulator: &Emulator, since: usize) -> usize {
    emulator.gate().sessions()[since..]
        .iter()
        .map(|s| s.token.clone())
        .collect::<HashSet<_>>()
        .len()
}

/// pgbench's tables, made through the proxy straight (COPY included) as the principal.
async fn init_tables(proxy: &ProxyHandle) -> bool {
    let Some(mut init) = pg_client("pgbench", &libpq_env(proxy)) else {
        return false;
    };
    init.args(["-i", "-q", "-s", "1"]);
    let out = run(init, 120).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "pgbench -i:\n{stdout}\n{stderr}");
    true
}

/// Rounds of `pgbench -n -S -C -c 4 -j 2 -T 2` against `env` until sessions opened at the gate after
/// `since` carry `tokens` distinct tokens (rotations followed, however long a busy machine takes); every
/// round must succeed with no failed transaction. Returns the transactions done.
async fn pgbench_until_rotations(
    emulator: &Emulator,
    env: &[(String, String)],
    since: usize,
    tokens: usize,
) -> u64 {
    bounded(240, "pgbench rounds across token rotations", async {
        let mut transactions = 0u64;
        while tokens_since(emulator, since) < tokens {
            let mut pgbench = pg_client("pgbench", env).expect("pgbench ran for the set-up");
            pgbench.args(["-n", "-S", "-C", "-c", "4", "-j", "2", "-T", "2"]);
            let out = run(pgbench, 60).await;
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "pgbench -S -C:\n{stdout}\n{stderr}");
            assert!(
                !stdout.contains("number of failed transactions")
                    || stdout.contains("number of failed transactions: 0 "),
                "pgbench saw failures:\n{stdout}"
            );
            transactions += stdout
                .lines()
                .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
                .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no transaction count in pgbench's output:\n{stdout}"));
        }
        transactions
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_in_transaction_mode_pools_clients_in_front_of_the_proxy_through_rotations() {
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(5))
        .start()
        .await
        .expect("emulator");
    // PgBouncer refuses to run as root: it runs as an unprivileged user, admitted beside our own.
    let bouncer_uid = match TestPgBouncer::process_uid() {
        Ok(uid) => uid,
        Err(e) => panic!("no user to run PgBouncer as: {e}"),
    };
    let LocalAuth::Peer { mut uids } = LocalAuth::own_user() else {
        panic!("own_user is peer authentication")
    };
    uids.push(bouncer_uid);
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.local_auth(LocalAuth::Peer { uids })
    })
    .await;
    if !init_tables(&proxy).await {
        return;
    }
    // Server connections live 1 s, so PgBouncer keeps signing in anew through the proxy as tokens rotate.
    let bouncer = match TestPgBouncer::builder(PoolMode::Transaction)
        .default_pool_size(4)
        .server_lifetime(1)
        .start_in_front_of(proxy.tcp_addresses()[0], proxy.role())
        .await
    {
        Ok(bouncer) => bouncer,
        Err(entra_emulator::EmulatorError::PgBouncerNotInstalled { .. }) => {
            entra_emulator::clients::skip("pgbouncer is not installed (Debian: pgbouncer)");
            return;
        }
        Err(e) => panic!("PgBouncer in front of the proxy: {e}"),
    };
    let env = vec![
        ("PGHOST".to_string(), "127.0.0.1".to_string()),
        ("PGPORT".to_string(), bouncer.port().to_string()),
        ("PGUSER".to_string(), "any-name".to_string()),
        ("PGDATABASE".to_string(), proxy.database().to_string()),
        ("PGSSLMODE".to_string(), "disable".to_string()),
        ("PGCONNECT_TIMEOUT".to_string(), "10".to_string()),
    ];
    let since = emulator.gate().sessions().len();
    let transactions = pgbench_until_rotations(&emulator, &env, since, 4).await;

    let sessions = emulator.gate().sessions().len() - since;
    eprintln!("{transactions} client connections through PgBouncer, {sessions} sign-ins upstream");
    assert!(
        sessions < transactions as usize,
        "PgBouncer pooled: {sessions} sign-ins upstream for {transactions} client connections"
    );
    assert!(
        emulator.gate().rejections().is_empty(),
        "no stale token reached the gate"
    );
    let stats = proxy.stats();
    assert_eq!(
        stats.refused, 0,
        "the proxy admitted PgBouncer's user every time: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_signs_in_to_a_pgbouncer_upstream_through_rotations() {
    let emulator = match Emulator::builder()
        .token_lifetime(Duration::from_secs(5))
        .pgbouncer(PoolMode::Transaction)
        .start()
        .await
    {
        Ok(emulator) => emulator,
        Err(entra_emulator::EmulatorError::PgBouncerNotInstalled { .. }) => {
            entra_emulator::clients::skip("pgbouncer is not installed (Debian: pgbouncer)");
            return;
        }
        Err(e) => panic!("emulator with PgBouncer: {e}"),
    };
    assert!(emulator.pgbouncer().is_some(), "the gate relays to PgBouncer");
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    if !init_tables(&proxy).await {
        return;
    }
    let since = emulator.gate().sessions().len();
    let transactions = pgbench_until_rotations(&emulator, &libpq_env(&proxy), since, 4).await;
    assert!(transactions > 0);
    let sessions = emulator.gate().sessions().len() - since;
    eprintln!("{transactions} client connections, {sessions} sign-ins upstream through PgBouncer");
    assert!(
        sessions as u64 >= transactions,
        "every client connection signed in upstream ({sessions} sign-ins, {transactions} transactions with -C)"
    );
    assert!(
        emulator.gate().rejections().is_empty(),
        "no stale token reached the gate"
    );
}
