//! The `entra-pg` binary, run as a user would: against the local emulator, through environment variables.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use entra_emulator::{Emulator, ManagedIdentity};

#[test]
fn demo_survives_token_rotations_with_zero_errors() {
    let out = run(entra_pg(&["demo", "--duration", "10"], &[]), 180);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(summary_number(&stdout, "errors"), 0, "{stdout}");
    assert!(summary_number(&stdout, "rotations") > 0, "{stdout}");
    assert!(summary_number(&stdout, "queries") > 0, "{stdout}");
    // More connections than the pool holds: retired connections were re-created on new tokens.
    assert!(summary_number(&stdout, "connections created") > 16, "{stdout}");
}

#[test]
fn demo_failover_drill_fails_only_what_was_in_flight_and_recovers() {
    let out = run(entra_pg(&["demo", "--duration", "10", "--failover"], &[]), 180);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("failover drill: the server restarted"),
        "{stdout}"
    );
    assert!(stdout.contains("0 before, 0 after it served again"), "{stdout}");
    assert!(stdout.contains("only statements in flight failed"), "{stdout}");
}

#[test]
fn demo_refuses_nonsense_flags_with_a_usage_error() {
    let out = run(entra_pg(&["demo", "--tasks", "0"], &[]), 30);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_a_jwt_the_gate_accepts() {
    let emu = emulator().await;
    let out = run(entra_pg(&["token"], &emu.env_vars()), 60);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:.20}…");
    let user = sign_in(&emu, emu.user(), token)
        .await
        .expect("the gate accepts the token");
    assert_eq!(user, emu.user());
}

#[tokio::test(flavor = "multi_thread")]
async fn token_json_shows_claims_and_expiry_but_never_the_token() {
    let emu = emulator().await;
    let out = run(entra_pg(&["token", "--json"], &emu.env_vars()), 60);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    // Every JWT starts with the base64 of `{"`: none may appear anywhere.
    assert!(!stdout.contains("eyJ"), "the token leaked: {stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(doc["claims"]["oid"], emu.principal().object_id.as_str());
    assert_eq!(doc["claims"]["aud"], "https://ossrdbms-aad.database.windows.net");
    assert_eq!(doc["user"], emu.user());
    assert!(
        doc["expires_on"].as_str().is_some_and(|d| d.ends_with('Z')),
        "{doc}"
    );
    assert!(
        doc["claims"]["exp"].as_str().is_some_and(|d| d.contains('T')),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_for_a_user_assigned_identity_by_client_id() {
    let emu = emulator().await;
    let other = ManagedIdentity::new("reporting");
    emu.add_principal(other.clone()).await.expect("add principal");
    let out = run(
        entra_pg(
            &["token", "--json", "--client-id", &other.client_id],
            &emu.env_vars(),
        ),
        60,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(doc["claims"]["oid"], other.object_id.as_str());
}

#[test]
fn token_without_any_identity_endpoint_exits_3_with_cause_and_fix() {
    // A port nothing listens on: the IMDS the variable points at is absent.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    let env = [(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        format!("http://127.0.0.1:{port}"),
    )];
    let out = run(entra_pg(&["token"], &env), 60);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("no identity endpoint"), "{stderr}");
    assert!(stderr.contains("fix:"), "{stderr}");
}

#[test]
fn grant_dry_run_quotes_awkward_names() {
    let out = run(
        entra_pg(
            &[
                "grant",
                r#"O'Brien "ops" team"#,
                "--database",
                "my db",
                "--schema",
                r#"we"ird"#,
                "--dry-run",
            ],
            &[],
        ),
        30,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "SET standard_conforming_strings = on;",
        r#"SELECT * FROM pgaadauth_create_principal('O''Brien "ops" team', false, false);"#,
        r#"GRANT CONNECT ON DATABASE "my db" TO "O'Brien ""ops"" team";"#,
        r#"GRANT USAGE ON SCHEMA "we""ird" TO "O'Brien ""ops"" team";"#,
        r#"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "we""ird" TO "O'Brien ""ops"" team";"#,
        r#"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "we""ird" TO "O'Brien ""ops"" team";"#,
        r#"ALTER DEFAULT PRIVILEGES IN SCHEMA "we""ird" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "O'Brien ""ops"" team";"#,
        r#"ALTER DEFAULT PRIVILEGES IN SCHEMA "we""ird" GRANT USAGE, SELECT ON SEQUENCES TO "O'Brien ""ops"" team";"#,
    ] {
        assert!(lines.contains(&expected), "missing {expected}\nin:\n{stdout}");
    }
}

#[test]
fn grant_dry_run_by_object_id() {
    let out = run(
        entra_pg(
            &[
                "grant",
                "DBA team",
                "--object-id",
                "1b2c",
                "--type",
                "group",
                "--admin",
                "--dry-run",
            ],
            &[],
        ),
        30,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(
            "SELECT * FROM pgaadauth_create_principal_with_oid('DBA team', '1b2c', 'group', true, false);"
        ),
        "{stdout}"
    );
}

#[test]
fn grant_refuses_a_name_with_a_newline() {
    let out = run(entra_pg(&["grant", "x\nDROP TABLE t", "--dry-run"], &[]), 30);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_gives_another_identity_read_write_on_a_database() {
    let emu = emulator().await;
    // The default principal owns the database and, here, a table: it plays the admin who grants.
    let owner = emu.user().to_string();
    let pg = emu.postgres();
    let db = emu.dbname().to_string();
    let mut config = pg.socket_config(&db);
    config.user(pg.superuser());
    let (admin, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("superuser connects");
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "CREATE TABLE orders (id serial PRIMARY KEY, item text); ALTER TABLE orders OWNER TO \"{owner}\";"
        ))
        .await
        .expect("create table");
    let reader = ManagedIdentity::new("reporting svc");
    emu.add_principal(reader.clone()).await.expect("add principal");

    let out = run(
        entra_pg(&["grant", "reporting svc", "--grants-only"], &emu.env_vars()),
        90,
    );
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "grant failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    let row = admin
        .query_one(
            "SELECT has_table_privilege('reporting svc', 'public.orders', 'SELECT, INSERT, UPDATE, DELETE'), \
                    has_sequence_privilege('reporting svc', 'public.orders_id_seq', 'USAGE'), \
                    has_database_privilege('reporting svc', current_database(), 'CONNECT')",
            &[],
        )
        .await
        .expect("privilege query");
    assert!(row.get::<_, bool>(0), "table privileges missing");
    assert!(row.get::<_, bool>(1), "sequence privilege missing");
    assert!(row.get::<_, bool>(2), "connect privilege missing");
}

/// Processes (other than `except`) whose environment holds `marker`.
fn processes_with(marker: &str, except: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == except {
            continue;
        }
        if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
            if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn emulate_prints_exports_and_stops_cleanly_on_sigterm() {
    let marker = format!("ENTRA_PG_TEST_MARKER=emulate-{}", std::process::id());
    let (key, value) = marker.split_once('=').expect("marker");
    let emulate = Emulate::start_with_env(&[], &[(key.to_string(), value.to_string())]);
    let pid = emulate.pid();
    for var in [
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGSSLROOTCERT",
    ] {
        assert!(
            emulate.var(var).is_some(),
            "no export of {var} in {:?}",
            emulate.vars
        );
    }
    let ca = emulate.var("PGSSLROOTCERT").expect("PGSSLROOTCERT").to_string();
    assert!(std::path::Path::new(&ca).exists(), "{ca} missing while running");
    assert!(
        !processes_with(&marker, pid).is_empty(),
        "no PostgreSQL process carries the marker: is the test's detection broken?"
    );

    let status = emulate.stop(Duration::from_secs(60));
    assert!(status.success(), "emulate exited with {status}");
    assert!(!std::path::Path::new(&ca).exists(), "{ca} left behind");
    // The server's processes exit a moment after pg_ctl returns.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = processes_with(&marker, pid);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_every_step_on_a_healthy_emulator() {
    let emu = emulator().await;
    let out = run(entra_pg(&["doctor"], &emu.env_vars()), 90);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for step in ["configuration", "token", "network", "tls", "sign-in", "query"] {
        assert!(
            stdout.lines().any(|l| l.starts_with("ok") && l.contains(step)),
            "step {step} not passed:\n{stdout}"
        );
    }
    assert!(stdout.contains(&emu.principal().object_id), "{stdout}");
    assert!(
        stdout.contains(&format!("signed in as \"{}\"", emu.user())),
        "{stdout}"
    );
    assert!(!stdout.contains("eyJ"), "the token leaked: {stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_json_reports_every_step() {
    let emu = emulator().await;
    let out = run(entra_pg(&["doctor", "--json"], &emu.env_vars()), 90);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("eyJ"), "the token leaked: {stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(doc["ok"], true);
    let steps = doc["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "configuration",
            "tls mode",
            "token",
            "network",
            "tls",
            "sign-in",
            "query"
        ],
        "{doc}"
    );
    assert!(
        steps.iter().all(|s| s["ok"] == true && s["warning"] == false),
        "{doc}"
    );
}

/// `entra-pg doctor --json` with `env` and `args`: its exit code and its report.
fn doctor_json(env: &[(String, String)], args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let out = run(entra_pg(&all, env), 90);
    let (stdout, stderr) = text(&out);
    assert!(!stdout.contains("eyJ"), "the token leaked: {stdout}");
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
    (out.status.code(), doc)
}

/// The step that failed (doctor stops at the first), by name, with its typed cause.
fn failed_step(doc: &serde_json::Value) -> (&str, &str, &serde_json::Value) {
    let steps = doc["steps"].as_array().expect("steps");
    let failed: Vec<_> = steps.iter().filter(|s| s["ok"] == false).collect();
    assert_eq!(failed.len(), 1, "doctor stops at the first failure: {doc}");
    let last = steps.last().expect("a step");
    assert_eq!(last, failed[0], "the failure is the last step: {doc}");
    (
        last["step"].as_str().expect("step"),
        last["kind"].as_str().unwrap_or("(no kind)"),
        last,
    )
}

fn passed(doc: &serde_json::Value, step: &str) -> bool {
    doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .any(|s| s["step"] == step && s["ok"] == true)
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_without_an_identity_endpoint_names_cause_and_fix() {
    let emu = emulator().await;
    let env = with_var(emu.env_vars(), "AZURE_POD_IDENTITY_AUTHORITY_HOST", &dead_url());
    let (code, doc) = doctor_json(&env, &[]);
    assert_eq!(code, Some(3), "{doc}");
    let (step, kind, failed) = failed_step(&doc);
    assert_eq!((step, kind), ("token", "no_credential"), "{doc}");
    assert!(failed["fix"].as_str().is_some_and(|f| !f.is_empty()), "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_an_identity_the_machine_does_not_have_says_identity_not_found() {
    let emu = emulator().await;
    // A user-assigned client id that is not assigned here: IMDS answers 400 "Identity not found".
    let env = with_var(
        emu.env_vars(),
        "AZURE_POSTGRESQL_CLIENTID",
        "00000000-1111-2222-3333-444444444444",
    );
    let (code, doc) = doctor_json(&env, &[]);
    assert_eq!(code, Some(3), "{doc}");
    assert_eq!(failed_step(&doc).0, "token", "{doc}");
    assert_eq!(failed_step(&doc).1, "identity_not_found", "{doc}");
    // The fake saw the user-assigned id on the request.
    assert!(emu
        .identity()
        .requests()
        .iter()
        .any(|r| r.query("client_id") == Some("00000000-1111-2222-3333-444444444444")));
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_on_a_revoked_principal_names_the_principal_call() {
    let emu = emulator().await;
    assert!(emu.gate().revoke_principal(emu.user()));
    let (code, doc) = doctor_json(&emu.env_vars(), &[]);
    assert_eq!(code, Some(1), "{doc}");
    let (step, kind, failed) = failed_step(&doc);
    assert_eq!((step, kind), ("sign-in", "principal_rejected"), "{doc}");
    // The SQL to run, with the role quoted as a literal.
    let call = format!("pgaadauth_create_principal('{}', false, false)", emu.user());
    assert!(failed["fix"].as_str().is_some_and(|f| f.contains(&call)), "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_the_wrong_user_name_says_which_name_to_use() {
    let emu = emulator().await;
    let env = with_var(emu.env_vars(), "AZURE_POSTGRESQL_USER", "someone-else");
    let env = with_var(env, "PGUSER", "someone-else");
    let (code, doc) = doctor_json(&env, &[]);
    assert_eq!(code, Some(1), "{doc}");
    let (step, kind, failed) = failed_step(&doc);
    assert_eq!((step, kind), ("sign-in", "principal_rejected"), "{doc}");
    // The name the token gives, to use instead.
    let name = format!("{:?}", emu.user());
    assert!(failed["fix"].as_str().is_some_and(|f| f.contains(&name)), "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_an_untrusted_certificate_fails_at_tls() {
    let emu = emulator().await;
    // A CA file that holds a real CA, just not the emulator's.
    let other = tempfile_with(entra_postgres_digicert());
    let env = with_var(emu.env_vars(), "PGSSLROOTCERT", &other.display().to_string());
    let (code, doc) = doctor_json(&env, &[]);
    let _ = std::fs::remove_file(&other);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(failed_step(&doc).0, "tls", "{doc}");
    assert_eq!(failed_step(&doc).1, "untrusted_certificate", "{doc}");
}

/// The emulator principal's claims, as the fake would issue them.
fn principal_claims(emu: &Emulator) -> entra_emulator::Claims {
    let principal = emu.principal();
    let mut claims = entra_emulator::Claims::new(&principal.object_id, Duration::from_secs(3600));
    claims.appid = Some(principal.client_id.clone());
    claims.xms_mirid = Some(principal.resource_id.clone());
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_an_expired_token_points_at_the_clock() {
    // No skew allowance: a token whose exp has passed is refused, as it is on a server whose clock is right.
    let emu = Emulator::builder()
        .gate_skew(Duration::ZERO)
        .start()
        .await
        .expect("the emulator starts (is PostgreSQL installed?)");
    let mut claims = principal_claims(&emu);
    claims.exp = entra_emulator::jwt::epoch_secs(std::time::SystemTime::now()) - 120;
    claims.iat = claims.exp - 3600;
    claims.nbf = claims.iat;
    let token = emu.identity().issuer().sign(&claims);
    emu.identity()
        .set_persistent_fault(Some(entra_emulator::Fault::token(
            &token,
            Duration::from_secs(3600),
            entra_emulator::OSSRDBMS_RESOURCE,
        )));
    let (code, doc) = doctor_json(&emu.env_vars(), &[]);
    assert_eq!(code, Some(1), "{doc}");
    // The endpoint's answer looked fine: only the server could tell.
    assert!(passed(&doc, "token"), "{doc}");
    assert_eq!(failed_step(&doc).0, "sign-in", "{doc}");
    assert_eq!(failed_step(&doc).1, "token_expired", "{doc}");
    assert_eq!(
        emu.gate().stats().rejected(entra_emulator::RejectReason::Expired),
        1,
        "{doc}"
    );
}

/// A token for the principal, but for Azure Resource Manager instead of PostgreSQL.
const OTHER_RESOURCE: &str = "https://management.azure.com/";

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_a_token_for_another_resource_fails_at_the_token_step() {
    let emu = emulator().await;
    let mut claims = principal_claims(&emu);
    claims.aud = OTHER_RESOURCE.to_string();
    let token = emu.identity().issuer().sign(&claims);
    emu.identity()
        .set_persistent_fault(Some(entra_emulator::Fault::token(
            &token,
            Duration::from_secs(3600),
            OTHER_RESOURCE,
        )));
    let (code, doc) = doctor_json(&emu.env_vars(), &[]);
    assert_eq!(code, Some(3), "{doc}");
    let (step, kind, failed) = failed_step(&doc);
    assert_eq!((step, kind), ("token", "wrong_audience"), "{doc}");
    assert!(
        failed["cause"]
            .as_str()
            .is_some_and(|c| c.contains(OTHER_RESOURCE)),
        "{doc}"
    );
    // Caught before any sign-in was tried.
    assert_eq!(emu.gate().stats().rejected_total(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_asked_for_another_scope_gets_the_servers_audience_refusal_explained() {
    let emu = emulator().await;
    let mut claims = principal_claims(&emu);
    claims.aud = OTHER_RESOURCE.to_string();
    let token = emu.identity().issuer().sign(&claims);
    emu.identity()
        .set_persistent_fault(Some(entra_emulator::Fault::token(
            &token,
            Duration::from_secs(3600),
            OTHER_RESOURCE,
        )));
    // The token matches the scope asked for, so only the server can say it is the wrong one.
    let scope = format!("{OTHER_RESOURCE}.default");
    let (code, doc) = doctor_json(&emu.env_vars(), &["--scope", &scope]);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(failed_step(&doc).0, "sign-in", "{doc}");
    assert_eq!(failed_step(&doc).1, "wrong_audience", "{doc}");
    assert_eq!(
        emu.gate()
            .stats()
            .rejected(entra_emulator::RejectReason::WrongAudience),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_tls_disabled_says_the_server_requires_it() {
    let emu = emulator().await;
    // sslmode=disable is accepted for a loopback host, so the connection really goes out without TLS.
    let mut env = with_var(emu.env_vars(), "PGSSLMODE", "disable");
    env.retain(|(k, _)| k != "AZURE_POSTGRESQL_SSL");
    let (code, doc) = doctor_json(&env, &[]);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(failed_step(&doc).0, "sign-in", "{doc}");
    assert_eq!(failed_step(&doc).1, "tls_required", "{doc}");
    assert_eq!(
        emu.gate().stats().rejected(entra_emulator::RejectReason::NoTls),
        1
    );
}

fn entra_postgres_digicert() -> &'static str {
    include_str!("../../entra-postgres/certs/DigiCertGlobalRootCA.pem")
}

fn tempfile_with(contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "entra-pg-test-ca-{}-{:?}.pem",
        std::process::id(),
        Instant::now()
    ));
    std::fs::write(&path, contents).expect("write CA file");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_signs_in_with_a_token_and_passes_arguments_through() {
    if Command::new("psql").arg("--version").output().is_err() {
        eprintln!("psql not installed: skipped");
        return;
    }
    let emu = emulator().await;
    let mut cmd = entra_pg(&["psql", "--", "-Atc", "SELECT current_user"], &emu.env_vars());
    // psql itself must be found; `az` still must not.
    cmd.env("PATH", "/usr/bin:/bin");
    let out = run(cmd, 60);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), emu.user());

    let mut cmd = entra_pg(&["psql", "--", "-c", "SELECT 1/0"], &emu.env_vars());
    cmd.env("PATH", "/usr/bin:/bin");
    let out = run(cmd, 60);
    assert_eq!(
        out.status.code(),
        Some(1),
        "psql's own exit code is passed on: {:?}",
        text(&out)
    );
}

#[test]
fn bench_write_mix_loses_no_acknowledged_write_through_the_gate_or_direct() {
    let out_dir = tempfile::tempdir().expect("a temporary directory");
    let out_arg = out_dir.path().display().to_string();
    let args = [
        "bench",
        "--duration",
        "5",
        "--cycles",
        "1",
        "--mix",
        "write",
        "--no-pgbench",
        "--out",
        &out_arg,
    ];
    let out = run(entra_pg(&args, &[]), 240);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let files: Vec<_> = std::fs::read_dir(out_dir.path())
        .expect("--out exists")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        files.iter().any(|p| p.extension().is_some_and(|e| e == "svg")),
        "no SVG in {out_arg}: {files:?}"
    );
    let json = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no JSON in {out_arg}: {files:?}"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("readable")).expect("JSON");
    let runs = doc["runs"].as_array().expect("runs");
    let labels: Vec<&str> = runs.iter().filter_map(|r| r["label"].as_str()).collect();
    assert_eq!(labels, ["gate", "direct"], "{doc}");
    for r in runs {
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["writes"]["missing"], 0, "{r}");
        assert!(r["writes"]["acknowledged"].as_u64().unwrap_or(0) > 0, "{r}");
    }
    assert!(doc["ratios"]["gate_over_direct"]["median"].is_number(), "{doc}");
}

/// `bench --mode proxy-connect` runs its four arms in order (gate, proxy, then both beside the idle
/// sockets it holds, which the kernel's table then lists) and writes both ratios. (What the figures are
/// is the benchmark's business; this checks what it ran and wrote.)
#[test]
fn bench_proxy_connect_runs_gate_proxy_and_warm_proxy_with_and_without_idle_sockets() {
    if entra_emulator::clients::pg_program("pgbench").is_none() {
        entra_emulator::clients::skip("pgbench is not installed");
        return;
    }
    let out_dir = tempfile::tempdir().expect("a temporary directory");
    let out_arg = out_dir.path().display().to_string();
    let args = [
        "bench",
        "--mode",
        "proxy-connect",
        "--connections",
        "2",
        "--duration",
        "1",
        "--cycles",
        "1",
        "--sign-in-delay-ms",
        "50",
        "--out",
        &out_arg,
    ];
    let out = run(entra_pg(&args, &[]), 240);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let json = std::fs::read_dir(out_dir.path())
        .expect("--out exists")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no JSON in {out_arg}"));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("readable")).expect("JSON");
    let runs = doc["runs"].as_array().expect("runs");
    let arms: Vec<(&str, u64, bool)> = runs
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap_or("?"),
                r["idle_sockets"].as_u64().unwrap_or(u64::MAX),
                r["paced"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        arms,
        [
            ("gate", 0, true),
            ("proxy", 0, true),
            ("proxy-warm", 0, true),
            ("gate", 10_000, true),
            ("proxy", 10_000, true),
            ("proxy-warm", 10_000, true),
            ("gate", 0, false),
            ("proxy", 0, false),
            ("proxy-warm", 0, false),
        ],
        "{doc}"
    );
    for r in &runs[3..6] {
        assert!(r["tcp_sockets"].as_u64().unwrap_or(0) >= 10_000, "{r}");
    }
    for r in runs {
        assert!(r["latency_ms"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
        assert!(r["connection_ms"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    }
    for ratio in [
        "proxy_connect_latency_over_gate",
        "proxy_connect_latency_over_gate_idle_sockets",
        "proxy_connect_time_over_gate",
        "proxy_connect_time_over_gate_idle_sockets",
        "proxy_warm_connect_latency_over_gate",
        "proxy_warm_connect_latency_over_gate_idle_sockets",
    ] {
        assert!(doc["ratios"][ratio]["median"].is_number(), "{ratio}: {doc}");
    }
    for target in ["gate", "proxy", "proxy-warm"] {
        assert!(
            doc["full_speed_tps"][target]["median"].as_f64().unwrap_or(0.0) > 0.0,
            "{target}: {doc}"
        );
    }
    assert_eq!(doc["config"]["rate"], 20);
    assert_eq!(doc["config"]["sign_in_delay_ms"], 50);
}
