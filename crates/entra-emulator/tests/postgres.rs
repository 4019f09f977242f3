//! `TestPostgres`: a real, throwaway PostgreSQL that tests can start, use, restart and drop.

mod common;
#[path = "common/report.rs"]
mod report;

use entra_emulator::TestPostgres;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

async fn start() -> TestPostgres {
    match TestPostgres::start().await {
        Ok(pg) => pg,
        Err(e) => panic!("{}", report::report(&e)),
    }
}

/// The superuser over TCP with TLS verified against the emulator CA for host `localhost`.
async fn tls_client(
    pg: &TestPostgres,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = MakeRustlsConnect::new(pg.ca().client_config().unwrap());
    let (client, connection) = tokio_postgres::Config::new()
        .host(pg.host())
        .port(pg.port())
        .user(pg.superuser())
        .password(password)
        .dbname("postgres")
        .ssl_mode(SslMode::Require)
        .connect(tls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn select_one(client: &tokio_postgres::Client) -> i32 {
    client.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn answers_over_tls_with_the_superuser_password_and_over_the_socket() {
    let pg = start().await;
    let client = tls_client(&pg, pg.superuser_password()).await.unwrap();
    assert_eq!(select_one(&client).await, 1);
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the TCP session must be encrypted");

    let socket = pg.superuser_client().await.unwrap();
    assert_eq!(select_one(&socket).await, 1);
    assert!(pg.ca_path().is_file());
    assert!(std::fs::read_to_string(pg.ca_path()).unwrap() == pg.ca_pem());
    assert!(pg.connection_string().contains("sslmode=verify-full"));
    assert!(!format!("{pg:?}").contains(pg.superuser_password()));
}

#[tokio::test]
async fn tcp_refuses_a_wrong_password_and_plaintext() {
    let pg = start().await;
    let err = tls_client(&pg, "wrong").await.map(|_| ()).unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"), "{err}");

    let err = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pg.port())
        .user(pg.superuser())
        .password(pg.superuser_password())
        .dbname("postgres")
        .ssl_mode(SslMode::Disable)
        .connect(tokio_postgres::NoTls)
        .await
        .map(|_| ())
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("no pg_hba.conf entry"), "{}", db.message());
}

#[tokio::test]
async fn roles_databases_and_sql_as_superuser() {
    let pg = start().await;
    pg.create_role("app \"quoted\"", Some("s3cret'pw")).await.unwrap();
    pg.create_database("appdb", "app \"quoted\"").await.unwrap();
    pg.execute("CREATE TABLE t(x int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let client = pg.superuser_client().await.unwrap();
    let owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'appdb'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, "app \"quoted\"");
    let x: i32 = client.query_one("SELECT x FROM t", &[]).await.unwrap().get(0);
    assert_eq!(x, 7);
    let err = pg.execute("SELECT * FROM no_such_table").await.unwrap_err();
    assert!(err.to_string().contains("postgres.log"), "{err}");
}

#[tokio::test]
async fn restart_closes_sessions_and_serves_again_on_the_same_port() {
    let pg = start().await;
    let port = pg.port();
    let before = pg.superuser_client().await.unwrap();
    pg.restart().await.unwrap();
    assert!(before.query_one("SELECT 1", &[]).await.is_err());
    assert_eq!(pg.port(), port);
    let client = tls_client(&pg, pg.superuser_password()).await.unwrap();
    assert_eq!(select_one(&client).await, 1);
}

#[tokio::test]
async fn terminate_backends_ends_that_roles_sessions_only() {
    let pg = start().await;
    pg.create_role("victim", None).await.unwrap();
    let mut config = pg.socket_config("postgres");
    config.user("victim");
    let mut victims = Vec::new();
    for _ in 0..3 {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        victims.push(client);
    }
    let bystander = pg.superuser_client().await.unwrap();

    assert_eq!(pg.terminate_backends("victim").await.unwrap(), 3);
    for victim in &victims {
        assert!(victim.query_one("SELECT 1", &[]).await.is_err());
    }
    assert_eq!(select_one(&bystander).await, 1);
    assert_eq!(pg.terminate_backends("victim").await.unwrap(), 0);
}

#[tokio::test]
async fn two_clusters_run_side_by_side() {
    let (a, b) = tokio::join!(start(), start());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    a.execute("CREATE TABLE only_in_a(x int)").await.unwrap();
    let b_client = tls_client(&b, b.superuser_password()).await.unwrap();
    let n: i64 = b_client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let a_client = tls_client(&a, a.superuser_password()).await.unwrap();
    assert_eq!(select_one(&a_client).await, 1);
}

#[tokio::test]
async fn dropping_stops_the_server_and_removes_its_directory() {
    let pg = start().await;
    let data_dir = pg.data_dir().to_path_buf();
    let root = data_dir.parent().unwrap().to_path_buf();
    assert!(
        !common::processes_mentioning(&data_dir).is_empty(),
        "the postmaster should be running with -D {}",
        data_dir.display()
    );
    drop(pg);
    assert_eq!(common::processes_mentioning(&data_dir), Vec::<u32>::new());
    assert!(!root.exists(), "{} was left behind", root.display());
}

#[tokio::test]
async fn stop_is_idempotent_and_drop_after_stop_cleans_up() {
    let pg = start().await;
    let root = pg.data_dir().parent().unwrap().to_path_buf();
    pg.stop().await.unwrap();
    assert!(pg.superuser_client().await.is_err());
    pg.stop().await.unwrap();
    drop(pg);
    assert!(!root.exists());
}

#[tokio::test]
async fn dropping_during_a_panic_still_cleans_up() {
    let pg = start().await;
    let data_dir = pg.data_dir().to_path_buf();
    let panicked = std::thread::spawn(move || {
        let _pg = pg;
        panic!("test failure while the cluster is up");
    })
    .join();
    assert!(panicked.is_err());
    assert_eq!(common::processes_mentioning(&data_dir), Vec::<u32>::new());
    assert!(!data_dir.exists());
}

/// Set for the helper below when the test that kills it runs it.
const KILLED_HELPER: &str = "ENTRA_EMULATOR_TEST_KILLED_HELPER";
/// What the helper prints before its cluster's data directory.
const HELPER_CLUSTER: &str = "HELPER'S CLUSTER: ";

/// Not a test of its own: run in a process of its own by
/// `a_cluster_left_by_a_killed_process_is_stopped_and_removed_by_the_next`, it starts a cluster, says where,
/// and waits to be killed.
#[tokio::test]
#[ignore = "a helper, run by a_cluster_left_by_a_killed_process_is_stopped_and_removed_by_the_next"]
async fn helper_start_a_cluster_and_wait_to_be_killed() {
    if std::env::var_os(KILLED_HELPER).is_none() {
        return;
    }
    let pg = start().await;
    println!("{HELPER_CLUSTER}{}", pg.data_dir().display());
    // Killed long before; if not, the cluster is dropped and the test that waits for it fails.
    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
}

#[tokio::test]
async fn a_cluster_left_by_a_killed_process_is_stopped_and_removed_by_the_next() {
    use tokio::io::AsyncBufReadExt as _;

    let mut helper = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(entra_testkit::rerun_args(
            "helper_start_a_cluster_and_wait_to_be_killed",
        ))
        .arg("--ignored")
        .env(KILLED_HELPER, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(helper.stdout.take().unwrap()).lines();
    // A hang guard only: the helper's start (a process, initdb, pg_ctl) takes seconds.
    let data_dir = entra_testkit::bounded(120, "the helper's cluster", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(path) = entra_testkit::after_marker(&line, HELPER_CLUSTER) {
                return std::path::PathBuf::from(path);
            }
        }
        panic!("the helper ended without starting a cluster");
    })
    .await;
    let root = data_dir.parent().unwrap().to_path_buf();

    // SIGKILL: no drop runs, the postmaster outlives its owner.
    helper.start_kill().unwrap();
    entra_testkit::bounded(60, "the helper's end", helper.wait())
        .await
        .unwrap();
    let postmaster = common::processes_mentioning(&data_dir);
    assert!(!postmaster.is_empty(), "the killed process's postmaster runs on");

    let reaped = tokio::task::spawn_blocking(entra_emulator::postgres::reap_orphans)
        .await
        .unwrap();

    // A test process starting beside this one may have reaped it first: what counts is that it is gone.
    assert!(
        !reaped.failed.iter().any(|(failed, _)| *failed == root),
        "{reaped:?}"
    );
    assert_eq!(common::processes_mentioning(&data_dir), Vec::<u32>::new());
    assert!(!root.exists(), "{} was left behind", root.display());
}

// ---------------------------------------------------------------- The initdb template

/// A fresh directory for templates, which the server's user (`postgres` when the tests run as root) may
/// pass through, as it may through /tmp.
fn template_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

async fn start_from(templates: &std::path::Path) -> TestPostgres {
    match TestPostgres::builder().template_dir(templates).start().await {
        Ok(pg) => pg,
        Err(e) => panic!("{}", report::report(&e)),
    }
}

/// The template in `templates`, which holds nothing else (no half-made one left behind).
fn the_template(templates: &std::path::Path) -> std::path::PathBuf {
    let entries: Vec<_> = std::fs::read_dir(templates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("entra-emulator-template-"), "{name}");
    entries[0].clone()
}

/// Chosen by `initdb` (time of day and pid): the copies of one template share it, an `initdb` of its own
/// gets another.
async fn system_identifier(pg: &TestPostgres) -> i64 {
    pg.superuser_client()
        .await
        .unwrap()
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Only its own password signs `pg`'s superuser in over TCP.
async fn signs_in_with_its_own_password_only(pg: &TestPostgres, other: &TestPostgres) {
    assert_ne!(pg.superuser_password(), other.superuser_password());
    let client = tls_client(pg, pg.superuser_password()).await.unwrap();
    assert_eq!(select_one(&client).await, 1);
    let err = tls_client(pg, other.superuser_password())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("28P01"), "{err}");
}

#[tokio::test]
async fn clusters_copied_from_the_template_have_their_own_password_and_leave_nothing_in_it() {
    let templates = template_dir();
    let a = start_from(templates.path()).await;
    let b = start_from(templates.path()).await;
    assert_eq!(
        system_identifier(&a).await,
        system_identifier(&b).await,
        "both copies of the template"
    );

    signs_in_with_its_own_password_only(&a, &b).await;
    signs_in_with_its_own_password_only(&b, &a).await;

    let data = the_template(templates.path()).join("data");
    for file in [
        "server.crt",
        "server.key",
        "entra-emulator.conf",
        "postmaster.pid",
    ] {
        assert!(!data.join(file).exists(), "{file} in the template");
    }
    for file in ["postgresql.conf", "pg_hba.conf"] {
        let text = std::fs::read_to_string(data.join(file)).unwrap();
        assert!(
            !text.contains("entra-emulator"),
            "{file} of the template was configured"
        );
    }
    // The template outlives its clusters: the next run copies it too.
    drop((a, b));
    assert!(data.is_dir());
}

/// Starts a cluster from `templates` and checks it is not a copy of the template whose clusters have
/// `template_id`, yet works.
async fn starts_without_the_template(templates: &std::path::Path, template_id: i64, what: &str) {
    let pg = start_from(templates).await;
    assert_ne!(
        system_identifier(&pg).await,
        template_id,
        "{what}: the template was used"
    );
    let client = tls_client(&pg, pg.superuser_password()).await.unwrap();
    assert_eq!(select_one(&client).await, 1, "{what}");
}

#[tokio::test]
async fn a_template_that_is_a_link_writable_by_others_or_unmarked_is_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let templates = template_dir();
    let template_id = system_identifier(&start_from(templates.path()).await).await;
    let template = the_template(templates.path());
    let data = template.join("data");
    // The control: a sound template is used.
    assert_eq!(
        system_identifier(&start_from(templates.path()).await).await,
        template_id
    );

    let elsewhere = templates.path().join("elsewhere");
    std::fs::rename(&template, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &template).unwrap();
    starts_without_the_template(templates.path(), template_id, "a link").await;
    std::fs::remove_file(&template).unwrap();
    std::fs::rename(&elsewhere, &template).unwrap();

    let mode = std::fs::metadata(&template).unwrap().permissions().mode();
    chmod(&template, mode | 0o002);
    starts_without_the_template(templates.path(), template_id, "writable by others").await;
    chmod(&template, mode);

    chmod(&data, 0o770);
    starts_without_the_template(templates.path(), template_id, "data writable by group").await;
    chmod(&data, 0o700);

    let marker = template.join("complete");
    let moved = templates.path().join("complete");
    std::fs::rename(&marker, &moved).unwrap();
    starts_without_the_template(templates.path(), template_id, "no marker").await;
    std::fs::rename(&moved, &marker).unwrap();

    // None of those fallbacks touched the template: sound again, it is used again.
    assert_eq!(
        system_identifier(&start_from(templates.path()).await).await,
        template_id
    );
}

#[tokio::test]
async fn clusters_started_at_once_without_a_template_all_use_the_one_that_won() {
    let templates = template_dir();
    let (a, b, c) = tokio::join!(
        start_from(templates.path()),
        start_from(templates.path()),
        start_from(templates.path())
    );
    // Each made a template; one rename won, and the others deleted theirs and copied the winner's.
    the_template(templates.path());
    let id = system_identifier(&a).await;
    assert_eq!(system_identifier(&b).await, id);
    assert_eq!(system_identifier(&c).await, id);
    signs_in_with_its_own_password_only(&a, &b).await;
    signs_in_with_its_own_password_only(&b, &c).await;
    signs_in_with_its_own_password_only(&c, &a).await;
}
