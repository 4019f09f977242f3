//! `EntraGate`: signs clients in like Azure Database for PostgreSQL (token as password over TLS), then
//! relays them faithfully to a real server.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use entra_emulator::jwt::epoch_secs;
use entra_emulator::{Claims, EntraGate, PrincipalKind, RejectReason, TestPostgres, TokenFingerprint};
use futures_util::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio_postgres::config::{SslMode, SslNegotiation};
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

#[path = "common/postgres_startup.rs"]
mod postgres_startup;
#[path = "common/report.rs"]
mod report;

use postgres_startup::{first_bytes, pairs, startup, PROTOCOL_3};

const ROLE: &str = "app-identity";
const OID: &str = "11111111-2222-3333-4444-555555555555";

/// Upper bound for anything that might hang; far above what a passing step takes, even on a busy machine.
const HANG: Duration = Duration::from_secs(60);

async fn gate_with(skew: Duration) -> EntraGate {
    let pg = Arc::new(
        TestPostgres::start()
            .await
            .unwrap_or_else(|e| panic!("{}", report::report(&e))),
    );
    let gate = EntraGate::builder(pg).skew(skew).start().await.unwrap();
    gate.create_principal(ROLE, OID, PrincipalKind::Service)
        .await
        .unwrap();
    gate
}

async fn gate() -> EntraGate {
    gate_with(Duration::from_secs(60)).await
}

fn token(gate: &EntraGate, oid: &str, lifetime: Duration) -> String {
    gate.issuer().sign(&Claims::new(oid, lifetime))
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

fn config(gate: &EntraGate, role: &str, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(gate.host())
        .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .port(gate.port())
        .user(role)
        .password(password)
        .dbname("postgres")
        .ssl_mode(SslMode::Require);
    config
}

/// TLS that verifies the gate's certificate against the emulator CA for host `localhost` (verify-full).
fn tls(gate: &EntraGate) -> MakeRustlsConnect {
    MakeRustlsConnect::new(gate.upstream().ca().client_config().unwrap())
}

async fn connect(gate: &EntraGate, role: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config(gate, role, password).connect(tls(gate)).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The refusal a connection attempt got: (severity, SQLSTATE, message).
async fn refusal(gate: &EntraGate, role: &str, password: &str) -> (String, String, String) {
    let err = connect(gate, role, password).await.map(|_| ()).unwrap_err();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"));
    (
        db.severity().to_string(),
        db.code().code().to_string(),
        db.message().to_string(),
    )
}

async fn current_user(client: &Client) -> String {
    client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Poll `cond` every 20 ms for up to [`HANG`] (hang prevention, not a timing assertion).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- Startup packets built by hand

/// What a hand-built sign-in came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// A session: its `current_user` and whether that role is a superuser.
    Session { current_user: String, superuser: bool },
    /// A FATAL before any session: SQLSTATE and message.
    Refused { code: String, message: String },
}

/// One typed message: its type byte and body.
async fn read_message(stream: &mut (impl AsyncRead + Unpin)) -> (u8, Vec<u8>) {
    let tag = stream.read_u8().await.unwrap();
    let len = stream.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    stream.read_exact(&mut body).await.unwrap();
    (tag, body)
}

/// The SQLSTATE and message of an ErrorResponse body.
fn refused(body: &[u8]) -> Outcome {
    let field = |tag: u8| {
        body.split(|&b| b == 0)
            .find(|f| f.first() == Some(&tag))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
            .unwrap_or_default()
    };
    Outcome::Refused {
        code: field(b'C'),
        message: field(b'M'),
    }
}

/// Sends `packet` as the StartupMessage over TLS (SSLRequest first, the gate's certificate verified for
/// `localhost`), answers a cleartext-password request with `password`, and on a session asks the server
/// who it is.
async fn sign_in_by_hand(gate: &EntraGate, packet: &[u8], password: &str) -> Outcome {
    let mut tcp = tokio::net::TcpStream::connect(gate.addr()).await.unwrap();
    tcp.write_all(&first_bytes(80_877_103, &[])).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S', "the gate accepts TLS");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(gate.upstream().ca().client_config().unwrap()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();

    tls.write_all(packet).await.unwrap();
    match read_message(&mut tls).await {
        (b'E', body) => return refused(&body),
        (b'R', body) => assert_eq!(body, 3u32.to_be_bytes(), "a cleartext-password request"),
        (tag, _) => panic!("unexpected {:?} before authentication", char::from(tag)),
    }
    let mut message = vec![b'p'];
    message.extend_from_slice(&(password.len() as u32 + 5).to_be_bytes());
    message.extend_from_slice(password.as_bytes());
    message.push(0);
    tls.write_all(&message).await.unwrap();
    loop {
        match read_message(&mut tls).await {
            (b'E', body) => return refused(&body),
            (b'Z', _) => break,
            _ => {}
        }
    }

    let query = b"SELECT current_user::text, rolsuper::text FROM pg_roles WHERE rolname = current_user\0";
    let mut message = vec![b'Q'];
    message.extend_from_slice(&(query.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(query);
    tls.write_all(&message).await.unwrap();
    let mut row = Vec::new();
    loop {
        match read_message(&mut tls).await {
            (b'D', body) => {
                let mut rest = &body[2..];
                while !rest.is_empty() {
                    let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                    row.push(String::from_utf8(rest[4..4 + len].to_vec()).unwrap());
                    rest = &rest[4 + len..];
                }
            }
            (b'E', body) => panic!("the query failed: {:?}", refused(&body)),
            (b'Z', _) => break,
            _ => {}
        }
    }
    let [current_user, superuser] = <[String; 2]>::try_from(row).unwrap();
    Outcome::Session {
        current_user,
        superuser: superuser == "true",
    }
}

#[tokio::test]
async fn a_valid_token_opens_a_session_as_the_role_over_verified_tls() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let client = connect(&gate, ROLE, &token).await.unwrap();
    assert_eq!(current_user(&client).await, ROLE);

    let sessions = gate.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].role, ROLE);
    assert_eq!(sessions[0].oid, OID);
    assert_eq!(sessions[0].token, TokenFingerprint::of(&token));
    assert!(!format!("{:?}", sessions[0]).contains(&token));
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions[0].backend_pid, Some(pid));
}

#[tokio::test]
async fn direct_tls_negotiation_is_accepted_too() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let (client, connection) = config(&gate, ROLE, &token)
        .ssl_negotiation(SslNegotiation::Direct)
        .connect(tls(&gate))
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(current_user(&client).await, ROLE);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_azures_sqlstates_and_messages() {
    let gate = gate().await;
    let issuer = gate.issuer().clone();
    let now = epoch_secs(SystemTime::now());
    let auth_failed = format!("password authentication failed for user \"{ROLE}\"");

    let mut expired = Claims::new(OID, hour());
    expired.exp = now - 600;
    let mut not_yet = Claims::new(OID, hour());
    not_yet.nbf = now + 600;
    let mut audience = Claims::new(OID, hour());
    audience.aud = "https://management.azure.com".into();
    let mut tenant = Claims::new(OID, hour());
    tenant.tid = "00000000-0000-0000-0000-000000000000".into();
    tenant.iss = format!("https://sts.windows.net/{}/", tenant.tid);
    let cases = [
        (
            "expired",
            issuer.sign(&expired),
            "28000",
            "The access token has expired. Please acquire a new token and retry.".to_string(),
            RejectReason::Expired,
        ),
        (
            "wrong audience",
            issuer.sign(&audience),
            "28000",
            "The access token does not have a valid audience claim. Please acquire a new token for the \
             resource \"https://ossrdbms-aad.database.windows.net\"."
                .to_string(),
            RejectReason::WrongAudience,
        ),
        (
            "not yet valid",
            issuer.sign(&not_yet),
            "28P01",
            auth_failed.clone(),
            RejectReason::NotYetValid,
        ),
        (
            "badly signed",
            issuer.sign_untrusted(&Claims::new(OID, hour())),
            "28P01",
            auth_failed.clone(),
            RejectReason::BadSignature,
        ),
        (
            "wrong tenant",
            issuer.sign(&tenant),
            "28P01",
            auth_failed.clone(),
            RejectReason::WrongIssuer,
        ),
        (
            "oid mismatch",
            issuer.sign(&Claims::new("99999999-0000-0000-0000-000000000000", hour())),
            "28P01",
            auth_failed.clone(),
            RejectReason::OidMismatch,
        ),
        (
            "plain password",
            "hunter2".to_string(),
            "28P01",
            auth_failed.clone(),
            RejectReason::NotAJwt,
        ),
    ];
    for (case, password, code, message, reason) in &cases {
        let (severity, got_code, got_message) = refusal(&gate, ROLE, password).await;
        assert_eq!(severity, "FATAL", "{case}");
        assert_eq!((got_code.as_str(), &got_message), (*code, message), "{case}");
        assert_eq!(gate.stats().rejected(*reason), 1, "{case}");
    }

    let (_, code, message) = refusal(&gate, "nobody", &token(&gate, OID, hour())).await;
    assert_eq!(code, "28P01");
    assert_eq!(message, "password authentication failed for user \"nobody\"");

    let stats = gate.stats();
    assert_eq!(stats.rejected(RejectReason::UnknownPrincipal), 1);
    assert_eq!(stats.rejected_total(), cases.len() as u64 + 1);
    assert_eq!(stats.accepted, 0);
    let last = gate.rejections().pop().unwrap();
    assert_eq!(last.role.as_deref(), Some("nobody"));
    assert_eq!(last.reason, RejectReason::UnknownPrincipal);
}

#[tokio::test]
async fn a_client_without_tls_gets_the_pg_hba_error() {
    let gate = gate().await;
    let err = config(&gate, ROLE, &token(&gate, OID, hour()))
        .ssl_mode(SslMode::Disable)
        .connect(tokio_postgres::NoTls)
        .await
        .map(|_| ())
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28000");
    assert_eq!(
        db.message(),
        format!(
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"{ROLE}\", database \"postgres\", SSL off"
        )
    );
    assert_eq!(gate.stats().rejected(RejectReason::NoTls), 1);
}

#[tokio::test]
async fn an_open_session_outlives_its_token_but_a_new_login_with_it_fails() {
    // Expiry has 1 s granularity: with 1 s skew a 5 s token is good for at least 5 s (the sign-in below
    // must come within them) and refused after 7 s (the sleep, which never ends early, waits them out).
    let gate = gate_with(Duration::from_secs(1)).await;
    let lifetime = Duration::from_secs(5);
    // Measured, not assumed: a sign-in that a busy machine delayed until the token's 5 s were over is
    // refused as expired; then (and only then) mint another token and sign in again.
    let mut late = 0;
    let (token, client) = tokio::time::timeout(HANG, async {
        loop {
            let minted = Instant::now();
            let token = token(&gate, OID, lifetime);
            match connect(&gate, ROLE, &token).await {
                Ok(client) => break (token, client),
                Err(e)
                    if minted.elapsed() >= lifetime
                        && e.as_db_error()
                            .is_some_and(|db| db.message().starts_with("The access token has expired.")) =>
                {
                    eprintln!(
                        "the sign-in came {:?} after minting ({e}); minting again",
                        minted.elapsed()
                    );
                    late += 1;
                }
                Err(e) => panic!("a sign-in within the token's lifetime failed: {e}"),
            }
        }
    })
    .await
    .expect("a sign-in within the token's lifetime, not a hang");
    tokio::time::sleep(Duration::from_secs(7)).await;

    // In this order: the token is refused to a new login, and after that the session it opened still
    // answers.
    let (_, code, message) = refusal(&gate, ROLE, &token).await;
    assert_eq!(code, "28000");
    assert!(message.starts_with("The access token has expired."), "{message}");
    assert_eq!(
        gate.stats().rejected(RejectReason::Expired),
        1 + late,
        "the new login, besides {late} sign-ins too late for their tokens"
    );
    assert_eq!(current_user(&client).await, ROLE);
    assert_eq!(
        gate.sessions().len(),
        1,
        "the session signed in with the token, before it expired"
    );
}

#[tokio::test]
async fn a_token_over_4_kb_is_accepted() {
    let gate = gate().await;
    let claims = Claims::new(OID, hour()).padded_to(6000);
    let token = gate.issuer().sign(&claims);
    assert!(token.len() > 4096, "{}", token.len());
    let client = connect(&gate, ROLE, &token).await.unwrap();
    assert_eq!(current_user(&client).await, ROLE);
    assert_eq!(gate.sessions()[0].token.len, token.len());
}

#[tokio::test]
async fn a_revoked_principal_cannot_sign_in_again_while_open_sessions_stay() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let open = connect(&gate, ROLE, &token).await.unwrap();
    assert!(gate.revoke_principal(ROLE));
    assert!(!gate.revoke_principal("never-registered"));

    let (_, code, _) = refusal(&gate, ROLE, &token).await;
    assert_eq!(code, "28P01");
    assert_eq!(gate.stats().rejected(RejectReason::Revoked), 1);
    assert_eq!(current_user(&open).await, ROLE);

    // Re-registering restores sign-in.
    gate.create_principal(ROLE, OID, PrincipalKind::Service)
        .await
        .unwrap();
    connect(&gate, ROLE, &token).await.unwrap();
}

#[tokio::test]
async fn terminate_sessions_closes_that_roles_sessions_and_new_ones_work() {
    let gate = gate().await;
    gate.create_principal("bystander", "oid-b", PrincipalKind::User)
        .await
        .unwrap();
    let token = token(&gate, OID, hour());
    let a = connect(&gate, ROLE, &token).await.unwrap();
    let b = connect(&gate, ROLE, &token).await.unwrap();
    let other = connect(&gate, "bystander", &self::token(&gate, "oid-b", hour()))
        .await
        .unwrap();
    assert_eq!(gate.stats().active, 3);

    assert_eq!(gate.terminate_sessions(ROLE).await.unwrap(), 2);
    assert!(a.query_one("SELECT 1", &[]).await.is_err());
    assert!(b.query_one("SELECT 1", &[]).await.is_err());
    assert_eq!(current_user(&other).await, "bystander");
    eventually("relays to close", || gate.stats().active == 1).await;
    let again = connect(&gate, ROLE, &token).await.unwrap();
    assert_eq!(current_user(&again).await, ROLE);
}

#[tokio::test]
async fn restart_upstream_ends_sessions_and_new_ones_work() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let before = connect(&gate, ROLE, &token).await.unwrap();
    gate.restart_upstream().await.unwrap();
    assert!(before.query_one("SELECT 1", &[]).await.is_err());
    let after = connect(&gate, ROLE, &token).await.unwrap();
    assert_eq!(current_user(&after).await, ROLE);
}

#[tokio::test]
async fn a_paused_gate_lets_connections_hang_until_resumed() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    gate.pause_accepting(true);
    // A quiet window: a paused gate never answers, however long the window or busy the machine.
    let attempt = tokio::time::timeout(Duration::from_millis(500), connect(&gate, ROLE, &token)).await;
    assert!(attempt.is_err(), "a paused gate must not answer");
    gate.pause_accepting(false);
    let client = tokio::time::timeout(HANG, connect(&gate, ROLE, &token))
        .await
        .expect("a resumed gate answers")
        .unwrap();
    assert_eq!(current_user(&client).await, ROLE);
}

#[tokio::test]
async fn a_database_the_server_lacks_gets_the_servers_own_error() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let err = config(&gate, ROLE, &token)
        .dbname("no_such_db")
        .connect(tls(&gate))
        .await
        .map(|_| ())
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "3D000");
    assert_eq!(gate.stats().rejected(RejectReason::Upstream), 1);
}

#[tokio::test]
async fn a_100_mb_result_is_relayed_intact() {
    let gate = gate().await;
    let client = connect(&gate, ROLE, &token(&gate, OID, hour())).await.unwrap();
    let rows = client
        .query_raw(
            "SELECT repeat('x', 1000) FROM generate_series(1, 100000)",
            std::iter::empty::<&(dyn tokio_postgres::types::ToSql + Sync)>(),
        )
        .await
        .unwrap();
    let (count, bytes) = rows
        .try_fold((0u64, 0u64), |(n, b), row| async move {
            let s: &str = row.get(0);
            assert!(s.bytes().all(|c| c == b'x'));
            Ok((n + 1, b + s.len() as u64))
        })
        .await
        .unwrap();
    assert_eq!((count, bytes), (100_000, 100_000_000));
}

#[tokio::test]
async fn copy_in_and_out_round_trip_through_the_gate() {
    let gate = gate().await;
    let client = connect(&gate, ROLE, &token(&gate, OID, hour())).await.unwrap();
    client
        .batch_execute("CREATE TEMP TABLE items(id int, name text)")
        .await
        .unwrap();
    let data: String = (0..20_000).map(|i| format!("{i}\tname-{i}\n")).collect();
    let sink = client.copy_in("COPY items FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(data.clone())).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 20_000);

    let out = client
        .copy_out("COPY (SELECT * FROM items ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = out.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), data.into_bytes());
}

#[tokio::test]
async fn listen_notify_crosses_the_gate() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let (listener, mut connection) = config(&gate, ROLE, &token).connect(tls(&gate)).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let notifier = connect(&gate, ROLE, &token).await.unwrap();
    notifier.batch_execute("NOTIFY jobs, 'job-42'").await.unwrap();
    let got = tokio::time::timeout(HANG, rx.recv())
        .await
        .expect("a notification, not a hang");
    assert_eq!(got, Some(("jobs".to_string(), "job-42".to_string())));
}

#[tokio::test]
async fn a_cancel_request_reaches_the_server_through_the_gate() {
    let gate = gate().await;
    let client = connect(&gate, ROLE, &token(&gate, OID, hour())).await.unwrap();
    let cancel = client.cancel_token();
    // Ten minutes: within the hang bounds below, only the cancel can end it.
    let sleeper = tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(600)").await });

    let superuser = gate.upstream().superuser_client().await.unwrap();
    let deadline = Instant::now() + HANG;
    loop {
        let running: i64 = superuser
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if running == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "pg_sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel_query(tls(&gate)).await.unwrap();
    let result = tokio::time::timeout(HANG, sleeper)
        .await
        .expect("the cancelled query returns")
        .unwrap();
    let err = result.unwrap_err();
    // query_canceled: the server ended the statement because the cancel request reached it.
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("57014"), "{err}");
}

#[tokio::test]
async fn two_hundred_concurrent_sessions() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let clients = futures_util::future::try_join_all((0..200).map(|_| connect(&gate, ROLE, &token)))
        .await
        .unwrap();
    let pids = futures_util::future::try_join_all(clients.iter().map(|c| async move {
        let row = c
            .query_one("SELECT pg_backend_pid(), current_user::text", &[])
            .await?;
        assert_eq!(row.get::<_, String>(1), ROLE);
        Ok::<i32, tokio_postgres::Error>(row.get(0))
    }))
    .await
    .unwrap();
    let distinct: std::collections::HashSet<i32> = pids.into_iter().collect();
    assert_eq!(distinct.len(), 200);
    let stats = gate.stats();
    assert_eq!((stats.accepted, stats.active), (200, 200));

    drop(clients);
    eventually("relays to close", || gate.stats().active == 0).await;
}

#[tokio::test]
async fn dropping_the_gate_closes_its_sessions_and_listener() {
    let gate = gate().await;
    let client = connect(&gate, ROLE, &token(&gate, OID, hour())).await.unwrap();
    let addr = gate.addr();
    let upstream = gate.upstream().clone();
    drop(gate);
    let result = tokio::time::timeout(HANG, client.query_one("SELECT 1", &[]))
        .await
        .expect("the relay closes");
    assert!(result.is_err());
    let deadline = Instant::now() + HANG;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the gate's port still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(upstream);
}

#[tokio::test]
async fn a_repeated_user_key_signs_in_as_the_role_the_gate_checked() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    // PostgreSQL takes the last `user`: a gate that checked another one than it forwards would let any
    // holder of a token sign in as the superuser.
    for params in [
        [("user", ROLE), ("database", "postgres"), ("user", "postgres")],
        [("user", "postgres"), ("database", "postgres"), ("user", ROLE)],
    ] {
        let outcome = sign_in_by_hand(&gate, &startup(&params), &token).await;
        match &outcome {
            Outcome::Refused { .. } => {}
            Outcome::Session {
                current_user,
                superuser,
            } => {
                assert_eq!(current_user, ROLE, "{params:?}");
                assert!(!superuser, "{params:?}");
            }
        }
    }
    assert!(gate.sessions().iter().all(|s| s.role == ROLE));
}

#[tokio::test]
async fn startup_parameters_cannot_switch_the_session_to_another_role() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    for extra in [
        ("options", "-c role=postgres"),
        ("options", "-c session_authorization=postgres"),
        ("role", "postgres"),
        ("session_authorization", "postgres"),
    ] {
        let packet = startup(&[("user", ROLE), ("database", "postgres"), extra]);
        match sign_in_by_hand(&gate, &packet, &token).await {
            Outcome::Refused { .. } => {}
            Outcome::Session {
                current_user,
                superuser,
            } => {
                assert_eq!(current_user, ROLE, "{extra:?}");
                assert!(!superuser, "{extra:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_startup_packet_not_ending_in_its_terminator_is_refused_with_08p01() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    let signed_in = pairs(&[("user", ROLE), ("database", "postgres")]);
    let with = |tail: &[u8]| [signed_in.as_slice(), tail].concat();
    let cases = [
        ("a name after the terminator", with(b"\0user\0postgres\0")),
        (
            "a name and value after the terminator",
            with(b"\0options\0-c role=postgres\0\0"),
        ),
        ("no terminator", with(b"")),
        ("a last name without a value", with(b"options\0")),
        ("a last value without its NUL", with(b"user\0postgres")),
    ];
    for (case, body) in &cases {
        let outcome = sign_in_by_hand(&gate, &first_bytes(PROTOCOL_3, body), &token).await;
        assert_eq!(
            outcome,
            Outcome::Refused {
                code: "08P01".into(),
                message: "invalid startup packet layout: expected terminator as last byte".into(),
            },
            "{case}"
        );
    }
    assert_eq!(gate.stats().rejected(RejectReason::Protocol), cases.len() as u64);
    assert_eq!(gate.stats().accepted, 0);
}

#[tokio::test]
async fn a_replication_connection_is_refused_by_the_gate_itself() {
    let gate = gate().await;
    let token = token(&gate, OID, hour());
    for value in ["true", "database", "on"] {
        let packet = startup(&[("user", ROLE), ("database", "postgres"), ("replication", value)]);
        match sign_in_by_hand(&gate, &packet, &token).await {
            Outcome::Refused { message, .. } => {
                assert!(message.contains("replication"), "{value}: {message}")
            }
            other => panic!("replication={value} was let through: {other:?}"),
        }
    }
}
