//! The fake as a whole, whatever the endpoint: the token-shape settings, HTTP/1.1 keep-alive, TLS mode
//! and shutdown when the last handle is dropped.

mod common;

use std::time::Duration;

use common::{
    claims_of, client, imds, imds_get, imds_json, json_of, number_string, secret_grant, start, tls_client,
    HANG_GUARD, IMDS_QUERY, SCOPE,
};
use entra_emulator::identity::{FakeIdentity, Fault, ManagedIdentity, NumberFormat, ServicePrincipal};
use entra_emulator::{OSSRDBMS_RESOURCE, TEST_TENANT_ID};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The loopback port the fake listens on.
fn port_of(fake: &FakeIdentity) -> u16 {
    fake.base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u16>()
        .unwrap()
}

// ---------------------------------------------------------------- Token shape

#[tokio::test]
async fn token_padding_and_lifetime_apply_to_later_tokens() {
    let fake = FakeIdentity::builder().token_padding(5000).start().await.unwrap();
    let (_, body) = imds_json(&fake, &[]).await;
    assert!(body["access_token"].as_str().unwrap().len() >= 5000);
    fake.set_token_padding(0);
    fake.set_token_lifetime(Duration::from_secs(120));
    let (_, body) = imds_json(&fake, &[]).await;
    assert!(body["access_token"].as_str().unwrap().len() < 4000);
    let expires_in = number_string(&body, "expires_in");
    assert!((110..=120).contains(&expires_in), "{expires_in}");
}

#[tokio::test]
async fn number_format_switches_between_strings_numbers_and_dates() {
    let fake = start().await;
    fake.set_number_format(NumberFormat::Numbers);
    let (_, body) = imds_json(&fake, &[]).await;
    assert!(
        body["expires_on"].is_u64() && body["expires_in"].is_u64(),
        "{body}"
    );
    fake.set_number_format(NumberFormat::Dates);
    let (_, body) = imds_json(&fake, &[]).await;
    let date = body["expires_on"].as_str().unwrap();
    assert!(date.ends_with(" +00:00") && date.as_bytes()[2] == b'/', "{date}");
    // Strings overrides Entra too, which by spec answers numbers.
    fake.set_number_format(NumberFormat::Strings);
    let app = ServicePrincipal::with_secret("s", "pw");
    fake.add_app(app.clone());
    let (status, body) =
        json_of(secret_grant(&fake, TEST_TENANT_ID, &app.client_id, "pw", SCOPE).await).await;
    assert_eq!(status, 200);
    assert!(body["expires_in"].is_string(), "{body}");
}

// ---------------------------------------------------------------- The server

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let fake = start().await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port_of(&fake)))
        .await
        .unwrap();
    let request = "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fossrdbms-aad.database.windows.net HTTP/1.1\r\nHost: x\r\nMetadata: true\r\n\r\n";
    let last = "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream
        .write_all(format!("{request}{request}{last}").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(HANG_GUARD, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 404 Not Found").count(), 1);
    assert_eq!(fake.tokens_issued(), 2);
}

#[tokio::test]
async fn tls_mode_serves_https_for_localhost_with_its_own_ca() {
    let user = ManagedIdentity::new("tls-user");
    let fake = FakeIdentity::builder()
        .tls(true)
        .identity(user.clone())
        .start()
        .await
        .unwrap();
    assert!(fake.base_url().starts_with("https://localhost:"));
    let ca = fake.ca_pem().expect("CA with TLS on");
    let response = imds_get(&tls_client(&ca), &fake, &IMDS_QUERY)
        .query(&[("client_id", &user.client_id)])
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(&fake, &body, OSSRDBMS_RESOURCE).oid, user.object_id);
    // A client that does not trust the fake's CA cannot connect.
    let untrusting = client().get(fake.imds_endpoint()).send().await;
    assert!(untrusting.unwrap_err().is_connect());
    // Without TLS there is no CA.
    assert!(start().await.ca_pem().is_none());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_server_and_frees_its_port() {
    let fake = start().await;
    let keep = fake.clone();
    let port = port_of(&fake);
    let key_dir = fake.arc_key_dir();
    drop(fake);
    // A clone keeps it serving.
    assert_eq!(imds(&keep, &[]).await.status(), 200);
    // A held connection must not keep the server alive either.
    keep.push_faults([Fault::NoResponse]);
    let held = tokio::spawn(imds_get(&client(), &keep, &IMDS_QUERY).send());
    tokio::time::timeout(HANG_GUARD, async {
        while keep.token_requests() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the held request reaches the fake");
    drop(keep);
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => break,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("port {port} still taken: {e}"),
        }
    }
    let held = tokio::time::timeout(HANG_GUARD, held).await.unwrap().unwrap();
    assert!(!held.unwrap_err().is_timeout());
    assert!(!key_dir.exists());
}
