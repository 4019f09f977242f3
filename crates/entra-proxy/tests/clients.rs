//! Clients we did not write, through the proxy, with no Entra code of their own: `psql`, `pgbench`,
//! Python's psycopg and pg8000, while 5 s tokens rotate at least 20 times; most of them are served warm
//! sessions (the proxy's default), each with the client's own startup parameters in effect.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use entra_emulator::Emulator;
use entra_testkit::{pg_client, run, text};

/// Long enough for 20 rotations of 5 s tokens renewed half-way.
const RUN: Duration = Duration::from_secs(56);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_pgbench_and_psycopg_sign_in_through_twenty_token_rotations() {
    let emulator = Emulator::builder()
        .token_lifetime(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let mut env = libpq_env(&proxy);
    // Startup parameters libpq sends from these, which a warm session must take on.
    let settings = [
        ("PGAPPNAME", "entra-warm-libpq"),
        ("PGDATESTYLE", "SQL, DMY"),
        ("PGTZ", "Pacific/Chatham"),
    ];
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));

    // pgbench's tables, made through the proxy (COPY included) as the principal, who owns the database.
    let Some(mut init) = pg_client("pgbench", &env) else {
        return;
    };
    init.args(["-i", "-q", "-s", "1"]);
    let out = run(init, 120).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "pgbench -i:\n{stdout}\n{stderr}");

    let fetches_before = emulator.identity().token_requests();
    let sessions_before = emulator.gate().sessions().len();
    let started = Instant::now();

    // pgbench -S with a new connection per transaction (-C): every transaction signs in anew.
    let mut pgbench = pg_client("pgbench", &env).unwrap();
    pgbench.args([
        "-n",
        "-S",
        "-C",
        "-c",
        "2",
        "-j",
        "1",
        "-T",
        &RUN.as_secs().to_string(),
    ]);
    let pgbench = tokio::spawn(run(pgbench, RUN.as_secs() + 60));

    // psycopg, and pg8000 (which sends search_path as a startup parameter of its own), when the pinned
    // Python environment is there.
    let psycopg = python_loop("psycopg", "psycopg_loop.py", &env);
    let pg8000 = python_loop("pg8000", "pg8000_loop.py", &env);

    // psql, one process (one connection) after another, beside the others for RUN and then until 20
    // rotations went by and sessions signed in with 20 tokens: events, however long a busy machine takes.
    let rotations_seen = || {
        let tokens: HashSet<_> = emulator.gate().sessions()[sessions_before..]
            .iter()
            .map(|s| s.token.clone())
            .collect();
        emulator.identity().token_requests() - fetches_before >= 20 && tokens.len() >= 20
    };
    let (mut psql_runs, mut psql_failures) = (0, Vec::new());
    while started.elapsed() < RUN || !rotations_seen() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "20 rotations not seen in 300 s"
        );
        let mut psql = pg_client("psql", &env).unwrap();
        psql.args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_user, current_setting('application_name'), current_setting('DateStyle'), \
             current_setting('TimeZone')",
        ]);
        let out = run(psql, 30).await;
        let (stdout, stderr) = text(&out);
        let expected = format!("{}|entra-warm-libpq|SQL, DMY|Pacific/Chatham", proxy.role());
        if !out.status.success() || stdout.trim() != expected {
            psql_failures.push(format!("{stdout}{stderr}"));
        }
        psql_runs += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let out = pgbench.await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "pgbench -S -C:\n{stdout}\n{stderr}");
    let transactions: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench's output:\n{stdout}"));
    assert!(
        transactions > 100,
        "pgbench did only {transactions} transactions:\n{stdout}"
    );
    assert!(
        !stdout.contains("number of failed transactions")
            || stdout.contains("number of failed transactions: 0 "),
        "pgbench saw failures:\n{stdout}"
    );
    if let Some(psycopg) = psycopg {
        let out = psycopg.await.unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "psycopg:\n{stdout}\n{stderr}");
        assert!(stdout.contains(" errors=0"), "psycopg:\n{stdout}\n{stderr}");
        let connections: u64 = stdout
            .trim()
            .strip_prefix("connections=")
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        assert!(
            connections > 20,
            "psycopg connected only {connections} times:\n{stdout}"
        );
    }
    if let Some(pg8000) = pg8000 {
        let out = pg8000.await.unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "pg8000:\n{stdout}\n{stderr}");
        assert!(stdout.contains(" errors=0"), "pg8000:\n{stdout}\n{stderr}");
    }
    assert!(
        psql_failures.is_empty(),
        "psql failed {} of {psql_runs} times: {psql_failures:?}",
        psql_failures.len()
    );

    let fetches = emulator.identity().token_requests() - fetches_before;
    let sessions = emulator.gate().sessions();
    let tokens_used: HashSet<_> = sessions[sessions_before..]
        .iter()
        .map(|s| s.token.clone())
        .collect();
    let stats = proxy.stats();
    eprintln!(
        "{} s: pgbench {transactions} connections, psql {psql_runs}; {fetches} token fetches, {} distinct tokens \
         signed in with, proxy {stats:?}",
        started.elapsed().as_secs(),
        tokens_used.len()
    );
    assert!(fetches >= 20, "only {fetches} token rotations");
    assert!(
        tokens_used.len() >= 20,
        "sessions used only {} tokens",
        tokens_used.len()
    );
    assert_eq!(stats.refused, 0, "{stats:?}");
    assert_eq!(stats.refused_upstream, 0, "{stats:?}");
    // Warm sessions served clients, and none had to be given up for a client's parameters.
    assert!(stats.warm_used > 20, "{stats:?}");
    assert_eq!(stats.warm_discarded_parameters, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_signs_in_over_the_unix_socket() {
    let emulator = Emulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_dir = dir.path().join("sockets");
    let proxy = proxy(&emulator, short_tokens(), |b| b.unix_socket_dir(&socket_dir)).await;
    let port = proxy.tcp_addresses()[0].port().to_string();
    let mut env = libpq_env(&proxy);
    env.retain(|(k, _)| k != "PGHOST" && k != "PGPORT");
    env.push(("PGHOST".into(), socket_dir.display().to_string()));
    env.push(("PGPORT".into(), port));
    let Some(mut psql) = pg_client("psql", &env) else {
        return;
    };
    psql.args(["-X", "-A", "-t", "-c", "SELECT current_user"]);
    let out = run(psql, 30).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), proxy.role());
    let path = proxy.socket_path().unwrap().to_path_buf();
    proxy.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

/// Loopback TCP clients are identified by the kernel: a process of another user is refused as soon as
/// it connects, told only that peer authentication failed (not which user ids are allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_of_another_user_is_refused() {
    if nix::unistd::geteuid().as_raw() != 0 {
        entra_emulator::clients::skip("switching to another user needs root");
        return;
    }
    let Ok(Some(other)) = nix::unistd::User::from_name("postgres") else {
        entra_emulator::clients::skip("no `postgres` user to run the client as");
        return;
    };
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let Some(psql) = entra_emulator::clients::pg_program("psql") else {
        entra_emulator::clients::skip("psql is not installed");
        return;
    };
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        &format!("--reuid={}", other.uid),
        &format!("--regid={}", other.gid),
        "--clear-groups",
        "--",
    ])
    .arg(psql)
    .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
    .env_clear()
    .env("PATH", "/usr/bin:/bin");
    for (k, v) in libpq_env(&proxy) {
        cmd.env(k, v);
    }
    // Refused before the proxy reads anything: with `sslmode=prefer`, libpq may be answered before its TLS
    // request arrives, and it does not show an error given in answer to that request.
    cmd.env("PGSSLMODE", "disable");
    let out = run(cmd, 30).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    // The refusal is exactly that: no user id (allowed or seen) and no role after it. (A bare uid is
    // no needle: it may be part of the port number psql prints.)
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_end().ends_with("FATAL:  peer authentication failed")),
        "{stderr}"
    );
    assert!(!stderr.contains("user id"), "{stderr}");
    assert!(!stderr.contains(proxy.role()), "{stderr}");
    assert_eq!(proxy.stats().refused_local_auth, 1);
    assert_eq!(proxy.stats().relayed, 0);
}

/// issue 19: a client's own DateStyle, refused by the server after sign-in, is relayed as the server's
/// refusal. It is not taken for a refused token (the words "access token" in it used to be), so the
/// proxy keeps its token and the next client signs in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_datestyle_refused_by_the_server_is_its_own_error_and_costs_no_token() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    // Older than min_invalidate_interval, so a refusal read as the token's would make the proxy refetch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut env = libpq_env(&proxy);
    env.push(("PGDATESTYLE".into(), "access token".into()));
    let Some(mut psql) = pg_client("psql", &env) else {
        return;
    };
    psql.args(["-X", "-c", "SELECT 1"]);
    let out = run(psql, 60).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("DateStyle") && !stderr.contains("Entra token"),
        "the server's own refusal: {stderr}"
    );
    assert_eq!(emulator.identity().token_requests(), 1, "no refetch");
    let mut psql = pg_client("psql", &libpq_env(&proxy)).unwrap();
    psql.args(["-X", "-A", "-t", "-c", "SELECT current_user"]);
    let out = run(psql, 60).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), proxy.role(), "{stderr}");
    assert_eq!(emulator.identity().token_requests(), 1);
}

/// Runs `tests/python/<script>` for [`RUN`] with `env` (and nothing else of ours) where a Python with
/// `module` is found; otherwise says it skips that part.
fn python_loop(
    module: &str,
    script: &str,
    env: &[(String, String)],
) -> Option<tokio::task::JoinHandle<std::process::Output>> {
    let Some(python) = entra_emulator::clients::python_with(&[module]) else {
        entra_emulator::clients::skip(&format!(
            "({module} part) no Python with {module} (run `bash .ci/setup`, or set ENTRA_PYTHON)"
        ));
        return None;
    };
    let mut cmd = std::process::Command::new(python);
    cmd.arg(format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR")))
        .arg(RUN.as_secs().to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Some(tokio::spawn(run(cmd, RUN.as_secs() + 60)))
}
