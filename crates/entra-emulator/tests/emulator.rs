//! `Emulator`: the fake identity, the throwaway server and the gate started together, driven the way a
//! client would drive Azure: fetch a token over HTTP, sign in over verify-full TLS.

mod common;
#[path = "common/report.rs"]
mod report;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use entra_emulator::jwt::epoch_secs;
use entra_emulator::{Claims, Emulator, ManagedIdentity, RejectReason, OSSRDBMS_RESOURCE};
use serde_json::Value;
use tokio_postgres::config::SslMode;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Upper bound for anything that might hang; far above what a passing test takes, even on a busy machine.
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn start(builder: entra_emulator::EmulatorBuilder) -> Emulator {
    builder
        .start()
        .await
        .unwrap_or_else(|e| panic!("{}", report::report(&e)))
}

/// Trust exactly the certificates in the PEM file at `path`.
fn roots_from(path: &Path) -> rustls::RootCertStore {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    common::roots(&pem)
}

/// An HTTP client trusting `roots` (reqwest is built without a default TLS provider).
fn http(roots: rustls::RootCertStore) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(HANG_GUARD)
        .tls_backend_preconfigured(common::rustls_config(roots))
        .build()
        .unwrap()
}

fn vars(list: Vec<(String, String)>) -> HashMap<String, String> {
    let len = list.len();
    let map: HashMap<_, _> = list.into_iter().collect();
    assert_eq!(map.len(), len, "a variable is set twice");
    map
}

/// `GET {imds_base}/metadata/identity/oauth2/token` as a VM client does; the access token.
async fn imds_token(client: &reqwest::Client, imds_base: &str, extra: &[(&str, &str)]) -> String {
    let mut query = vec![("api-version", "2018-02-01"), ("resource", OSSRDBMS_RESOURCE)];
    query.extend_from_slice(extra);
    let response = client
        .get(format!("{imds_base}/metadata/identity/oauth2/token"))
        .header("Metadata", "true")
        .query(&query)
        .send()
        .await
        .unwrap();
    access_token(response).await
}

async fn access_token(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(status, 200, "token request refused: {body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// The connection settings of libpq's variables in `env`.
struct Target {
    host: String,
    port: u16,
    dbname: String,
    user: String,
    ca: std::path::PathBuf,
}

impl Target {
    fn of(emulator: &Emulator) -> Self {
        Target {
            host: emulator.host().to_string(),
            port: emulator.port(),
            dbname: emulator.dbname().to_string(),
            user: emulator.user().to_string(),
            ca: emulator.ca_path().to_path_buf(),
        }
    }

    fn from_env(env: &HashMap<String, String>) -> Self {
        assert_eq!(env["PGSSLMODE"], "verify-full");
        Target {
            host: env["PGHOST"].clone(),
            port: env["PGPORT"].parse().unwrap(),
            dbname: env["PGDATABASE"].clone(),
            user: env["PGUSER"].clone(),
            ca: env["PGSSLROOTCERT"].clone().into(),
        }
    }

    fn with_user(mut self, user: &str) -> Self {
        self.user = user.to_string();
        self
    }

    /// Signs in with `token` as the password, verifying the server for `host` against the CA file only.
    async fn connect(&self, token: &str) -> Result<Client, tokio_postgres::Error> {
        let tls = MakeRustlsConnect::new(common::rustls_config(roots_from(&self.ca)));
        let (client, connection) = tokio_postgres::Config::new()
            .host(&self.host)
            .hostaddr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .port(self.port)
            .user(&self.user)
            .password(token)
            .dbname(&self.dbname)
            .ssl_mode(SslMode::Require)
            .connect_timeout(HANG_GUARD)
            .connect(tls)
            .await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

/// (current_user, current_database()) of a session.
async fn whoami(client: &Client) -> (String, String) {
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The SQLSTATE of a refused sign-in.
fn refusal(result: Result<Client, tokio_postgres::Error>) -> String {
    let err = result.map(|_| ()).unwrap_err();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {err}"));
    db.code().code().to_string()
}

#[tokio::test]
async fn an_imds_token_signs_in_to_the_database_as_the_principal_over_verify_full() {
    let emulator = start(Emulator::builder()).await;
    assert_eq!(emulator.host(), "localhost");
    assert_eq!(emulator.port(), emulator.gate().port());
    assert_eq!(emulator.user(), "entra-app");
    assert_eq!(emulator.dbname(), "appdb");
    assert_eq!(emulator.principal(), &ManagedIdentity::new("entra-app"));

    let token = imds_token(
        &http(rustls::RootCertStore::empty()),
        &emulator.identity().imds_authority(),
        &[],
    )
    .await;
    let claims = emulator
        .identity()
        .issuer()
        .verify(&token, OSSRDBMS_RESOURCE, Duration::ZERO)
        .unwrap();
    assert_eq!(claims.oid, emulator.principal().object_id);

    let client = Target::of(&emulator).connect(&token).await.unwrap();
    assert_eq!(
        whoami(&client).await,
        (emulator.user().to_string(), emulator.dbname().to_string())
    );
    let owner: String = client
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, emulator.user());
    // The session went through the gate, not around it.
    assert_eq!(emulator.gate().stats().accepted, 1);
}

#[tokio::test]
async fn env_vars_alone_lead_a_client_to_a_session() {
    let emulator = start(
        Emulator::builder()
            .principal_name("orders-api")
            .database("orders"),
    )
    .await;
    let env = vars(emulator.env_vars());
    let port = emulator.port().to_string();
    let ca = emulator.ca_path().display().to_string();
    let expected = [
        (
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            emulator.identity().imds_authority(),
        ),
        ("PGHOST", "localhost".to_string()),
        ("PGPORT", port.clone()),
        ("PGDATABASE", "orders".to_string()),
        ("PGUSER", "orders-api".to_string()),
        ("PGSSLMODE", "verify-full".to_string()),
        ("PGSSLROOTCERT", ca),
        ("AZURE_POSTGRESQL_HOST", "localhost".to_string()),
        ("AZURE_POSTGRESQL_PORT", port),
        ("AZURE_POSTGRESQL_DATABASE", "orders".to_string()),
        ("AZURE_POSTGRESQL_USER", "orders-api".to_string()),
        ("AZURE_POSTGRESQL_SSL", "true".to_string()),
    ];
    for (name, value) in &expected {
        assert_eq!(env.get(*name), Some(value), "{name}");
    }
    assert_eq!(env.len(), expected.len(), "unexpected variables: {env:?}");
    assert_eq!(
        std::fs::read_to_string(emulator.ca_path()).unwrap(),
        emulator.ca_pem()
    );

    let token = imds_token(
        &http(rustls::RootCertStore::empty()),
        &env["AZURE_POD_IDENTITY_AUTHORITY_HOST"],
        &[],
    )
    .await;
    let client = Target::from_env(&env).connect(&token).await.unwrap();
    assert_eq!(
        whoami(&client).await,
        ("orders-api".to_string(), "orders".to_string())
    );
}

#[tokio::test]
async fn shell_exports_survive_a_posix_shell_with_hostile_values() {
    let database = "it's \"odd\" $(touch /tmp/pwned) `x` \\n";
    let emulator = start(Emulator::builder().database(database)).await;
    let exports = emulator.shell_exports();
    let env = emulator.env_vars();
    assert_eq!(exports.lines().count(), env.len());
    assert!(exports.lines().all(|l| l.starts_with("export ")), "{exports}");

    // Each variable on its own line, NUL-separated so values may hold anything but NUL.
    let mut script = exports.clone();
    for (name, _) in &env {
        script.push_str(&format!("printf '%s\\0' \"${name}\"\n"));
    }
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .split_terminator('\0')
        .map(str::to_string)
        .collect();
    let values: Vec<String> = env.into_iter().map(|(_, v)| v).collect();
    assert_eq!(printed, values);
    assert!(values.iter().any(|v| v == database));
}

#[tokio::test]
async fn extra_and_runtime_added_principals_can_sign_in() {
    let reporting = ManagedIdentity::new("reporting");
    let emulator = start(Emulator::builder().extra_principal(reporting.clone())).await;
    let client = http(rustls::RootCertStore::empty());
    let authority = emulator.identity().imds_authority();

    let token = imds_token(&client, &authority, &[("client_id", &reporting.client_id)]).await;
    let session = Target::of(&emulator)
        .with_user("reporting")
        .connect(&token)
        .await
        .unwrap();
    assert_eq!(whoami(&session).await.0, "reporting");

    let late = ManagedIdentity::new("late-joiner");
    let unassigned = client
        .get(emulator.identity().imds_endpoint())
        .header("Metadata", "true")
        .query(&[
            ("api-version", "2018-02-01"),
            ("resource", OSSRDBMS_RESOURCE),
            ("client_id", &late.client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unassigned.status(), 400);
    let target = Target::of(&emulator).with_user("late-joiner");
    assert_eq!(refusal(target.connect(&emulator.token_for(&late)).await), "28P01");

    emulator.add_principal(late.clone()).await.unwrap();
    let token = imds_token(&client, &authority, &[("client_id", &late.client_id)]).await;
    let session = target.connect(&token).await.unwrap();
    assert_eq!(
        whoami(&session).await,
        ("late-joiner".to_string(), "appdb".to_string())
    );
}

#[tokio::test]
async fn token_for_signs_in_a_known_identity_and_not_an_unknown_one() {
    let emulator = start(Emulator::builder()).await;
    let target = Target::of(&emulator);
    let own = emulator.token_for(emulator.principal());
    let session = target.connect(&own).await.unwrap();
    assert_eq!(whoami(&session).await.0, emulator.user());

    let stranger = ManagedIdentity::new("stranger");
    let token = emulator.token_for(&stranger);
    // As its own name (no such principal) and as the principal (object id mismatch).
    assert_eq!(
        refusal(Target::of(&emulator).with_user("stranger").connect(&token).await),
        "28P01"
    );
    assert_eq!(refusal(target.connect(&token).await), "28P01");
    let stats = emulator.gate().stats();
    assert_eq!(stats.rejected(RejectReason::UnknownPrincipal), 1);
    assert_eq!(stats.rejected(RejectReason::OidMismatch), 1);
}

#[tokio::test]
async fn dropping_the_emulator_leaves_no_process_no_directory_and_no_listener() {
    let emulator = start(Emulator::builder()).await;
    let data_dir = emulator.postgres().data_dir().to_path_buf();
    let pg_root = data_dir.parent().unwrap().to_path_buf();
    let arc_dir = emulator.identity().arc_key_dir();
    let ca_path = emulator.ca_path().to_path_buf();
    let gate_port = emulator.port();
    let identity_url = emulator.identity().imds_endpoint();
    let session = Target::of(&emulator)
        .connect(&emulator.token_for(emulator.principal()))
        .await
        .unwrap();
    assert!(!common::processes_mentioning(&data_dir).is_empty());
    for dir in [&data_dir, &pg_root, &arc_dir, &ca_path] {
        assert!(dir.exists(), "{} should exist while running", dir.display());
    }

    drop(emulator);

    assert_eq!(common::processes_mentioning(&data_dir), Vec::<u32>::new());
    for dir in [&data_dir, &pg_root, &arc_dir, &ca_path] {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
    let closed = tokio::time::timeout(HANG_GUARD, session.query_one("SELECT 1", &[]))
        .await
        .expect("the relayed session should end, not hang");
    assert!(closed.is_err());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", gate_port))
        .await
        .is_err());
    let fake = http(rustls::RootCertStore::empty())
        .get(identity_url)
        .header("Metadata", "true")
        .send()
        .await;
    assert!(fake.is_err(), "the fake identity still answers");
}

/// With `on_caller_runtime` the gate's tasks live on this runtime: sessions work the same, and once the
/// runtime has dropped the aborted tasks nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_callers_runtime_it_works_and_cleans_up_after_its_tasks_end() {
    let emulator = start(Emulator::builder().on_caller_runtime(true)).await;
    let data_dir = emulator.postgres().data_dir().to_path_buf();
    let ca_path = emulator.ca_path().to_path_buf();
    let session = Target::of(&emulator)
        .connect(&emulator.token_for(emulator.principal()))
        .await
        .unwrap();
    assert_eq!(whoami(&session).await.0, emulator.user());
    drop(session);
    drop(emulator);

    // The aborted tasks held the server; they are dropped at the runtime's next turns.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while (!common::processes_mentioning(&data_dir).is_empty() || data_dir.exists())
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(common::processes_mentioning(&data_dir), Vec::<u32>::new());
    assert!(!data_dir.exists(), "{} is left behind", data_dir.display());
    assert!(!ca_path.exists(), "{} is left behind", ca_path.display());
}

#[tokio::test]
async fn app_service_env_vars_serve_an_app_service_style_request() {
    let emulator = start(Emulator::builder()).await;
    let env = vars(emulator.app_service_env_vars());
    assert!(!env.contains_key("AZURE_POD_IDENTITY_AUTHORITY_HOST"));
    assert_eq!(
        env["IDENTITY_ENDPOINT"],
        emulator.identity().app_service_endpoint()
    );
    assert_eq!(env["IDENTITY_HEADER"], emulator.identity().identity_header());
    let connection: HashMap<_, _> = vars(emulator.env_vars())
        .into_iter()
        .filter(|(k, _)| k != "AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .collect();
    for (name, value) in &connection {
        assert_eq!(env.get(name), Some(value), "{name}");
    }

    let response = http(rustls::RootCertStore::empty())
        .get(&env["IDENTITY_ENDPOINT"])
        .header("X-IDENTITY-HEADER", &env["IDENTITY_HEADER"])
        .query(&[("api-version", "2019-08-01"), ("resource", OSSRDBMS_RESOURCE)])
        .send()
        .await
        .unwrap();
    let token = access_token(response).await;
    let client = Target::from_env(&env).connect(&token).await.unwrap();
    assert_eq!(whoami(&client).await.0, emulator.user());
}

#[tokio::test]
async fn with_identity_tls_the_ca_file_verifies_the_token_endpoint_and_the_gate() {
    let emulator = start(Emulator::builder().identity_tls(true)).await;
    let authority = vars(emulator.env_vars())["AZURE_POD_IDENTITY_AUTHORITY_HOST"].clone();
    assert!(authority.starts_with("https://localhost:"), "{authority}");

    // Trusting only the database CA is not enough for the token endpoint.
    let untrusted = http(common::roots(emulator.postgres().ca_pem().as_bytes()))
        .get(format!("{authority}/metadata/identity/oauth2/token"))
        .send()
        .await;
    assert!(untrusted.is_err());

    let token = imds_token(&http(roots_from(emulator.ca_path())), &authority, &[]).await;
    let client = Target::of(&emulator).connect(&token).await.unwrap();
    assert_eq!(whoami(&client).await.0, emulator.user());
}

#[tokio::test]
async fn token_lifetime_and_padding_shape_every_issued_token() {
    let lifetime = Duration::from_secs(120);
    let emulator = start(Emulator::builder().token_lifetime(lifetime).token_padding(6000)).await;
    let fetched = imds_token(
        &http(rustls::RootCertStore::empty()),
        &emulator.identity().imds_authority(),
        &[],
    )
    .await;
    let made = emulator.token_for(emulator.principal());
    for token in [&fetched, &made] {
        assert!(token.len() >= 6000, "{}", token.len());
        let claims = emulator
            .identity()
            .issuer()
            .verify(token, OSSRDBMS_RESOURCE, Duration::ZERO)
            .unwrap();
        assert_eq!(claims.exp - claims.iat, lifetime.as_secs());
        let session = Target::of(&emulator).connect(token).await.unwrap();
        assert_eq!(whoami(&session).await.0, emulator.user());
    }

    emulator.set_token_lifetime(Duration::from_secs(30));
    let claims = emulator
        .identity()
        .issuer()
        .verify(
            &emulator.token_for(emulator.principal()),
            OSSRDBMS_RESOURCE,
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 30);
}

#[tokio::test]
async fn the_gate_skew_and_server_settings_reach_their_parts() {
    let emulator = start(
        Emulator::builder()
            .gate_skew(Duration::ZERO)
            .postgres_setting("work_mem", "'7MB'"),
    )
    .await;
    // Expired 30 s ago: inside the gate's default 60 s of skew, outside zero.
    let mut claims = Claims::new(&emulator.principal().object_id, Duration::from_secs(60));
    claims.exp = epoch_secs(SystemTime::now()) - 30;
    let expired = emulator.identity().issuer().sign(&claims);
    assert_eq!(refusal(Target::of(&emulator).connect(&expired).await), "28000");
    assert_eq!(emulator.gate().stats().rejected(RejectReason::Expired), 1);

    let session = Target::of(&emulator)
        .connect(&emulator.token_for(emulator.principal()))
        .await
        .unwrap();
    let work_mem: String = session.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(work_mem, "7MB");
}
