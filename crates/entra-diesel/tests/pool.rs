//! diesel-async pools through the emulator: token rotations under load, a connection that outlives its
//! token, a refused token, and a server whose certificate is not trusted. The tests wait for events (a
//! token published, a session signed in) under hang bounds, and assert what happened and in which
//! order, never that it happened within some time.

use std::time::{Duration, SystemTime};

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use entra_diesel::EntraDieselPoolBuilder;
use entra_emulator::{Claims, Emulator, Fault, TokenFingerprint, OSSRDBMS_RESOURCE};
use entra_testkit::{bounded, emulator, rotations_under_load, until};
use entra_token::Env;

/// The shortest load of the rotation tests: ten 3 s tokens' worth.
const LOAD: Duration = Duration::from_secs(30);

#[derive(QueryableByName, Debug)]
struct Doubled {
    #[diesel(sql_type = BigInt)]
    doubled: i64,
}

#[derive(QueryableByName, Debug)]
struct User {
    #[diesel(sql_type = Text)]
    name: String,
}

/// A pool of the emulator's connections whose waits only catch a hang.
fn builder(emulator: &Emulator) -> EntraDieselPoolBuilder {
    EntraDieselPoolBuilder::new(entra_testkit::config(emulator)).wait_timeout(Some(Duration::from_secs(30)))
}

async fn doubled(connection: &mut AsyncPgConnection, v: i64) -> Result<i64, String> {
    let row: Doubled = diesel::sql_query("SELECT $1::int8 * 2 AS doubled")
        .bind::<BigInt, _>(v)
        .get_result(connection)
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.doubled)
}

async fn current_user(connection: &mut AsyncPgConnection) -> String {
    let row: User = diesel::sql_query("SELECT current_user::text AS name")
        .get_result(connection)
        .await
        .expect("a query");
    row.name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_under_load_cost_no_query_and_one_token_request_each() {
    let emu = emulator(Duration::from_secs(3)).await;
    let pool = builder(&emu)
        .max_size(4)
        .max_lifetime(Some(Duration::from_millis(500)))
        .build_deadpool()
        .await
        .expect("builds");
    let tokens = pool.tokens().expect("token mode").clone();
    // Ten 3 s tokens' worth of load, and then until new sessions have signed in with eight of the
    // refresher's tokens and 500 queries have run.
    let run = rotations_under_load(&emu, &tokens, 8, LOAD, 8, 500, move |v| {
        let pool = pool.clone();
        async move {
            let mut connection = pool.get().await.map_err(|e| e.to_string())?;
            doubled(&mut connection, v).await
        }
    })
    .await;
    let used = run.tokens_used();
    eprintln!(
        "queries={} failed={} tokens={} requests={} sessions={} tokens used={}",
        run.queries,
        run.failed,
        run.status.refreshes,
        run.requests,
        run.sessions.len(),
        used.len()
    );
    assert_eq!(run.failed, 0, "no query may fail");
    assert!(run.queries > 500);
    assert!(run.status.refreshes >= 8, "eight tokens used: {:?}", run.status);
    assert_eq!(
        run.requests, run.status.refreshes,
        "one token request per rotation"
    );
    assert!(
        used.is_subset(&run.published),
        "every session signed in with a token the refresher published"
    );
    assert!(
        used.len() >= 8,
        "new connections followed the rotations: {}",
        used.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_outlives_its_token_and_the_next_one_signs_in_with_the_new_token() {
    let emu = emulator(Duration::from_secs(3)).await;
    let pool = builder(&emu)
        .max_size(2)
        .max_lifetime(None)
        .build_deadpool()
        .await
        .expect("builds");
    let tokens = pool.tokens().expect("token mode").clone();
    let before = tokens.current().expect("a token");
    let mut held = bounded(60, "a connection", pool.get()).await.expect("signs in");
    // The session signed in with `before` or a newer token, none newer than `after`; tokens issued
    // later expire later.
    let after = tokens.current().expect("a token");
    assert_eq!(doubled(&mut held, 21).await, Ok(42));
    until(60, "the held connection's token to expire", || {
        SystemTime::now() > after.expires_on()
    })
    .await;
    assert_eq!(
        doubled(&mut held, 5).await,
        Ok(10),
        "an open session outlives its token"
    );
    let mut fresh = bounded(60, "a second connection", pool.get())
        .await
        .expect("signs in");
    assert_eq!(current_user(&mut fresh).await, emu.user());
    let sessions = emu.gate().sessions();
    assert_eq!(sessions.len(), 2, "one session each");
    let old = [
        TokenFingerprint::of(before.secret()),
        TokenFingerprint::of(after.secret()),
    ];
    assert!(
        old.contains(&sessions[0].token),
        "the first session used a token of its time"
    );
    assert!(
        !old.contains(&sessions[1].token),
        "the second connection signed in with a token issued after the first one's expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_once_and_the_connection_opens() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // The endpoint first hands out a token the server refuses (wrong audience), then good ones.
    let mut claims = Claims::managed_identity(emu.principal(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emu.identity().issuer().sign(&claims);
    emu.identity().push_faults([Fault::token(
        &wrong_audience,
        Duration::from_secs(3600),
        OSSRDBMS_RESOURCE,
    )]);
    let pool = builder(&emu).max_size(2).build_deadpool().await.expect("builds");
    // Older than min_invalidate_interval (200 ms): a sleep never ends early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut connection = bounded(60, "a connection", pool.get()).await.expect("recovered");
    assert_eq!(current_user(&mut connection).await, emu.user());
    assert_eq!(emu.identity().token_requests(), 2, "exactly one refetch");
    assert_eq!(emu.gate().rejections().len(), 1, "one refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_server_whose_ca_is_not_trusted_and_sends_no_token() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // Without PGSSLROOTCERT only the built-in roots are trusted; the emulator's CA is not one of them.
    let env = emu.env_vars().into_iter().filter(|(k, _)| k != "PGSSLROOTCERT");
    let config = entra_testkit::config(&emu).env(Env::from_pairs(env));
    let pool = EntraDieselPoolBuilder::new(config)
        .build_deadpool()
        .await
        .expect("builds (no connection yet)");
    let Err(err) = bounded(60, "a refusal", pool.get()).await else {
        panic!("a server whose CA is not trusted was connected to");
    };
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains("UnknownIssuer"),
        "the refusal names the certificate: {text}"
    );
    assert_eq!(emu.gate().stats().accepted, 0);
    assert!(emu.gate().rejections().is_empty(), "no password reached the gate");
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bb8_flavour_signs_in_and_queries_with_diesel() {
    let emu = emulator(Duration::from_secs(3600)).await;
    let pool = builder(&emu).max_size(2).build_bb8().await.expect("builds");
    let mut connection = bounded(60, "a connection", pool.get()).await.expect("signs in");
    assert_eq!(current_user(&mut connection).await, emu.user());
    assert_eq!(doubled(&mut connection, 4).await, Ok(8));
}

#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bb8_flavour_replaces_a_refused_token_once_and_the_connection_opens() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // The endpoint first hands out a token the server refuses (wrong audience), then good ones.
    let mut claims = Claims::managed_identity(emu.principal(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emu.identity().issuer().sign(&claims);
    emu.identity().push_faults([Fault::token(
        &wrong_audience,
        Duration::from_secs(3600),
        OSSRDBMS_RESOURCE,
    )]);
    let pool = builder(&emu).max_size(1).build_bb8().await.expect("builds");
    // Older than min_invalidate_interval (200 ms): a sleep never ends early.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut connection = bounded(60, "a connection", pool.get()).await.expect("recovered");
    assert_eq!(current_user(&mut connection).await, emu.user());
    assert_eq!(emu.identity().token_requests(), 2, "exactly one refetch");
    assert_eq!(emu.gate().rejections().len(), 1, "one refusal");
}
