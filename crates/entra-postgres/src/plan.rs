//! [`ConnectionPlan`]: resolved settings become the one verified way to open a connection.
//!
//! Every path that connects (the pool, `entra-pg doctor`, `psql`, `grant`, `demo`, `bench`) goes through a
//! plan, so the security rules are decided once, in [`check_rules`], and nowhere else:
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
//!   [`PoolBuilder::danger_accept_unverified_tls`](crate::PoolBuilder::danger_accept_unverified_tls).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use entra_token::TokenHandle;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_postgres::tls::NoTls;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{ConfigError, Settings, SslMode};
use crate::error::{BuildError, ConnectError};
use crate::tls::{self, Verification};

/// The default `application_name`.
pub const DEFAULT_APPLICATION_NAME: &str = "entra-pool";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A server that vanished without closing its sockets (an Azure HA failover: no RST) is noticed within
/// about `idle + interval × count` = 25 s on an idle connection, and within `tcp_user_timeout` = 20 s
/// once a statement's bytes go unacknowledged, instead of the kernel's 15 minutes.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVES_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_KEEPALIVES_COUNT: u32 = 3;
const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_PORT: u16 = 5432;
const DEFAULT_DBNAME: &str = "postgres";

/// What connections sign in with: it decides which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CredentialKind {
    /// Entra ID access tokens (the default).
    #[default]
    EntraToken,
    /// A fixed password, chosen by name ([`PoolBuilder::static_password`](crate::PoolBuilder::static_password)).
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
    /// Mozilla's roots plus DigiCert Global Root CA ([`tls::azure_roots`]): libpq's `sslrootcert=system`.
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
        let (hosts, tls) = check_rules(settings, options)?;
        let tls_config = match tls.verification {
            Some(verification) => {
                let mut roots = match &tls.roots {
                    Roots::BuiltIn => tls::azure_roots(),
                    Roots::File { path, origin } => {
                        let mut store = rustls::RootCertStore::empty();
                        for cert in tls::load_pem_file(path, origin)? {
                            store.add(cert).map_err(|e| {
                                ConfigError::invalid(
                                    origin,
                                    path.display().to_string(),
                                    format!("unusable CA certificate: {e}"),
                                )
                            })?;
                        }
                        store
                    }
                };
                for cert in &options.extra_roots {
                    roots.add(cert.clone()).map_err(|e| {
                        ConfigError::invalid("PoolBuilder::add_root_certificate", "", e.to_string())
                    })?;
                }
                Some(Arc::new(tls::client_config(verification, roots)?))
            }
            None => None,
        };
        let transport = match &tls_config {
            Some(config) => Transport::Tls(MakeRustlsConnect::new((**config).clone())),
            None => Transport::Plain,
        };
        let ports = settings
            .ports
            .as_ref()
            .map_or_else(|| vec![DEFAULT_PORT], |p| p.value.clone());
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(ConfigError::invalid(
                settings.ports.as_ref().map_or("port", |p| p.origin.as_str()),
                ports
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                format!(
                    "{} ports for {} hosts: give one port for every host, or one per host",
                    ports.len(),
                    hosts.len()
                ),
            ));
        }
        let dbname = settings
            .dbname
            .as_ref()
            .map_or_else(|| DEFAULT_DBNAME.to_string(), |d| d.value.clone());
        let hostaddrs = settings
            .hostaddrs
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        // Everything but where to connect; `config` adds the hosts, and a connection whose addresses are
        // checked first (`pinned_config`) adds the addresses it checked.
        let mut base = tokio_postgres::Config::new();
        let config = &mut base;
        let value = |d: &Option<crate::config::Sourced<Duration>>, default: Duration| {
            d.as_ref().map_or(default, |d| d.value)
        };
        config
            .keepalives(settings.keepalives.as_ref().is_none_or(|k| k.value))
            .keepalives_idle(value(&settings.keepalives_idle, DEFAULT_KEEPALIVES_IDLE))
            .keepalives_interval(value(&settings.keepalives_interval, DEFAULT_KEEPALIVES_INTERVAL))
            .keepalives_retries(
                settings
                    .keepalives_count
                    .as_ref()
                    .map_or(DEFAULT_KEEPALIVES_COUNT, |c| c.value),
            )
            .target_session_attrs(
                match settings
                    .target_session_attrs
                    .as_ref()
                    .map(|t| t.value)
                    .unwrap_or_default()
                {
                    crate::SessionAttrs::Any => tokio_postgres::config::TargetSessionAttrs::Any,
                    crate::SessionAttrs::ReadWrite => tokio_postgres::config::TargetSessionAttrs::ReadWrite,
                    crate::SessionAttrs::ReadOnly => tokio_postgres::config::TargetSessionAttrs::ReadOnly,
                },
            );
        let user_timeout = value(&settings.tcp_user_timeout, DEFAULT_TCP_USER_TIMEOUT);
        if !user_timeout.is_zero() {
            config.tcp_user_timeout(user_timeout);
        }
        config
            .dbname(&dbname)
            .application_name(
                settings
                    .application_name
                    .as_ref()
                    .map_or(DEFAULT_APPLICATION_NAME, |a| a.value.as_str()),
            )
            .connect_timeout(
                settings
                    .connect_timeout
                    .as_ref()
                    .map_or(DEFAULT_CONNECT_TIMEOUT, |c| c.value),
            )
            .ssl_mode(match transport {
                Transport::Tls(_) => tokio_postgres::config::SslMode::Require,
                Transport::Plain => tokio_postgres::config::SslMode::Disable,
            });
        if let Some(options) = &settings.options {
            config.options(&options.value);
        }
        let role = settings.user.as_ref().map(|u| u.value.clone());
        if let Some(role) = &role {
            config.user(role);
        }
        let mut config = base.clone();
        for host in &hosts {
            config.host(host);
        }
        for addr in &hostaddrs {
            config.hostaddr(*addr);
        }
        for port in &ports {
            config.port(*port);
        }
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
    /// derived from a token's claims (`xms_mirid`'s last segment, else `upn`, else
    /// `preferred_username`), for the pool and every one-shot command.
    pub fn with_role_from(self, token: &entra_token::AccessToken) -> Result<Self, ConfigError> {
        if self.role.is_some() {
            return Ok(self);
        }
        let (user, claim) = crate::claims::user_from_token(token.secret()).ok_or(ConfigError::Missing {
            setting: "user",
            how: "PoolBuilder::user, user= in the connection string, AZURE_POSTGRESQL_USER or PGUSER to the \
                  Entra principal's name (the token names none: no xms_mirid, upn or preferred_username claim)",
        })?;
        tracing::info!(
            user,
            claim,
            "no user configured; using the name from the token's claim"
        );
        Ok(self.with_role(user))
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
        self.ports.first().copied().unwrap_or(DEFAULT_PORT)
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

    /// Whether some host is a name that carries a token without TLS, whose addresses must then be
    /// resolved and checked on every connection ([`loopback_addresses`](Self::loopback_addresses)). A
    /// front whose client library resolves names itself (sqlx) cannot do that, and refuses such a plan.
    pub fn checks_addresses_of_names(&self) -> bool {
        self.hosts
            .iter()
            .enumerate()
            .any(|(i, h)| self.checks_addresses(i, h))
    }

    /// Whether a connection to host `i` would carry a token without TLS to a name: loopback is then
    /// decided by the addresses the name resolves to, on every connection, not by the name.
    pub(crate) fn checks_addresses(&self, i: usize, host: &str) -> bool {
        matches!(self.transport, Transport::Plain)
            && self.credential == CredentialKind::EntraToken
            && self.hostaddrs.get(i).is_none()
            && !is_socket(host)
            && host_ip(host).is_none()
    }

    /// The addresses `host` resolves to, for a token sent without TLS: every one must be loopback, or
    /// none is used (a resolver without `localhost` in `/etc/hosts` may answer with anything).
    pub async fn loopback_addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
        let origin = self.tls.requested_origin.clone();
        let refused = |why: String| ConfigError::CleartextToken {
            origin: origin.clone(),
            host: format!("{host} ({why})"),
        };
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| refused(format!("cannot be resolved to check it is loopback: {e}")))?
            .collect();
        if let Some(remote) = resolved.iter().find(|a| !a.ip().to_canonical().is_loopback()) {
            return Err(refused(format!(
                "resolves to {}, which is not loopback",
                remote.ip()
            )));
        }
        if resolved.is_empty() {
            return Err(refused("resolves to no address".into()));
        }
        Ok(resolved)
    }

    /// Where to connect when some host's addresses must be checked first: every host with the address
    /// to connect to (each of a checked name's addresses as a host of its own, as libpq tries a name's
    /// addresses in turn) and its port. `None` when no host needs it.
    async fn pinned_targets(&self) -> Result<Option<Vec<(&str, IpAddr, u16)>>, ConfigError> {
        if !self
            .hosts
            .iter()
            .enumerate()
            .any(|(i, h)| self.checks_addresses(i, h))
        {
            return Ok(None);
        }
        let mut targets = Vec::new();
        for (i, host) in self.hosts.iter().enumerate() {
            let port = self
                .ports
                .get(i)
                .or(self.ports.first())
                .copied()
                .unwrap_or(DEFAULT_PORT);
            if self.checks_addresses(i, host) {
                for address in self.loopback_addresses(host, port).await? {
                    targets.push((host.as_str(), address.ip(), port));
                }
            } else if let Some(addr) = self.hostaddrs.get(i).copied().or_else(|| host_ip(host)) {
                targets.push((host.as_str(), addr, port));
            } else {
                // Unreachable: a socket directory beside a checked name is refused by `check_rules`.
                return Err(ConfigError::invalid(
                    "host",
                    host.clone(),
                    "a unix-socket directory cannot be listed with a host name when sslmode=disable carries \
                     a token",
                ));
            }
        }
        Ok(Some(targets))
    }

    /// The config to connect with when some host's addresses must be checked first ([`Self::pinned_targets`]).
    async fn pinned_config(&self) -> Result<Option<tokio_postgres::Config>, ConfigError> {
        let Some(targets) = self.pinned_targets().await? else {
            return Ok(None);
        };
        let mut config = self.base.clone();
        for (host, addr, port) in targets {
            config.host(host).hostaddr(addr).port(port);
        }
        Ok(Some(config))
    }

    /// libpq's environment variables for the same connection (`PGHOST`, `PGSSLMODE` in force…), for
    /// running `psql` or another libpq client. `bundle` is a PEM file of the built-in roots for libpq
    /// when the plan uses them (libpq cannot read ours); the password is not included.
    ///
    /// A host name that would carry a token without TLS is resolved and checked here, as for the
    /// plan's own connections, and libpq is given the checked addresses (`PGHOSTADDR`), so it cannot
    /// resolve the name to anything else.
    pub async fn libpq_env(&self, bundle: Option<&Path>) -> Result<Vec<(&'static str, String)>, ConfigError> {
        let join = |items: &mut dyn Iterator<Item = String>| items.collect::<Vec<_>>().join(",");
        let (hosts, ports, hostaddrs) = match self.pinned_targets().await? {
            Some(targets) => (
                join(&mut targets.iter().map(|t| t.0.to_string())),
                join(&mut targets.iter().map(|t| t.2.to_string())),
                Some(join(&mut targets.iter().map(|t| t.1.to_string()))),
            ),
            None => (
                self.hosts.join(","),
                join(&mut self.ports.iter().map(ToString::to_string)),
                (!self.hostaddrs.is_empty())
                    .then(|| join(&mut self.hostaddrs.iter().map(ToString::to_string))),
            ),
        };
        let mut env = vec![
            ("PGHOST", hosts),
            ("PGPORT", ports),
            ("PGDATABASE", self.dbname.clone()),
            (
                "PGSSLMODE",
                self.tls
                    .verification
                    .map_or("disable", Verification::as_sslmode)
                    .to_string(),
            ),
        ];
        if let Some(role) = &self.role {
            env.push(("PGUSER", role.clone()));
        }
        if let Some(hostaddrs) = hostaddrs {
            env.push(("PGHOSTADDR", hostaddrs));
        }
        match (&self.tls.roots, self.tls.verification) {
            (_, None) | (_, Some(Verification::Unverified)) => {}
            (Roots::File { path, .. }, Some(_)) => env.push(("PGSSLROOTCERT", path.display().to_string())),
            (Roots::BuiltIn, Some(_)) => {
                if let Some(bundle) = bundle {
                    env.push(("PGSSLROOTCERT", bundle.display().to_string()));
                }
            }
        }
        if let Some(attrs) = &self.settings.target_session_attrs {
            env.push(("PGTARGETSESSIONATTRS", attrs.value.as_str().to_string()));
        }
        if let Some(app) = &self.settings.application_name {
            env.push(("PGAPPNAME", app.value.clone()));
        }
        if let Some(options) = &self.settings.options {
            env.push(("PGOPTIONS", options.value.clone()));
        }
        if let Some(timeout) = &self.settings.connect_timeout {
            env.push(("PGCONNECT_TIMEOUT", timeout.value.as_secs().to_string()));
        }
        Ok(env)
    }
}

/// Whether a host is a unix-socket directory (abstract sockets, `@name`, are refused by `check_rules`).
fn is_socket(host: &str) -> bool {
    host.starts_with('/')
}

/// A host given as an address literal (`127.0.0.1`, `::1`, `[::1]`).
fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Every rule, checked once: the password refusal, a host, the cleartext refusal and the TLS mode.
fn check_rules(settings: &Settings, options: &PlanOptions) -> Result<(Vec<String>, TlsChoice), ConfigError> {
    let token_mode = options.credential == CredentialKind::EntraToken;
    if token_mode {
        if let Some(password) = &settings.password {
            return Err(ConfigError::PasswordNotAllowed {
                origin: password.origin.clone(),
            });
        }
    }
    let hosts = settings
        .hosts
        .as_ref()
        .map(|h| h.value.clone())
        .filter(|h| !h.is_empty())
        .ok_or(ConfigError::Missing {
            setting: "host",
            how: "PoolBuilder::host, host= in the connection string, AZURE_POSTGRESQL_HOST or PGHOST",
        })?;
    // libpq reads `@name` as an abstract unix socket; tokio-postgres, raw sessions and sqlx would look it
    // up as a host name. Refused, so no two paths read one host two ways.
    if let Some(abstract_socket) = hosts.iter().find(|h| h.starts_with('@')) {
        return Err(ConfigError::invalid(
            settings.hosts.as_ref().map_or("host", |h| h.origin.as_str()),
            abstract_socket.clone(),
            "abstract unix sockets (@name) are not supported: give a socket directory (/var/run/postgresql) \
             or a host name",
        ));
    }
    let tls = choose_tls(settings, &hosts, token_mode, options.accept_unverified_tls)?;
    Ok((hosts, tls))
}

/// The TLS mode in force for these hosts, or the refusal to send a token in cleartext.
fn choose_tls(
    settings: &Settings,
    hosts: &[String],
    token_mode: bool,
    accept_unverified: bool,
) -> Result<TlsChoice, ConfigError> {
    let requested = settings.sslmode.as_ref().map(|s| s.value).unwrap_or_default();
    let requested_origin = settings
        .sslmode
        .as_ref()
        .map_or_else(|| "default".to_string(), |s| s.origin.clone());
    let roots = match &settings.sslrootcert {
        Some(file) if file.value.as_os_str() != "system" => Roots::File {
            path: file.value.clone(),
            origin: file.origin.clone(),
        },
        _ => Roots::BuiltIn,
    };
    let choice = |verification: Option<Verification>, reason: String| TlsChoice {
        requested,
        requested_origin: requested_origin.clone(),
        verification,
        roots: roots.clone(),
        reason,
    };
    let hostaddrs: &[IpAddr] = settings.hostaddrs.as_ref().map_or(&[], |a| a.value.as_slice());
    // With a hostaddr, libpq and tokio-postgres connect over TCP to it, whatever the host says: the
    // host is only the name TLS checks. A socket directory is no name to check.
    if let Some((host, addr)) = hosts.iter().zip(hostaddrs).find(|(h, _)| is_socket(h)) {
        return Err(ConfigError::invalid(
            settings.hostaddrs.as_ref().map_or("hostaddr", |a| a.origin.as_str()),
            addr.to_string(),
            format!(
                "a hostaddr for the unix-socket host {host:?} connects over TCP, where the socket directory is                  no name to verify the server's certificate against: give the server's name as host"
            ),
        ));
    }
    if hostaddrs.is_empty() && hosts.iter().all(|h| is_socket(h)) {
        return Ok(choice(
            None,
            "no TLS: unix sockets only, which never leave this machine".into(),
        ));
    }
    let roots_text = match &roots {
        Roots::BuiltIn => "the built-in roots".to_string(),
        Roots::File { path, origin } => format!("the roots in {} ({origin})", path.display()),
    };
    Ok(match requested {
        SslMode::Disable => {
            if token_mode {
                // Both what the host name says and where a hostaddr actually connects must stay on
                // this machine.
                let remote_name = hosts.iter().find(|h| !tls::is_local_host(h)).cloned();
                let remote_addr = hosts
                    .iter()
                    .zip(hostaddrs)
                    .find(|(_, a)| !a.is_loopback())
                    .map(|(h, a)| format!("{h} (hostaddr {a})"));
                if let Some(remote) = remote_name.or(remote_addr) {
                    return Err(ConfigError::CleartextToken {
                        origin: requested_origin,
                        host: remote,
                    });
                }
                // A name is connected to by the addresses checked for it, which leaves no place for a
                // socket directory in the same list (tokio-postgres pairs every host with an address).
                let named = hosts
                    .iter()
                    .enumerate()
                    .any(|(i, h)| hostaddrs.get(i).is_none() && !is_socket(h) && host_ip(h).is_none());
                if let (true, Some(socket)) = (named, hosts.iter().find(|h| is_socket(h))) {
                    return Err(ConfigError::invalid(
                        settings.hosts.as_ref().map_or("host", |h| h.origin.as_str()),
                        hosts.join(","),
                        format!(
                            "with sslmode=disable and a token, a host name is connected to by the loopback \
                             addresses it resolves to, which cannot be listed beside the unix-socket directory \
                             {socket:?}: give 127.0.0.1 or ::1 instead of the name, or use the socket alone"
                        ),
                    ));
                }
            }
            choice(
                None,
                format!("no TLS: sslmode=disable ({requested_origin}) with loopback hosts only"),
            )
        }
        SslMode::VerifyFull => choice(
            Some(Verification::Full),
            format!("verify-full ({requested_origin}): certificate chain to {roots_text} and host name checked"),
        ),
        SslMode::VerifyCa => {
            if settings
                .sslrootcert
                .as_ref()
                .is_some_and(|f| f.value.as_os_str() == "system")
            {
                return Err(ConfigError::invalid(
                    requested_origin,
                    "verify-ca",
                    "sslrootcert=system needs sslmode=verify-full (libpq refuses weaker modes with it)",
                ));
            }
            choice(
                Some(Verification::ChainOnly),
                format!(
                    "verify-ca ({requested_origin}): certificate chain to {roots_text} checked, host name not"
                ),
            )
        }
        SslMode::Require if accept_unverified => choice(
            Some(Verification::Unverified),
            format!(
                "require ({requested_origin}) with danger_accept_unverified_tls: encrypted but NOT verified; \
                 whoever answers at that address can take the token"
            ),
        ),
        SslMode::Require => match &roots {
            Roots::BuiltIn => choice(
                Some(Verification::Full),
                format!(
                    "require ({requested_origin}) verifies as verify-full: with the built-in roots require \
                     checks the chain and the host name, as libpq does with sslrootcert=system"
                ),
            ),
            Roots::File { .. } => choice(
                Some(Verification::ChainOnly),
                format!(
                    "require ({requested_origin}) verifies as verify-ca with {roots_text}, as libpq does when \
                     a root certificate file exists"
                ),
            ),
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_connection_string;

    fn plan(text: &str, options: &PlanOptions) -> Result<ConnectionPlan, ConfigError> {
        ConnectionPlan::new(&parse_connection_string(text).unwrap(), options)
    }

    fn verification(text: &str) -> Option<&'static str> {
        plan(text, &PlanOptions::default())
            .unwrap()
            .tls()
            .verification
            .map(Verification::as_sslmode)
    }

    #[test]
    fn verify_full_is_the_default() {
        assert_eq!(verification("host=db.example.com"), Some("verify-full"));
    }

    #[test]
    fn require_verifies_fully_with_the_built_in_roots() {
        assert_eq!(
            verification("host=db.example.com sslmode=require"),
            Some("verify-full")
        );
        assert_eq!(
            verification("host=db.example.com sslmode=require sslrootcert=system"),
            Some("verify-full")
        );
    }

    #[test]
    fn require_skips_verification_only_when_asked_by_name() {
        let options = PlanOptions::default().danger_accept_unverified_tls(true);
        let p = plan("host=db.example.com sslmode=require", &options).unwrap();
        assert!(p.tls().is_unverified());
        assert!(p.tls().reason.contains("NOT verified"), "{}", p.tls().reason);
        let full = plan("host=db.example.com", &options).unwrap();
        assert!(
            !full.tls().is_unverified(),
            "the option only changes what require means"
        );
    }

    #[test]
    fn cleartext_to_a_remote_host_name_is_refused_even_with_a_loopback_address() {
        let err = plan(
            "host=db.example.com hostaddr=127.0.0.1 sslmode=disable",
            &PlanOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::CleartextToken { host, .. } if host == "db.example.com"),
            "{err}"
        );
        assert!(plan("host=localhost sslmode=disable", &PlanOptions::default()).is_ok());
        assert!(plan(
            "host=localhost hostaddr=127.0.0.1 sslmode=disable",
            &PlanOptions::default()
        )
        .is_ok());
        assert!(plan(
            "host=db.example.com sslmode=disable",
            &PlanOptions::new(CredentialKind::StaticPassword)
        )
        .is_ok());
    }

    #[test]
    fn cleartext_to_a_remote_hostaddr_is_refused_even_with_a_loopback_name() {
        let err = plan(
            "host=localhost hostaddr=10.0.0.5 sslmode=disable",
            &PlanOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::CleartextToken { host, .. } if host.contains("10.0.0.5")),
            "{err}"
        );
    }

    #[test]
    fn a_unix_socket_host_with_a_hostaddr_is_refused_whatever_the_mode() {
        for mode in ["disable", "require", "verify-full"] {
            let err = plan(
                &format!("host=/var/run/postgresql hostaddr=10.0.0.5 sslmode={mode}"),
                &PlanOptions::default(),
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("hostaddr") || format!("{err:?}").contains("hostaddr"),
                "{err}"
            );
        }
        let unix = plan("host=/var/run/postgresql", &PlanOptions::default()).unwrap();
        assert_eq!(unix.tls().verification, None, "a unix socket alone needs no TLS");
    }

    #[test]
    fn a_password_is_refused_with_tokens() {
        let err = plan("host=h password=hunter2", &PlanOptions::default()).unwrap_err();
        assert!(matches!(err, ConfigError::PasswordNotAllowed { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }

    #[tokio::test]
    async fn libpq_gets_the_mode_in_force() {
        let p = plan(
            "host=db.example.com sslmode=require user=app",
            &PlanOptions::default(),
        )
        .unwrap();
        let env = p.libpq_env(Some(Path::new("/tmp/roots.pem"))).await.unwrap();
        assert!(env.contains(&("PGSSLMODE", "verify-full".to_string())), "{env:?}");
        assert!(
            env.contains(&("PGSSLROOTCERT", "/tmp/roots.pem".to_string())),
            "{env:?}"
        );
        assert!(env.contains(&("PGUSER", "app".to_string())), "{env:?}");
    }

    #[test]
    fn dead_connections_are_noticed_within_seconds_by_default() {
        let p = plan("host=db.example.com user=app", &PlanOptions::default()).unwrap();
        let c = p.config();
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(5)));
        assert_eq!(c.get_keepalives_retries(), Some(3));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
        let tuned = plan(
            "host=h user=app keepalives_idle=30 keepalives_count=2 tcp_user_timeout=5000",
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(tuned.config().get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(tuned.config().get_keepalives_retries(), Some(2));
        assert_eq!(
            tuned.config().get_tcp_user_timeout(),
            Some(&Duration::from_secs(5))
        );
    }

    #[tokio::test]
    async fn several_hosts_take_one_port_or_one_each() {
        let p = plan(
            "host=writer.example.com,reader.example.com port=5432,6432 target_session_attrs=read-write user=a",
            &PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(p.ports(), [5432, 6432]);
        assert_eq!(
            p.config().get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let env = p.libpq_env(None).await.unwrap();
        assert!(env.contains(&("PGPORT", "5432,6432".to_string())), "{env:?}");
        assert!(
            env.contains(&("PGTARGETSESSIONATTRS", "read-write".to_string())),
            "{env:?}"
        );
        assert!(plan("host=a,b,c port=1,2 user=u", &PlanOptions::default()).is_err());
        let err = parse_connection_string("host=a target_session_attrs=prefer-standby").unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
    }

    #[tokio::test]
    async fn localhost_with_a_token_in_cleartext_is_connected_to_by_its_checked_addresses() {
        let p = plan(
            "host=localhost port=6000 sslmode=disable user=app",
            &PlanOptions::default(),
        )
        .unwrap();
        assert!(p.checks_addresses(0, "localhost"));
        let checked = p.loopback_addresses("localhost", 6000).await.unwrap();
        assert!(
            !checked.is_empty() && checked.iter().all(|a| a.ip().is_loopback()),
            "{checked:?}"
        );
        let pinned = p.pinned_config().await.unwrap().unwrap();
        assert_eq!(pinned.get_hostaddrs().len(), checked.len());
        assert!(pinned.get_hostaddrs().iter().all(IpAddr::is_loopback));
        assert!(pinned.get_ports().iter().all(|port| *port == 6000));
        let env = p.libpq_env(None).await.unwrap();
        let hostaddr = env
            .iter()
            .find(|(k, _)| *k == "PGHOSTADDR")
            .map(|(_, v)| v.clone());
        assert!(hostaddr.is_some_and(|a| a
            .split(',')
            .all(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))));
    }

    #[tokio::test]
    async fn addresses_and_tls_need_no_check_by_address() {
        for text in [
            "host=127.0.0.1 sslmode=disable user=app",
            "host=/tmp sslmode=disable user=app",
            "host=localhost sslmode=verify-full user=app",
        ] {
            let p = plan(text, &PlanOptions::default()).unwrap();
            assert!(p.pinned_config().await.unwrap().is_none(), "{text}");
        }
        let static_password = plan(
            "host=localhost sslmode=disable user=app",
            &PlanOptions::new(CredentialKind::StaticPassword),
        )
        .unwrap();
        assert!(static_password.pinned_config().await.unwrap().is_none());
    }

    #[test]
    fn an_abstract_socket_is_refused_so_no_path_reads_it_as_a_host_name() {
        for text in [
            "host=@db.example.com user=app",
            "host=@db.example.com sslmode=disable user=app",
            "host=/tmp,@x user=app",
        ] {
            let err = plan(text, &PlanOptions::default()).unwrap_err();
            assert!(err.to_string().contains("abstract unix sockets"), "{text}: {err}");
        }
    }

    #[test]
    fn a_socket_directory_beside_a_name_is_refused_with_a_token_in_cleartext() {
        let err = plan(
            "host=/tmp,localhost sslmode=disable user=app",
            &PlanOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unix-socket directory"), "{err}");
    }
}
