//! The proxy's promises, one per test: cancel requests reach the server, a client's password never goes
//! upstream, a client reaches only the configured role and database, the bind rule, and an identity
//! outage handled exactly as the pool handles it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use entra_emulator::{Emulator, Fault, TokenFingerprint};
use entra_proxy::{LocalAuth, ProxyBuilder, ProxyError};
use entra_token::RefreshPolicy;
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pg_sleep_is_cancelled_on_the_server() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    let cancel = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    // A cancel that reaches the server before the statement does cancels nothing: wait until it runs.
    let _watcher = wait_until_sleeping(&proxy).await;
    cancel.cancel_query(NoTls).await.unwrap();
    // The server's own answer proves the cancel reached it (an uncancelled pg_sleep(30) succeeds); the
    // bound only catches a hang.
    let result = tokio::time::timeout(Duration::from_secs(60), sleeping)
        .await
        .expect("pg_sleep(30) hung")
        .unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
    // The proxy counts the cancel once the server has taken it, which may be after the client saw 57014.
    let counted = Instant::now();
    while proxy.stats().cancels == 0 && counted.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.stats().cancels, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_password_is_ignored_and_the_token_goes_upstream() {
    let emulator = Emulator::start().await.unwrap();
    // The client's own sign-in is the last at the gate, with the token current then: no warm sessions.
    let proxy = proxy(&emulator, short_tokens(), |b| b.warm(0)).await;
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
    let proxy = proxy(&emulator, short_tokens(), |b| {
        // Counts sessions at the gate: no warm sessions.
        b.warm(0)
    })
    .await;

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
    let anywhere = || ProxyBuilder::new().listen("0.0.0.0:0".parse().unwrap());
    // The rules need no connector: a refused configuration costs no token.
    let refused = anywhere().check().unwrap_err();
    assert!(matches!(refused, ProxyError::NonLoopback { .. }), "{refused}");
    let no_tls = anywhere().allow_non_loopback(true).check().unwrap_err();
    assert!(matches!(no_tls, ProxyError::RemoteNeedsTls { .. }), "{no_tls}");
    // `start` applies the same rules.
    let emulator = Emulator::start().await.unwrap();
    let refused = anywhere()
        .start(&config(&emulator, short_tokens()))
        .await
        .unwrap_err();
    assert!(matches!(refused, ProxyError::NonLoopback { .. }), "{refused}");
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
        .token_lifetime(Duration::from_secs(12))
        .start()
        .await
        .unwrap();
    // Renewals start 8 s before expiry: the outage is seen about 4 s in, and the cached token is served
    // for about 7.5 s more, a window far wider than the three sign-ins below take on a busy machine.
    let policy = RefreshPolicy::short_lived().refresh_margin(Duration::from_secs(8));
    let proxy = proxy(&emulator, policy, |b| {
        // The token's path is the subject: a warm session signed in before the token lapsed would
        // still serve a client (as a session opened then lives on).
        b.warm(0)
    })
    .await;
    let config = tcp_config(&proxy);
    let held = connect(&config).await.unwrap();
    emulator.identity().set_persistent_fault(Some(Fault::status(503)));
    let tokens = proxy.tokens().unwrap().clone();
    entra_testkit::until(60, "a renewal failing", || {
        tokens.status().consecutive_failures >= 1
    })
    .await;
    // The cached token still signs new sessions in.
    for _ in 0..3 {
        let client = connect(&config)
            .await
            .expect("signed in with the cached token during the outage");
        client.query_one("SELECT 1", &[]).await.unwrap();
    }
    // Read after the sessions: they were signed in while the cached token was still served.
    assert!(tokens.status().is_usable(), "{:?}", tokens.status());
    let signed_in_with: std::collections::HashSet<_> =
        emulator.gate().sessions().into_iter().map(|s| s.token).collect();
    assert_eq!(signed_in_with.len(), 1, "every session used the cached token");
    entra_testkit::until(60, "the cached token withdrawn", || !tokens.status().is_usable()).await;
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
    let deadline = Instant::now() + Duration::from_secs(60);
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

/// A certificate for the proxy from a CA the test holds (as an operator would distribute it).
fn proxy_tls(ca: &entra_emulator::EmulatorCa, dir: &std::path::Path) -> entra_proxy::ClientTls {
    let cert = ca.issue_server_cert().unwrap();
    let (cert_path, key_path) = (dir.join("proxy.crt"), dir.join("proxy.key"));
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    entra_proxy::ClientTls::from_pem_files(&cert_path, &key_path).unwrap()
}

/// Before authentication a client learns nothing of the proxy: not its role, its database nor the
/// user ids it accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_user_id_is_told_only_that_peer_authentication_failed() {
    let emulator = Emulator::start().await.unwrap();
    // Our own user id is not among those allowed: to this proxy, we are another local user.
    let others = vec![nix::unistd::geteuid().as_raw().wrapping_add(4242)];
    let proxy = proxy(&emulator, short_tokens(), |b| {
        // Counts sessions at the gate: no warm sessions.
        b.local_auth(LocalAuth::Peer { uids: others }).warm(0)
    })
    .await;
    for (user, dbname) in [("postgres", "postgres"), (proxy.role(), proxy.database())] {
        let mut config = tcp_config(&proxy);
        config.user(user).dbname(dbname);
        let err = connect(&config).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(db.code().code(), "28000", "{err}");
        assert_eq!(db.message(), "peer authentication failed");
        assert_eq!(db.detail(), None);
        assert_eq!(db.hint(), None);
    }
    assert_eq!(proxy.stats().refused_local_auth, 2);
    assert!(emulator.gate().sessions().is_empty(), "nothing went upstream");
}

/// Beside 10 000 idle loopback sockets (the socket table of a busy node), the peer lookup still finds the
/// one socket of each client: a client of this process's user is admitted, and refused by a proxy that
/// admits only another user id. (Correctness only: what the sockets cost is measured by `entra-pg bench
/// --mode proxy-connect`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_finds_each_client_among_10_000_idle_loopback_sockets() {
    let idle = tokio::task::spawn_blocking(|| entra_testkit::sockets::IdleSockets::hold(10_000))
        .await
        .unwrap()
        .expect("10 000 idle loopback sockets");
    assert_eq!(idle.len(), 10_000);
    let listed = entra_testkit::sockets::tcp_sockets_on_machine();
    assert!(listed >= 10_000, "the kernel lists {listed} TCP sockets");

    let emulator = Emulator::start().await.unwrap();
    let ours = proxy(&emulator, short_tokens(), |b| {
        // Counts sessions at the gate: none ahead of the client's own (no warm sessions).
        b.warm(0)
    })
    .await;
    let client = connect(&tcp_config(&ours))
        .await
        .expect("our own user is admitted");
    let row = client.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), ours.role());

    let others = vec![nix::unistd::geteuid().as_raw().wrapping_add(4242)];
    let theirs = proxy(&emulator, short_tokens(), |b| {
        // Counts sessions at the gate: no warm sessions.
        b.local_auth(LocalAuth::Peer { uids: others }).warm(0)
    })
    .await;
    let err = connect(&tcp_config(&theirs)).await.unwrap_err();
    assert_eq!(sqlstate(&err), Some("28000"), "{err}");
    assert_eq!(theirs.stats().refused_local_auth, 1);
    assert_eq!(ours.stats().refused_local_auth, 0);
    assert_eq!(
        emulator.gate().sessions().len(),
        1,
        "only the admitted client went upstream"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_told_only_that_password_authentication_failed() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        // Counts sessions at the gate: no warm sessions.
        b.local_auth(LocalAuth::Secret(LocalAuth::generate_secret()))
            .warm(0)
    })
    .await;
    for (user, dbname) in [("postgres", "postgres"), (proxy.role(), proxy.database())] {
        let mut config = tcp_config(&proxy);
        config.user(user).dbname(dbname).password("guess");
        let err = connect(&config).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(db.code().code(), "28P01", "{err}");
        assert_eq!(db.message(), "password authentication failed");
        assert_eq!(db.detail(), None);
        assert_eq!(db.hint(), None);
    }
    assert_eq!(proxy.stats().refused_local_auth, 2);
    assert!(emulator.gate().sessions().is_empty(), "nothing went upstream");
}

/// What the tracing subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A newline in a user name, a database name or an application_name does not start a log line of
/// its own.
///
/// The subscriber is the process's global one, not a scoped one: `cargo test` runs this file's tests
/// on threads of one process, and tracing caches whether a log statement is wanted when it is first
/// reached; with a single scoped subscriber it asks only the thread that reached it first, which may
/// be another test's, and this test's lines would then be lost. Only this test sets it; the lines
/// other tests' proxies write meanwhile do not start with "forged" either.
#[tokio::test]
async fn client_text_cannot_forge_a_log_line() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_env_filter(tracing_subscriber::EnvFilter::new("entra_proxy=trace"))
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other test sets the global subscriber");
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let (role, database) = (proxy.role().to_string(), proxy.database().to_string());
    for (user, dbname, application) in [
        ("x\nforged line", database.as_str(), "app"),
        (role.as_str(), "d\nforged database", "app"),
        (role.as_str(), database.as_str(), "a\nforged application_name"),
    ] {
        let mut config = tcp_config(&proxy);
        config.user(user).dbname(dbname).application_name(application);
        if let Ok(client) = connect(&config).await {
            client.simple_query("SELECT 1").await.unwrap();
        }
    }
    drop(proxy);
    let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let forged: Vec<&str> = text.lines().filter(|l| l.starts_with("forged")).collect();
    assert!(forged.is_empty(), "forged lines {forged:?} in:\n{text}");
    for logged in [
        r"x\nforged line",
        r"d\nforged database",
        r"a\nforged application_name",
    ] {
        assert!(text.contains(logged), "{logged} is logged, escaped:\n{text}");
    }
}

/// A client that vanishes without a FIN (a remote machine's crash, a dropped link) is found out by TCP
/// keepalive, so it does not hold an upstream session for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_client_sockets_have_tcp_keepalive_on() {
    let Some(ss) = ["/usr/bin/ss", "/bin/ss", "/usr/sbin/ss", "/sbin/ss"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        entra_emulator::clients::skip("ss is not installed (Debian: iproute2)");
        return;
    };
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b).await;
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    client.query_one("SELECT 1", &[]).await.unwrap();
    // The session is relayed, so its socket was set up when it was accepted. `ss` shows one timer per
    // socket: while bytes await their acknowledgement it is the retransmission timer, so look until
    // they are acknowledged.
    let port = proxy.tcp_addresses()[0].port();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new(ss)
            .args(["-tnoH", "state", "established", "sport", "=", &format!(":{port}")])
            .output()
            .unwrap();
        let sockets = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{sockets}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sockets.lines().count(),
            1,
            "the proxy's end of the one client:\n{sockets}"
        );
        if sockets.contains("timer:(keepalive") {
            break;
        }
        assert!(Instant::now() < deadline, "no keepalive timer: {sockets}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `sslmode=require` encrypts but does not check who answers; a client of a proxy beyond loopback is
/// told to verify it with the CA that signed its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_tls_is_told_to_verify_the_proxy_with_its_ca() {
    let emulator = Emulator::start().await.unwrap();
    let ca = entra_emulator::EmulatorCa::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = proxy_tls(&ca, dir.path());
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.allow_non_loopback(true)
            .client_tls(tls)
            .local_auth(LocalAuth::Secret(LocalAuth::generate_secret()))
    })
    .await;
    let mut config = tcp_config(&proxy);
    config
        .password("any")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = connect(&config).await.unwrap_err();
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err}"));
    let message = db.message();
    assert_eq!(db.code().code(), "28000", "{err}");
    assert!(message.contains("connect with sslmode=verify-full"), "{message}");
    assert!(message.contains("sslrootcert="), "{message}");
    assert!(!message.contains("connect with sslmode=require"), "{message}");
    assert!(
        !message.contains(proxy.role()) && !message.contains(proxy.database()),
        "{message}"
    );
}

/// Connections that never authenticate take every place among the unauthenticated ones. A client
/// behind them is not accepted (it waits in the kernel's queue, holding none of the proxy's files)
/// until one of them reaches the startup timeout and is closed; then it gets in and signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_authenticate_hold_a_client_back_only_until_their_startup_timeout() {
    use tokio::io::AsyncReadExt as _;
    let emulator = Emulator::start().await.unwrap();
    let secret = LocalAuth::generate_secret();
    let text = secrecy::ExposeSecret::expose_secret(&secret).to_string();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.local_auth(LocalAuth::Secret(secret))
            .max_unauthenticated(2)
            .startup_timeout(Duration::from_secs(2))
    })
    .await;
    let address = proxy.tcp_addresses()[0];
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(address).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().unauthenticated < 2 {
        assert!(Instant::now() < deadline, "{:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut config = tcp_config(&proxy);
    config.password(text.as_str());
    let client = tokio::time::timeout(Duration::from_secs(60), connect(&config))
        .await
        .expect("signed in within 60 s")
        .expect("signed in");
    // Order of events: the client got in only after a silent connection had timed out.
    let stats = proxy.stats();
    assert!(stats.refused_timeout >= 1, "{stats:?}");
    assert_eq!(stats.accepted, 3, "{stats:?}");
    client.query_one("SELECT 1", &[]).await.unwrap();
    for mut connection in silent {
        let closed = tokio::time::timeout(Duration::from_secs(60), connection.read(&mut [0u8; 64]))
            .await
            .expect("the proxy closed the silent connection");
        assert!(matches!(closed, Ok(0)), "closed without an answer: {closed:?}");
    }
    let stats = proxy.stats();
    assert_eq!(
        (stats.refused_timeout, stats.unauthenticated, stats.relayed),
        (2, 0, 1),
        "{stats:?}"
    );
}

/// The cap counts only connections that have not authenticated: sessions past authentication do not
/// hold a place, so more of them run at once than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_sessions_hold_no_place_among_the_unauthenticated() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| b.max_unauthenticated(1)).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let client = connect(&tcp_config(&proxy)).await.unwrap();
        client.query_one("SELECT 1", &[]).await.unwrap();
        sessions.push(client);
    }
    let stats = proxy.stats();
    assert_eq!((stats.active, stats.unauthenticated), (3, 0), "{stats:?}");
}

/// tokio-postgres closes its end of a cancel request's connection as soon as the request is written, so
/// by the time the kernel is asked whose it was, it may be nobody's. The request's random key is what
/// authenticates it (as PostgreSQL's cancel requests are), and it is forwarded. Made certain here: the
/// only place for a connection before authentication is held, so the proxy accepts the cancel
/// connection only after the client has closed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_whose_client_closed_before_the_peer_check_is_still_forwarded() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.max_unauthenticated(1).startup_timeout(Duration::from_secs(60))
    })
    .await;
    let client = connect(&tcp_config(&proxy)).await.unwrap();
    let cancel = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    let _watcher = wait_until_sleeping(&proxy).await;

    let holder = tokio::net::TcpStream::connect(proxy.tcp_addresses()[0])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().unauthenticated < 1 {
        assert!(Instant::now() < deadline, "{:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Connected in the kernel's queue, written and closed, all before the proxy accepts it.
    cancel.cancel_query(NoTls).await.unwrap();
    assert_eq!(proxy.stats().accepted, 3, "{:?}", proxy.stats());
    drop(holder);

    let result = tokio::time::timeout(Duration::from_secs(60), sleeping)
        .await
        .expect("pg_sleep(30) still running 60 s after the cancel")
        .unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(sqlstate(&err), Some("57014"), "{err}");
    // Counted once the server has taken it, which may be after the client saw 57014.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.stats().cancels == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.cancels), (4, 1), "{stats:?}");
}

/// Authenticated clients of an allowed user cannot pile up while every upstream slot is taken: as many
/// wait as there are slots, and the next is refused at once (53300), holding no file while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_waiting_for_an_upstream_slot_are_as_many_as_the_slots_and_no_more() {
    let emulator = Emulator::start().await.unwrap();
    let proxy = proxy(&emulator, short_tokens(), |b| {
        b.max_size(1).wait_timeout(Some(Duration::from_secs(600)))
    })
    .await;
    let config = tcp_config(&proxy);
    let holding = connect(&config).await.unwrap();
    // The second waits for the slot (wait_timeout is long: it would wait past the test).
    let waiting = {
        let config = config.clone();
        tokio::spawn(async move { connect(&config).await })
    };
    let started = Instant::now();
    while proxy.stats().waiting == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", proxy.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The third finds every slot taken and the one waiting place too: refused, not queued.
    let third = tokio::time::timeout(Duration::from_secs(60), connect(&config))
        .await
        .expect("refused at once, not queued for 600 s")
        .unwrap_err();
    assert_eq!(sqlstate(&third), Some("53300"), "{third}");
    assert_eq!(proxy.stats().refused_full, 1);
    // When the slot frees, the waiting client gets it.
    drop(holding);
    let second = tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the waiting client got the slot")
        .unwrap()
        .unwrap();
    second.query_one("SELECT 1", &[]).await.unwrap();
}
