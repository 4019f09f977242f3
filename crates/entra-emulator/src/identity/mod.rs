//! Fake Azure token endpoints on real HTTP: IMDS, App Service (current and legacy), Arc, Cloud Shell and
//! Entra ID's v2 token endpoint (client secret and workload identity), on one loopback port.
//!
//! The fakes check requests the way Azure does (the `Metadata` guard, api-versions, identity headers, the
//! Arc key-file challenge, client secrets, federated assertions) and answer with Azure's exact shapes,
//! errors included. [`Fault`]s script outages, throttling and broken answers at the wire level, which is
//! why the HTTP/1.1 server is written by hand. Every request is logged with the status it got.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use entra_emulator::identity::{FakeIdentity, Fault, ManagedIdentity};
//!
//! let fake = FakeIdentity::builder()
//!     .identity(ManagedIdentity::new("api"))
//!     .start()
//!     .await?;
//! // Point a client at it, e.g. AZURE_POD_IDENTITY_AUTHORITY_HOST = fake.imds_authority().
//! fake.push_faults([Fault::status(503), Fault::throttled(1)]);
//! // The client's next two token requests fail; the third gets a token.
//! # Ok(()) }
//! ```

mod assertion;
mod endpoints;
mod fault;
mod http;
mod log;
mod principal;
mod reply;
mod server;
mod state;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::AbortHandle;

pub use fault::{Fault, NumberFormat, RateLimit};
pub use log::{Endpoint, RecordedRequest};
pub use principal::{ManagedIdentity, ServicePrincipal};

use crate::jwt::{JwtIssuer, TEST_TENANT_ID};
use state::{Directory, Settings, Shared};

/// Fake Azure token endpoints on `127.0.0.1`; a cheap handle (clones share one server).
///
/// The server stops, and its port and Arc key directory are released, when the last handle is dropped.
#[derive(Clone)]
pub struct FakeIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    base_url: String,
    ca_pem: Option<String>,
    accept_task: AbortHandle,
    /// Owns the directory the Arc key files are written to; deleted on drop.
    _arc_key_dir: tempfile::TempDir,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The accept task owns the listener and every connection task, so this frees the port and ends
        // every connection (held ones included).
        self.accept_task.abort();
    }
}

impl std::fmt::Debug for FakeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdentity")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

/// Configures a [`FakeIdentity`] before it starts.
#[derive(Debug, Clone)]
pub struct FakeIdentityBuilder {
    lifetime: Duration,
    padding: usize,
    tls: bool,
    identities: Vec<ManagedIdentity>,
    apps: Vec<ServicePrincipal>,
    system: ManagedIdentity,
    system_assigned: bool,
}

impl Default for FakeIdentityBuilder {
    fn default() -> Self {
        FakeIdentityBuilder {
            lifetime: Duration::from_secs(3600),
            padding: 0,
            tls: false,
            identities: Vec::new(),
            apps: Vec::new(),
            system: ManagedIdentity::new("system-identity"),
            system_assigned: true,
        }
    }
}

impl FakeIdentityBuilder {
    /// Lifetime of issued tokens (default 1 hour).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Make issued access tokens at least this many bytes long (0, the default: no padding).
    pub fn token_padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    /// Serve HTTPS with a certificate for `localhost` and `127.0.0.1` from a CA made at start (default: plain
    /// HTTP). Clients must trust [`FakeIdentity::ca_pem`].
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Assign a user-assigned identity (repeatable).
    pub fn identity(mut self, identity: ManagedIdentity) -> Self {
        self.identities.push(identity);
        self
    }

    /// Register an app for client-secret or workload-identity sign-in (repeatable).
    pub fn app(mut self, app: ServicePrincipal) -> Self {
        self.apps.push(app);
        self
    }

    /// The machine's system-assigned identity (default `ManagedIdentity::new("system-identity")`).
    pub fn system_identity(mut self, identity: ManagedIdentity) -> Self {
        self.system = identity;
        self
    }

    /// Whether the machine has a system-assigned identity (default true). Without one, requests that name
    /// no identity get 400 "Identity not found", as on a VM with only user-assigned identities.
    pub fn system_assigned(mut self, on: bool) -> Self {
        self.system_assigned = on;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving. Must be called inside a Tokio runtime.
    ///
    /// Fails if the port cannot be bound, the Arc key directory cannot be created, or (with TLS) the
    /// certificates cannot be generated.
    pub async fn start(self) -> std::io::Result<FakeIdentity> {
        let arc_key_dir = tempfile::Builder::new().prefix("entra-fake-arc-").tempdir()?;
        let tls = if self.tls { Some(tls::server_tls()?) } else { None };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let base_url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let shared = Arc::new(Shared::new(
            self.system,
            self.system_assigned,
            arc_key_dir.path().to_path_buf(),
            Settings {
                lifetime: self.lifetime,
                padding: self.padding,
                number_format: NumberFormat::AsSpec,
            },
            Directory {
                identities: self.identities,
                apps: self.apps,
            },
        ));
        let (acceptor, ca_pem) = match tls {
            Some(tls) => (Some(tls.acceptor), Some(tls.ca_pem)),
            None => (None, None),
        };
        let accept_task =
            tokio::spawn(server::accept_loop(listener, acceptor, shared.clone())).abort_handle();
        Ok(FakeIdentity {
            inner: Arc::new(Inner {
                shared,
                base_url,
                ca_pem,
                accept_task,
                _arc_key_dir: arc_key_dir,
            }),
        })
    }
}

impl FakeIdentity {
    /// A builder with the defaults: system identity, no apps, 1-hour tokens, plain HTTP.
    pub fn builder() -> FakeIdentityBuilder {
        FakeIdentityBuilder::default()
    }

    /// Starts a fake with the defaults (`builder().start()`).
    pub async fn start() -> std::io::Result<FakeIdentity> {
        Self::builder().start().await
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS.
    pub fn base_url(&self) -> String {
        self.inner.base_url.clone()
    }

    /// The value for `AZURE_POD_IDENTITY_AUTHORITY_HOST` (the base URL); clients append
    /// `/metadata/identity/oauth2/token`.
    pub fn imds_authority(&self) -> String {
        self.base_url()
    }

    /// The full IMDS token URL.
    pub fn imds_endpoint(&self) -> String {
        format!("{}{}", self.inner.base_url, endpoints::IMDS_PATH)
    }

    /// The `IDENTITY_ENDPOINT` of App Service (also `MSI_ENDPOINT` for the legacy form).
    pub fn app_service_endpoint(&self) -> String {
        format!("{}{}", self.inner.base_url, endpoints::APP_SERVICE_PATH)
    }

    /// The current `IDENTITY_HEADER` value that App Service requests must send as `X-IDENTITY-HEADER`.
    pub fn identity_header(&self) -> String {
        self.shared().secrets.lock().identity_header.clone()
    }

    /// Replaces the identity header, as App Service does on restart; the old value is refused from now on.
    /// Returns the new value.
    pub fn rotate_identity_header(&self) -> String {
        let new = principal::random_hex(16);
        self.shared().secrets.lock().identity_header = new.clone();
        new
    }

    /// The `MSI_SECRET` the legacy 2017-09-01 form (App Service, Azure ML) must send as the `secret` header.
    pub fn legacy_msi_secret(&self) -> String {
        self.shared().legacy_secret.clone()
    }

    /// The Arc `IDENTITY_ENDPOINT`.
    pub fn arc_endpoint(&self) -> String {
        format!("{}{}", self.inner.base_url, endpoints::ARC_PATH)
    }

    /// The directory the Arc challenge writes key files to (stands in for `/var/opt/azcmagent/tokens`);
    /// owned by the fake and deleted with it.
    pub fn arc_key_dir(&self) -> PathBuf {
        self.shared().arc_key_dir.clone()
    }

    /// The Cloud Shell `MSI_ENDPOINT` (POST).
    pub fn cloud_shell_endpoint(&self) -> String {
        format!("{}{}", self.inner.base_url, endpoints::CLOUD_SHELL_PATH)
    }

    /// The `AZURE_AUTHORITY_HOST` value (the base URL); token path `/{tenant}/oauth2/v2.0/token`.
    pub fn authority_host(&self) -> String {
        self.base_url()
    }

    /// The only tenant the fake knows ([`TEST_TENANT_ID`]).
    pub fn tenant_id(&self) -> &str {
        TEST_TENANT_ID
    }

    /// The PEM of the CA to trust, when TLS is on.
    pub fn ca_pem(&self) -> Option<String> {
        self.inner.ca_pem.clone()
    }

    /// The issuer that signs the fake's tokens (and verifies them, for the gate).
    pub fn issuer(&self) -> &JwtIssuer {
        &self.shared().issuer
    }

    /// The machine's system-assigned identity.
    pub fn system_identity(&self) -> ManagedIdentity {
        self.shared().system.clone()
    }

    /// Assigns another user-assigned identity.
    pub fn add_identity(&self, identity: ManagedIdentity) {
        self.shared().directory.lock().identities.push(identity);
    }

    /// Registers another app.
    pub fn add_app(&self, app: ServicePrincipal) {
        self.shared().directory.lock().apps.push(app);
    }

    /// A projected service-account token for workload identity: `aud` `api://AzureADTokenExchange`, `sub`
    /// = `subject`, a Kubernetes issuer, valid for `lifetime` (zero: already expired), signed by the
    /// issuer's key, which is the key the fake's Entra endpoint trusts.
    pub fn federated_assertion(&self, subject: &str, lifetime: Duration) -> String {
        assertion::federated_assertion(self.issuer(), subject, lifetime)
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared().settings.lock().lifetime = lifetime;
    }

    /// Make tokens issued from now on at least this many bytes long (0: no padding).
    pub fn set_token_padding(&self, bytes: usize) {
        self.shared().settings.lock().padding = bytes;
    }

    /// How `expires_in`, `expires_on` and friends are sent from now on.
    pub fn set_number_format(&self, format: NumberFormat) {
        self.shared().settings.lock().number_format = format;
    }

    /// Queues faults for the next token requests, one each, first in first out. Requests to unknown
    /// paths do not consume them; a persistent fault, while set, takes precedence and leaves them queued.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared().push_faults(faults);
    }

    /// Applies `fault` to every token request until called with `None` (an outage).
    pub fn set_persistent_fault(&self, fault: Option<Fault>) {
        self.shared().set_persistent_fault(fault);
    }

    /// Throttles token requests as IMDS does under load (`None`: no limit). Queued and persistent faults
    /// come first.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.shared().set_rate_limit(limit);
    }

    /// Every request received so far (since the last [`clear_log`](Self::clear_log)), rejected ones
    /// included, in order of arrival; each is logged before its answer is written.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared().requests()
    }

    /// How many token requests arrived (any token endpoint, any outcome, faults included).
    pub fn token_requests(&self) -> usize {
        self.shared().token_requests()
    }

    /// How many 200 answers carried a real token.
    pub fn tokens_issued(&self) -> usize {
        self.shared().tokens_issued()
    }

    /// Empties the request log and resets both counters.
    pub fn clear_log(&self) {
        self.shared().clear_log();
    }
}
