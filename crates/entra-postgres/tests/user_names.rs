//! The role a token stands for when no user is configured, for every shape of token Azure issues:
//! the token comes from the emulator (its identity endpoints, or its issuer with the claims Entra ID
//! puts there), and the name is read as the pool reads it, by the connection plan. Two tests then sign
//! in through the gate under the derived name.

use std::time::{Duration, SystemTime};

use entra_emulator::{
    Claims, Emulator, FakeIdentity, ManagedIdentity, PrincipalKind, ServicePrincipal, TEST_TENANT_ID,
};
use entra_postgres::{ConfigError, EntraConfig, NoTokenUser, PoolBuilder};
use entra_testkit::{bounded, http};
use entra_token::{AccessToken, Env, StaticSource};

const HOUR: Duration = Duration::from_secs(3600);

/// The settings a service has when nothing names its user: a server, and the identity endpoint.
fn no_user(identity_vars: Vec<(String, String)>) -> EntraConfig {
    let mut vars = identity_vars;
    vars.extend([
        ("PGHOST".to_string(), "db.postgres.database.azure.com".to_string()),
        ("PGDATABASE".to_string(), "orders".to_string()),
    ]);
    EntraConfig::from_env()
        .env(Env::from_pairs(vars))
        .http_options(http())
}

/// The role the plan settles on for `token` (what the pool signs in as).
fn role_for(token: &AccessToken) -> Result<String, ConfigError> {
    let plan = no_user(Vec::new()).plan().expect("a plan without a user");
    Ok(plan.with_role_from(token)?.role().unwrap_or_default().to_string())
}

/// A token for `identity` from a fake IMDS whose machine has it as its system-assigned identity.
async fn system_identity_token(identity: ManagedIdentity) -> AccessToken {
    let fake = FakeIdentity::builder()
        .system_identity(identity)
        .start()
        .await
        .expect("the fake identity endpoints start");
    let vars = vec![(
        "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
        fake.imds_authority(),
    )];
    bounded(60, "a token from the fake IMDS", no_user(vars).fetch_token())
        .await
        .expect("IMDS issues the system identity's token")
}

/// A token the emulator's issuer signed with `claims`.
fn signed(claims: &Claims) -> AccessToken {
    let issuer = entra_emulator::JwtIssuer::new();
    AccessToken::new(issuer.sign(claims), SystemTime::now() + HOUR)
}

fn system(name: &str, path: &str) -> ManagedIdentity {
    ManagedIdentity::system_assigned(name, &ManagedIdentity::resource_id_of(path))
}

#[tokio::test]
async fn a_user_assigned_identity_signs_in_under_its_own_name() {
    let identity = ManagedIdentity::new("orders-api");
    let fake = FakeIdentity::builder()
        .identity(identity.clone())
        .start()
        .await
        .expect("starts");
    let vars = vec![
        (
            "AZURE_POD_IDENTITY_AUTHORITY_HOST".to_string(),
            fake.imds_authority(),
        ),
        (
            "AZURE_POSTGRESQL_CLIENTID".to_string(),
            identity.client_id.clone(),
        ),
    ];
    let token = bounded(60, "a token", no_user(vars).fetch_token()).await.unwrap();
    assert_eq!(role_for(&token).unwrap(), "orders-api");
}

#[tokio::test]
async fn a_vm_system_identity_signs_in_under_the_vm_name() {
    let token = system_identity_token(system(
        "vm-orders-1",
        "Microsoft.Compute/virtualMachines/vm-orders-1",
    ))
    .await;
    assert_eq!(role_for(&token).unwrap(), "vm-orders-1");
}

#[tokio::test]
async fn a_scale_set_system_identity_signs_in_under_the_scale_set_name() {
    let token = system_identity_token(system(
        "vmss-orders",
        "Microsoft.Compute/virtualMachineScaleSets/vmss-orders",
    ))
    .await;
    assert_eq!(role_for(&token).unwrap(), "vmss-orders");
}

#[tokio::test]
async fn an_app_service_system_identity_signs_in_under_the_app_name() {
    let token = system_identity_token(system("orders-web", "Microsoft.Web/sites/orders-web")).await;
    assert_eq!(role_for(&token).unwrap(), "orders-web");
}

#[tokio::test]
async fn a_slot_system_identity_signs_in_as_app_slots_slot() {
    let token = system_identity_token(system(
        "orders-web/slots/staging",
        "Microsoft.Web/sites/orders-web/slots/staging",
    ))
    .await;
    assert_eq!(role_for(&token).unwrap(), "orders-web/slots/staging");
}

#[tokio::test]
async fn a_function_app_system_identity_signs_in_under_the_function_app_name() {
    // A function app is a Microsoft.Web site too.
    let token = system_identity_token(system("orders-func", "Microsoft.Web/sites/orders-func")).await;
    assert_eq!(role_for(&token).unwrap(), "orders-func");
}

#[test]
fn aks_workload_identity_federated_with_a_user_assigned_identity_signs_in_under_its_name() {
    // Entra ID's token for a user-assigned identity carries its resource id, whatever the credential
    // the workload presented (here a service account's federated token).
    let identity = ManagedIdentity::new("orders-worker");
    let token = signed(&Claims::managed_identity(&identity, HOUR));
    assert_eq!(role_for(&token).unwrap(), "orders-worker");
}

#[test]
fn aks_workload_identity_federated_with_an_app_registration_names_no_role() {
    let app = ServicePrincipal::federated("orders-app", "system:serviceaccount:orders:worker");
    let token = signed(&Claims::application(&app, HOUR));
    match role_for(&token) {
        Err(ConfigError::UserNotInToken(NoTokenUser::Application { app_id })) => {
            assert_eq!(app_id, app.client_id)
        }
        other => panic!("expected an application's token to name no role, got {other:?}"),
    }
}

#[test]
fn a_user_signs_in_under_the_user_principal_name() {
    let token = signed(&Claims::user("oid-ana", "ana@contoso.com", HOUR));
    assert_eq!(role_for(&token).unwrap(), "ana@contoso.com");
}

#[test]
fn a_guest_names_no_role_and_the_error_says_to_set_the_user() {
    let token = signed(&Claims::guest("oid-guest", "ana@outlook.com", HOUR));
    let err = role_for(&token).unwrap_err();
    match &err {
        ConfigError::UserNotInToken(NoTokenUser::Guest { home }) => {
            assert_eq!(home, "live.com#ana@outlook.com")
        }
        other => panic!("expected a guest's token to name no role, got {other:?}"),
    }
    let report = entra_postgres::report(&err);
    assert!(report.contains("PGUSER") && report.contains("guest"), "{report}");
}

#[tokio::test]
async fn a_service_principal_with_a_secret_names_no_role() {
    let app = ServicePrincipal::with_secret("orders-batch", "s3cret-value");
    // Entra ID's endpoint is HTTPS only, and so is the fake's when asked.
    let fake = FakeIdentity::builder()
        .tls(true)
        .app(app.clone())
        .start()
        .await
        .expect("starts");
    let ca = fake.ca_pem().expect("a CA for its TLS");
    let vars = vec![
        ("AZURE_AUTHORITY_HOST".to_string(), fake.authority_host()),
        (
            "AZURE_POSTGRESQL_TENANTID".to_string(),
            TEST_TENANT_ID.to_string(),
        ),
        ("AZURE_POSTGRESQL_CLIENTID".to_string(), app.client_id.clone()),
        (
            "AZURE_POSTGRESQL_CLIENTSECRET".to_string(),
            "s3cret-value".to_string(),
        ),
    ];
    let config = no_user(vars).http_options(http().with_ca_pem(&ca).expect("the fake's CA"));
    let token = bounded(60, "a token", config.fetch_token()).await.unwrap();
    assert!(
        matches!(
            role_for(&token),
            Err(ConfigError::UserNotInToken(NoTokenUser::Application { .. }))
        ),
        "{:?}",
        role_for(&token)
    );
}

/// The emulator's variables without the user: the name must come from the token.
fn without_user(vars: Vec<(String, String)>) -> Env {
    Env::from_pairs(
        vars.into_iter()
            .filter(|(k, _)| k != "PGUSER" && k != "AZURE_POSTGRESQL_USER"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_identity_from_app_service_signs_in_through_the_gate_under_the_derived_name() {
    let slot = system(
        "orders-web/slots/staging",
        "Microsoft.Web/sites/orders-web/slots/staging",
    );
    let emulator = Emulator::builder().principal(slot).start().await.expect("starts");
    let config = entra_testkit::config(&emulator).env(without_user(emulator.app_service_env_vars()));
    let pool = PoolBuilder::new(config)
        .max_size(1)
        .build()
        .await
        .expect("builds");
    assert_eq!(pool.role(), "orders-web/slots/staging");
    let client = bounded(60, "a connection", pool.get()).await.expect("signs in");
    let row = client.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "orders-web/slots/staging");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_gate_under_the_upn() {
    let emulator = Emulator::start().await.expect("starts");
    emulator
        .gate()
        .create_principal("ana@contoso.com", "oid-ana", PrincipalKind::User)
        .await
        .unwrap();
    let token = emulator
        .identity()
        .issuer()
        .sign(&Claims::user("oid-ana", "ana@contoso.com", HOUR));
    let config = entra_testkit::config(&emulator)
        .env(without_user(emulator.env_vars()))
        .token_source(StaticSource::new(AccessToken::new(
            token,
            SystemTime::now() + HOUR,
        )));
    let pool = PoolBuilder::new(config)
        .max_size(1)
        .build()
        .await
        .expect("builds");
    let client = bounded(60, "a connection", pool.get()).await.expect("signs in");
    let row = client.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "ana@contoso.com");
}
