//! Every command that connects goes through the library's connection plan and its retrying fetch: the
//! same refusals, the same TLS rules and Azure's retry guidance, checked on the binary as a user runs it.

mod common;

use std::time::Duration;

use common::*;
use entra_emulator::{Emulator, FakeIdentity, Fault, RateLimit, Trap};

fn assert_untouched(trap: &Trap, what: &str) {
    assert_eq!(trap.connections(), 0, "{what}: the trap was connected to");
    assert_eq!(trap.bytes(), 0, "{what}: the trap received bytes");
}

/// A remote host name pinned to the trap's loopback address, with TLS off.
fn cleartext_env(fake: &FakeIdentity, trap: &Trap) -> Vec<(String, String)> {
    vec![
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST".into(), fake.imds_authority()),
        (
            "AZURE_POSTGRESQL_CONNECTIONSTRING".into(),
            format!(
                "host=db.example.com hostaddr=127.0.0.1 port={} sslmode=disable user=app dbname=postgres",
                trap.port()
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_connecting_command_refuses_cleartext_to_a_remote_name_before_sending_a_byte() {
    let fake = FakeIdentity::start().await.unwrap();
    let trap = Trap::start().unwrap();
    let env = cleartext_env(&fake, &trap);
    for args in [
        vec!["doctor"],
        vec!["doctor", "--json"],
        vec!["psql", "--", "-c", "SELECT 1"],
        vec!["grant", "app"],
        vec!["proxy", "--listen", "127.0.0.1:0"],
    ] {
        let out = run(entra_pg(&args, &env), 60);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let both = format!("{stdout}{stderr}");
        assert!(
            both.contains("without TLS") && both.contains("db.example.com"),
            "{args:?}: {both}"
        );
    }
    // Give a stray connection time to land before looking.
    std::thread::sleep(Duration::from_millis(300));
    assert_untouched(&trap, "doctor, psql, grant and proxy");
    assert_eq!(
        fake.token_requests(),
        0,
        "the rules are checked before any token is fetched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_require_verifies_with_the_built_in_roots_and_hands_no_token_to_an_unknown_server() {
    let emu = Emulator::start().await.unwrap();
    // The emulator's certificate is signed by its own CA, which the built-in roots do not hold.
    let env = require_env(&emu);
    let out = run(entra_pg(&["doctor"], &env), 90);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("verifies as verify-full"), "{stdout}");
    assert!(stdout.contains("FAIL tls"), "{stdout}");
    assert!(stdout.contains("not signed by a trusted root"), "{stdout}");
    assert_eq!(emu.gate().stats().accepted, 0, "no session was signed in");
    assert!(emu.gate().rejections().is_empty(), "no password reached the gate");

    // With a root file, require checks the chain (libpq's verify-ca), and the sign-in works.
    let with_ca = with_var(env, "PGSSLROOTCERT", &emu.ca_path().display().to_string());
    let out = run(entra_pg(&["doctor"], &with_ca), 90);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("verifies as verify-ca"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_warns_when_verification_is_skipped_by_name() {
    let emu = Emulator::start().await.unwrap();
    let env = require_env(&emu);
    let out = run(entra_pg(&["doctor", "--danger-accept-unverified-tls"], &env), 90);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let warning = stdout
        .lines()
        .find(|l| l.starts_with("WARN") && l.contains("tls mode"))
        .unwrap_or_else(|| panic!("no tls-mode warning:\n{stdout}"));
    assert!(warning.contains("NOT verified"), "{warning}");
}

/// `entra-pg token --source imds` against the fake IMDS, with these faults queued.
async fn token_after(faults: Vec<Fault>, extra: &[&str]) -> (std::process::Output, FakeIdentity) {
    let fake = FakeIdentity::start().await.unwrap();
    fake.push_faults(faults);
    let env = vec![(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        fake.imds_authority(),
    )];
    let mut args = vec!["token", "--source", "imds"];
    args.extend_from_slice(extra);
    let out = run(entra_pg(&args, &env), 120);
    (out, fake)
}

#[tokio::test(flavor = "multi_thread")]
async fn token_waits_out_a_429_with_retry_after() {
    let (out, fake) = token_after(vec![Fault::throttled(1)], &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stderr:\n{stderr}");
    assert_eq!(stdout.trim().split('.').count(), 3, "a JWT on stdout");
    assert_eq!(fake.token_requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_retries_a_500_then_a_410() {
    let (out, fake) = token_after(vec![Fault::status(500), Fault::status(410)], &[]).await;
    assert!(out.status.success(), "stderr:\n{}", text(&out).1);
    assert_eq!(fake.token_requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_gives_up_after_its_budget_with_every_attempt_named() {
    let fake = FakeIdentity::start().await.unwrap();
    fake.set_persistent_fault(Some(Fault::status(410)));
    let env = vec![(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        fake.imds_authority(),
    )];
    let out = run(
        entra_pg(&["token", "--source", "imds", "--retry-budget", "3"], &env),
        60,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("gave up after") && stderr.contains("HTTP 410"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
    assert!(
        fake.token_requests() >= 2,
        "retried: {} requests",
        fake.token_requests()
    );
    // That the budget bounds the retries in time is the retrying fetch's own test, on the paused clock
    // (entra-token's retry tests); here the run's 60 s cap only catches a hang.
}

#[tokio::test(flavor = "multi_thread")]
async fn token_for_an_unknown_identity_fails_at_once() {
    let fake = FakeIdentity::start().await.unwrap();
    let env = vec![(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        fake.imds_authority(),
    )];
    let out = run(
        entra_pg(
            &[
                "token",
                "--source",
                "imds",
                "--object-id",
                "00000000-0000-0000-0000-00000000dead",
            ],
            &env,
        ),
        60,
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("identity not found"), "{stderr}");
    assert_eq!(fake.token_requests(), 1);
    assert_eq!(
        fake.requests()[0].query("object_id"),
        Some("00000000-0000-0000-0000-00000000dead"),
        "--object-id reaches IMDS as the builder's UserAssignedId"
    );
}

/// Issue "One path…": 40 processes starting together on one node, against an IMDS that throttles above
/// 5 requests/s (429, `Retry-After: 1`), all get their token within the budget, and the requests stay
/// bounded. Each process is `entra-pg token`, whose fetch is the pool's start-up fetch
/// (`fetch_with_retry` with the same `RetryPolicy`); the in-process variant with 40 pools is
/// `entra-postgres/tests/start.rs`.
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_of_forty_processes_starting_together_gets_through_imds_throttling() {
    const FLEET: usize = 40;
    let fake = FakeIdentity::start().await.unwrap();
    fake.set_rate_limit(Some(RateLimit::new(5, 1)));
    let env = vec![(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        fake.imds_authority(),
    )];
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..FLEET)
        .map(|_| {
            let mut cmd = entra_pg(&["token", "--source", "imds"], &env);
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().expect("spawn entra-pg token")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect::<Vec<_>>()
    });
    let outputs = tokio::time::timeout(Duration::from_secs(120), outputs)
        .await
        .expect("the fleet finished within 120 s")
        .unwrap();
    let took = started.elapsed();
    for out in &outputs {
        let (stdout, stderr) = text(out);
        assert!(out.status.success(), "a process failed:\n{stderr}");
        assert_eq!(stdout.trim().split('.').count(), 3, "a JWT on stdout");
    }
    let requests = fake.token_requests();
    let throttled = fake.requests().iter().filter(|r| r.status == 429).count();
    eprintln!(
        "fleet of processes: {FLEET} tokens in {:.1} s, {requests} token requests, {throttled} of them throttled \
         (limit 5/s, Retry-After 1 s)",
        took.as_secs_f64()
    );
    // Each process succeeded, so each finished within its own 70 s retry budget: no clock to compare.
    assert_eq!(requests - throttled, FLEET, "one token issued per process");
    assert!(requests <= FLEET * 12, "bounded: {requests} requests");
}

/// `cmd` run in a mount namespace of its own where `/etc/hosts` is `hosts`: a resolver that answers
/// `localhost` with whatever it likes, for this process alone. `None` where the machine cannot make one
/// (not root, no `unshare`).
fn with_hosts_file(cmd: &std::process::Command, hosts: &std::path::Path) -> Option<std::process::Command> {
    let unshare = std::path::Path::new("/usr/bin/unshare");
    let probe = std::process::Command::new(unshare)
        .args(["--mount", "--propagation", "private", "/bin/true"])
        .status();
    if !unshare.exists() || !probe.is_ok_and(|s| s.success()) {
        return None;
    }
    let mut wrapped = std::process::Command::new(unshare);
    wrapped
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg("/bin/mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(std::process::Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    Some(wrapped)
}

#[tokio::test(flavor = "multi_thread")]
async fn localhost_is_trusted_by_its_addresses_not_its_name() {
    let fake = FakeIdentity::start().await.unwrap();
    let trap = Trap::start().unwrap();
    // 0.0.0.0 is not a loopback address, yet on Linux a connection to it lands on this machine: where
    // the trap (on 127.0.0.1) would see a token sent in cleartext.
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "0.0.0.0 localhost\n").unwrap();
    let env = vec![
        ("AZURE_POD_IDENTITY_AUTHORITY_HOST".into(), fake.imds_authority()),
        (
            "AZURE_POSTGRESQL_CONNECTIONSTRING".into(),
            format!(
                "host=localhost port={} sslmode=disable user=app dbname=postgres",
                trap.port()
            ),
        ),
    ];
    for args in [
        vec!["doctor"],
        vec!["doctor", "--json"],
        vec!["psql", "--", "-c", "SELECT 1"],
        vec!["grant", "app"],
    ] {
        let Some(cmd) = with_hosts_file(&entra_pg(&args, &env), &hosts) else {
            entra_emulator::clients::skip("no mount namespace here (unshare --mount needs root)");
            return;
        };
        let out = run(cmd, 60);
        let (stdout, stderr) = text(&out);
        let both = format!("{stdout}{stderr}");
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{both}");
        assert!(
            both.contains("without TLS") && both.contains("0.0.0.0, which is not loopback"),
            "{args:?}: {both}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_untouched(
        &trap,
        "doctor, psql and grant with localhost resolving to 0.0.0.0",
    );
}
