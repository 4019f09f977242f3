//! [`ConnectionPlan`]: resolved settings become the one verified way to open a connection.
//!
//! Every path that connects (the pool, `entra-pg doctor`, `psql`, `grant`, `demo`, `bench`) goes through a
//! plan, so the security rules are decided once, in `plan/rules.rs` (`check_rules`, the TLS choice and the
//! address checks), and nowhere else:
//!
//! - **No password with tokens.** A password in the configuration is an error unless static-password mode
//!   was chosen by name.
//! - **No token in cleartext.** `sslmode=disable` is refused with a token unless every host is loopback
//!   or a unix socket, by both what the host names and where a `hostaddr` connects, so
//!   `host=db.example.com hostaddr=127.0.0.1` is refused. `localhost` is not trusted by its name: every
//!   connection resolves it, checks that each address is loopback, and connects to those addresses
//!   ([`ConnectionPlan::loopback_addresses`]).
//! - **TLS verified.** `verify-full` by default. `require`, which Service Connector writes and which in
//!   libpq means "no verification" only when no root certificate is around, verifies fully with the
//!   built-in roots (libpq's `sslrootcert=system` case) and as `verify-ca` with an `sslrootcert` file, as
//!   libpq does when a root file exists. Skipping verification takes
//!   [`EntraConfig::danger_accept_unverified_tls`](crate::EntraConfig::danger_accept_unverified_tls).

mod libpq;
mod pg_config;
mod rules;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use entra_token::TokenHandle;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_postgres::tls::NoTls;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{ConfigError, Settings, SslMode};
use crate::error::{BuildError, ConnectError};
use crate::tls::Verification;

pub use pg_config::DEFAULT_APPLICATION_NAME;

/// What connections sign in with: it decides which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CredentialKind {
    /// Entra ID access tokens (the default).
    #[default]
    EntraToken,
    /// A fixed password, chosen by name ([`EntraConfig::static_password`](crate::EntraConfig::static_password)).
    StaticPassword,
}

/// What a plan needs beyond the [`Settings`]: choices no connection string can make.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PlanOptions {
    /// What connections sign in with.
    pub credential: CredentialKind,
    /// CA certificates trusted in addition to the roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Let `sslmode=require` skip certificate verification (libpq's meaning without a root file).
    pub accept_unverified_tls: bool,
}

impl PlanOptions {
    /// Options for `credential`.
    pub fn new(credential: CredentialKind) -> Self {
        PlanOptions {
            credential,
            ..PlanOptions::default()
        }
    }

    /// Trusts this CA certificate in addition to the roots.
    pub fn add_root_certificate(mut self, cert: CertificateDer<'static>) -> Self {
        self.extra_roots.push(cert);
        self
    }

    /// Lets `sslmode=require` skip certificate verification: anyone on the path can then take the token.
    pub fn danger_accept_unverified_tls(mut self, accept: bool) -> Self {
        self.accept_unverified_tls = accept;
        self
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Roots {
    /// Mozilla's roots plus DigiCert Global Root CA ([`crate::tls::azure_roots`]): libpq's `sslrootcert=system`.
    BuiltIn,
    /// A PEM file (`sslrootcert`), which replaces the built-in roots as in libpq.
    File {
        /// The file.
        path: PathBuf,
        /// Where it was configured.
        origin: String,
    },
}

/// The TLS mode in force, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsChoice {
    /// The `sslmode` configured (default `verify-full`).
    pub requested: SslMode,
    /// Where it was configured (`default` when nowhere).
    pub requested_origin: String,
    /// How certificates are checked; `None` when no TLS is used (loopback with `disable`, unix sockets).
    pub verification: Option<Verification>,
    /// Where the trusted roots come from.
    pub roots: Roots,
    /// One sentence on why this mode is in force.
    pub reason: String,
}

impl TlsChoice {
    /// Whether a server could read the token without being verified (a doctor warning).
    pub fn is_unverified(&self) -> bool {
        self.verification == Some(Verification::Unverified)
    }
}

/// How connections are secured.
#[derive(Clone)]
pub(crate) enum Transport {
    Tls(MakeRustlsConnect),
    Plain,
}

/// Resolved settings turned into everything needed to open one connection: the `tokio_postgres::Config`
/// (without a password), the transport with its verified TLS, the credential kind and the role.
///
/// Built by [`ConnectionPlan::new`], which checks every rule (see the [module docs](self)); a plan that
/// exists is one that may be used.
///
/// ```
/// use entra_postgres::{parse_connection_string, ConnectionPlan, PlanOptions};
///
/// let settings = parse_connection_string("host=db.example.com sslmode=require user=app").unwrap();
/// let plan = ConnectionPlan::new(&settings, &PlanOptions::default()).unwrap();
/// // With the built-in roots, `require` verifies fully.
/// assert_eq!(plan.tls().verification.map(|v| v.as_sslmode()), Some("verify-full"));
///
/// let cleartext = parse_connection_string("host=db.example.com hostaddr=127.0.0.1 sslmode=disable").unwrap();
/// assert!(ConnectionPlan::new(&cleartext, &PlanOptions::default()).is_err());
/// ```
#[derive(Clone)]
pub struct ConnectionPlan {
    config: tokio_postgres::Config,
    /// `config` without hosts, addresses and ports.
    base: tokio_postgres::Config,
    transport: Transport,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    tls: TlsChoice,
    credential: CredentialKind,
    role: Option<String>,
    hosts: Vec<String>,
    hostaddrs: Vec<IpAddr>,
    ports: Vec<u16>,
    dbname: String,
    settings: Settings,
}

impl std::fmt::Debug for ConnectionPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPlan")
            .field("hosts", &self.hosts)
            .field("hostaddrs", &self.hostaddrs)
            .field("ports", &self.ports)
            .field("dbname", &self.dbname)
            .field("role", &self.role)
            .field("credential", &self.credential)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}
impl ConnectionPlan {
    /// Checks the settings against every rule and prepares TLS. Nothing is sent anywhere.
    pub fn new(settings: &Settings, options: &PlanOptions) -> Result<Self, ConfigError> {
        let (hosts, tls) = rules::check_rules(settings, options)?;
        let tls_config = rules::client_config(&tls, options)?;
        let transport = match &tls_config {
            Some(config) => Transport::Tls(MakeRustlsConnect::new((**config).clone())),
            None => Transport::Plain,
        };
        let ports = pg_config::ports(settings, &hosts)?;
        let dbname = pg_config::dbname(settings);
        let hostaddrs = settings
            .hostaddrs
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let role = settings.user.as_ref().map(|u| u.value.clone());
        // Everything but where to connect; `config` adds the hosts, and a connection whose addresses are
        // checked first (`pinned_config`) adds the addresses it checked.
        let base = pg_config::base(settings, &dbname, role.as_deref(), &transport);
        let config = pg_config::with_hosts(&base, &hosts, &hostaddrs, &ports);
        Ok(ConnectionPlan {
            config,
            base,
            transport,
            tls_config,
            tls,
            credential: options.credential,
            role,
            hosts,
            hostaddrs,
            ports,
            dbname,
            settings: settings.clone(),
        })
    }

    /// The plan with this role (user name) to sign in as.
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        let role = role.into();
        self.config.user(&role);
        self.base.user(&role);
        self.role = Some(role);
        self
    }

    /// The plan with its role settled: the configured one, else the name the current token's claims
    /// give (a managed identity's name, a user's UPN).
    pub async fn resolve_role(self, tokens: &TokenHandle) -> Result<Self, BuildError> {
        if self.role.is_some() {
            return Ok(self);
        }
        let token = tokens.get().await?;
        Ok(self.with_role_from(&token)?)
    }

    /// The plan with its role settled from `token` when none is configured: the one rule for a role
    /// derived from a token's claims ([`token_user`](crate::token_user): a managed identity's name from
    /// `xms_mirid`, else `upn`, `preferred_username`, `unique_name`), for the pool and every one-shot
    /// command. A token that names none (a guest's, an application's) fails with
    /// [`ConfigError::UserNotInToken`], which says why.
    pub fn with_role_from(self, token: &entra_token::AccessToken) -> Result<Self, ConfigError> {
        if self.role.is_some() {
            return Ok(self);
        }
        let user = crate::claims::token_user(token.secret()).map_err(ConfigError::UserNotInToken)?;
        tracing::info!(
            user = user.name,
            claim = user.claim,
            kind = ?user.kind,
            "no user configured; using the name from the token's claim"
        );
        Ok(self.with_role(user.name))
    }

    /// The connection settings, without any password.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS mode in force and why.
    pub fn tls(&self) -> &TlsChoice {
        &self.tls
    }

    /// The rustls configuration the plan connects with (`None` without TLS), for a handshake probe.
    pub fn rustls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls_config.clone()
    }

    /// The role connections sign in as, once known.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// What connections sign in with.
    pub fn credential(&self) -> CredentialKind {
        self.credential
    }

    /// The server host names (or unix-socket directories).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Addresses connected to instead of resolving the host names.
    pub fn hostaddrs(&self) -> &[IpAddr] {
        &self.hostaddrs
    }

    /// The first host's port.
    pub fn port(&self) -> u16 {
        self.ports.first().copied().unwrap_or(pg_config::DEFAULT_PORT)
    }

    /// The ports: one for every host, or one per host.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The database.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// How connections are secured.
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The settings the plan was made from (for diagnostics: each value's origin).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Opens one connection with `password` (the token's secret, or the static password) and spawns its
    /// connection task. No retry and no token logic: [`EntraConnect`](crate::EntraConnect) adds those.
    ///
    /// A token sent without TLS to a host *name* (`localhost`) goes only to the addresses the name
    /// resolves to now, each checked to be loopback ([`loopback_addresses`](Self::loopback_addresses)):
    /// the name is resolved here and connected to by address, so no later lookup can differ.
    pub async fn open(&self, password: &[u8]) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let mut config = match self.pinned_config().await {
            Ok(Some(pinned)) => pinned,
            Ok(None) => self.config.clone(),
            Err(e) => return Err(crate::tunnel::fail(ConnectError::Refused(e)).await),
        };
        config.password(password);
        match &self.transport {
            Transport::Tls(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                Ok((client, spawn_connection(connection)))
            }
            Transport::Plain => {
                let (client, connection) = config.connect(NoTls).await?;
                Ok((client, spawn_connection(connection)))
            }
        }
    }
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = ?e.to_string(), "connection closed with an error");
        }
    })
}
