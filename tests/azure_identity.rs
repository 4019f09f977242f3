//! Microsoft's own Rust credential, `azure_identity::ManagedIdentityCredential`, pointed at the emulator
//! through App Service's variables: it fetches from our fake (which checks its requests like Azure),
//! feeds our refresher, signs a pool in; and our refresher serves Azure SDK clients in turn.

use std::time::Duration;

use azure_core::credentials::TokenCredential;
use entra_pool::token::{
    AzureCredentialSource, RefreshPolicy, Refresher, TokenSource, TokenState, OSSRDBMS_SCOPE,
};

// One test in this binary: it sets the process environment, which azure_identity reads.
#[tokio::test(flavor = "multi_thread")]
async fn azure_identitys_managed_identity_credential_feeds_our_refresher_and_pool() {
    // azure_core's default HTTP client is reqwest, which entra-token builds without a crypto provider of
    // its own (it passes one per client): a process using both installs one, as rustls asks.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let emulator = entra_testkit::emulator(Duration::from_secs(8)).await;
    for (name, value) in emulator.app_service_env_vars() {
        std::env::set_var(name, value);
    }
    let credential = azure_identity::ManagedIdentityCredential::new(None).expect("App Service detected");
    let source = AzureCredentialSource::new(credential);

    // A token from Microsoft's client, through our fake, verified with the fake's key.
    let token = entra_testkit::bounded(60, "a token", source.fetch(OSSRDBMS_SCOPE))
        .await
        .expect("a token");
    let claims = emulator
        .identity()
        .issuer()
        .verify(
            token.secret(),
            entra_emulator::OSSRDBMS_RESOURCE,
            Duration::from_secs(60),
        )
        .expect("signed by the fake");
    assert_eq!(claims.oid, emulator.principal().object_id);
    let request = emulator.identity().requests().pop().expect("a request");
    assert_eq!(request.query("api-version"), Some("2019-08-01"));
    assert!(request.header("x-identity-header").is_some());

    // Our refresher over it renews ahead of expiry and serves the cached token through an outage. The 8 s
    // tokens (7–8 s left on arrival: expiry has whole seconds) are renewed at half-life (4 s before
    // expiry would come sooner, but renewal never comes before half-life) and served until 0.5 s before
    // expiry: a renewal starts about 3 s before its token stops being served.
    let policy = RefreshPolicy::short_lived().refresh_margin(Duration::from_secs(4));
    let tokens = Refresher::start(source.clone(), OSSRDBMS_SCOPE, policy)
        .await
        .expect("starts");
    let mut status = tokens.watch();
    // Each status published with a token carries its plan: the renewal comes before the token stops being
    // served. A watcher may skip a status (it sees the latest), never see one that was not published.
    let plans = entra_testkit::bounded(60, "a renewal", async {
        let mut plans = Vec::new();
        loop {
            let s = status.borrow_and_update().clone();
            if let (Some(renew_at), Some(until)) = (s.next_fetch, s.usable_until) {
                plans.push((s.refreshes, renew_at, until));
            }
            if s.refreshes >= 2 {
                return plans;
            }
            status.changed().await.expect("the refresher is running");
        }
    })
    .await;
    assert!(!plans.is_empty());
    for (generation, renew_at, until) in &plans {
        assert!(
            renew_at < until,
            "token {generation}: renewal planned no earlier than the end of its service"
        );
    }
    emulator
        .identity()
        .set_persistent_fault(Some(entra_emulator::Fault::status(503)));
    // A renewal that starts after this meets the outage: while it is under way (or has failed), the token
    // is still served.
    let before_outage = tokens.status().fetches;
    let during = entra_testkit::bounded(
        30,
        "a renewal during the outage",
        status.wait_for(|s| s.fetches > before_outage),
    )
    .await
    .expect("the refresher is running")
    .clone();
    assert!(
        matches!(during.state, TokenState::Valid | TokenState::Stale) && during.fingerprint.is_some(),
        "the still-valid token is served during the outage: {during:?}"
    );
    emulator.identity().set_persistent_fault(None);

    // A pool signs in with tokens from Microsoft's credential.
    let pool = entra_testkit::pool_builder(&emulator)
        .with_config(|c| c.token_handle(tokens.clone()))
        .build()
        .await
        .expect("builds");
    let client = entra_testkit::bounded(60, "a connection", pool.get())
        .await
        .expect("signs in");
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), emulator.user());

    // The other direction: our handle as an Azure SDK credential, for the scope it serves.
    let shared = tokens
        .get_token(&[OSSRDBMS_SCOPE], None)
        .await
        .expect("the handle serves its scope");
    assert_eq!(
        shared.token.secret(),
        tokens.get().await.expect("a token").secret()
    );
    assert!(tokens
        .get_token(&["https://storage.azure.com/.default"], None)
        .await
        .is_err());
}
