//! [`Settings`]: one layer of connection settings, and how layers combine.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

/// libpq's `sslmode`, as far as it makes sense with tokens (which are passwords: never in plaintext to a
/// remote host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// TLS, certificate chain and host name verified (the default).
    #[default]
    VerifyFull,
    /// TLS, certificate chain verified, host name not checked.
    VerifyCa,
    /// TLS without any verification: encrypted, but open to an active attacker. Chosen by name only.
    Require,
    /// No TLS. Refused with a token unless the host is loopback or a unix socket.
    Disable,
}

impl SslMode {
    /// Parses a libpq `sslmode` value; `origin` names where it came from for the error.
    pub fn parse(value: &str, origin: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "verify-full" | "verify_full" | "verifyfull" => Ok(SslMode::VerifyFull),
            "verify-ca" | "verify_ca" | "verifyca" => Ok(SslMode::VerifyCa),
            "require" | "required" => Ok(SslMode::Require),
            "disable" | "disabled" => Ok(SslMode::Disable),
            "prefer" | "allow" | "preferred" => Err(ConfigError::invalid(
                origin,
                value,
                "`prefer`/`allow` may fall back to plaintext, which would send the token in the clear; use \
                 `verify-full` (recommended) or `require`",
            )),
            _ => Err(ConfigError::invalid(
                origin,
                value,
                "expected verify-full, verify-ca, require or disable",
            )),
        }
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::VerifyFull => "verify-full",
            SslMode::VerifyCa => "verify-ca",
            SslMode::Require => "require",
            SslMode::Disable => "disable",
        }
    }
}

/// libpq's `target_session_attrs`, as far as tokio-postgres offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionAttrs {
    /// Any server (the default).
    #[default]
    Any,
    /// A server that accepts writes (the primary, after any promotion): `transaction_read_only` off.
    ReadWrite,
    /// A server that accepts only reads (a replica, or a primary set read-only).
    ReadOnly,
}

impl SessionAttrs {
    /// Parses a libpq value; `origin` names where it came from for the error.
    pub fn parse(value: &str, origin: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "any" => Ok(SessionAttrs::Any),
            "read-write" | "read_write" => Ok(SessionAttrs::ReadWrite),
            "read-only" | "read_only" => Ok(SessionAttrs::ReadOnly),
            "primary" | "standby" | "prefer-standby" => Err(ConfigError::invalid(
                origin,
                value,
                "tokio-postgres checks transaction_read_only, not recovery: use read-write for the primary \
                 and read-only for a standby (prefer-standby is not offered: list the standby first with \
                 target_session_attrs=any)",
            )),
            _ => Err(ConfigError::invalid(
                origin,
                value,
                "expected any, read-write or read-only",
            )),
        }
    }

    /// The libpq name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
        }
    }
}

fn whole_number(value: &str, origin: &str, unit: &str) -> Result<u64, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| ConfigError::invalid(origin, value, format!("expected whole {unit}, e.g. 10")))
}

/// A value and where it came from, so errors and diagnostics can name the variable or key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Where it came from: `PGHOST`, `connection string key "host"`, `EntraConfig::host`…
    pub origin: String,
}

impl<T> Sourced<T> {
    /// `value`, found in `origin`.
    pub fn new(value: T, origin: impl Into<String>) -> Self {
        Sourced {
            value,
            origin: origin.into(),
        }
    }
}

/// One layer of settings (the builder, a connection string, Service Connector's variables, libpq's
/// variables). Unset fields fall through to lower layers.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Settings {
    /// Server host names (several for failover) or unix-socket directories.
    pub hosts: Option<Sourced<Vec<String>>>,
    /// IP addresses to connect to instead of resolving `hosts` (libpq's `hostaddr`); TLS still verifies
    /// the host name.
    pub hostaddrs: Option<Sourced<Vec<std::net::IpAddr>>>,
    /// Server ports: one for every host, or one per host in the same order (libpq's `port=5432,5433`).
    pub ports: Option<Sourced<Vec<u16>>>,
    /// Database name.
    pub dbname: Option<Sourced<String>>,
    /// Role name: the Entra principal's name.
    pub user: Option<Sourced<String>>,
    /// A password found in the configuration (an error unless static-password mode is chosen).
    pub password: Option<Sourced<secrecy::SecretString>>,
    /// TLS mode.
    pub sslmode: Option<Sourced<SslMode>>,
    /// CA certificates file (replaces the default roots, as in libpq), or `system`.
    pub sslrootcert: Option<Sourced<PathBuf>>,
    /// `application_name`.
    pub application_name: Option<Sourced<String>>,
    /// Connect timeout.
    pub connect_timeout: Option<Sourced<Duration>>,
    /// TCP keepalives on idle connections (libpq's `keepalives`, default on).
    pub keepalives: Option<Sourced<bool>>,
    /// Idle time before the first keepalive probe (`keepalives_idle`, default 10 s).
    pub keepalives_idle: Option<Sourced<Duration>>,
    /// Time between probes (`keepalives_interval`, default 5 s).
    pub keepalives_interval: Option<Sourced<Duration>>,
    /// Unanswered probes before the connection is dead (`keepalives_count`, default 3).
    pub keepalives_count: Option<Sourced<u32>>,
    /// How long sent data may stay unacknowledged before the connection is dead (`tcp_user_timeout`,
    /// default 20 s; 0 leaves it to the kernel).
    pub tcp_user_timeout: Option<Sourced<Duration>>,
    /// Which server of several to use (`target_session_attrs`: `any`, `read-write`, `read-only`).
    pub target_session_attrs: Option<Sourced<SessionAttrs>>,
    /// Server `options` (e.g. `-c search_path=app`).
    pub options: Option<Sourced<String>>,
    /// Client id of a user-assigned managed identity or of a service principal.
    pub client_id: Option<Sourced<String>>,
    /// Tenant of a service principal.
    pub tenant_id: Option<Sourced<String>>,
    /// Secret of a service principal.
    pub client_secret: Option<Sourced<secrecy::SecretString>>,
}

impl Settings {
    /// Settings in which every field of `higher` that is set wins over this layer's.
    pub fn overlaid_with(self, higher: Settings) -> Settings {
        // Destructured so that a new field cannot be forgotten here.
        let Settings {
            hosts,
            hostaddrs,
            ports,
            dbname,
            user,
            password,
            sslmode,
            sslrootcert,
            application_name,
            connect_timeout,
            keepalives,
            keepalives_idle,
            keepalives_interval,
            keepalives_count,
            tcp_user_timeout,
            target_session_attrs,
            options,
            client_id,
            tenant_id,
            client_secret,
        } = higher;
        Settings {
            hosts: hosts.or(self.hosts),
            hostaddrs: hostaddrs.or(self.hostaddrs),
            ports: ports.or(self.ports),
            dbname: dbname.or(self.dbname),
            user: user.or(self.user),
            password: password.or(self.password),
            sslmode: sslmode.or(self.sslmode),
            sslrootcert: sslrootcert.or(self.sslrootcert),
            application_name: application_name.or(self.application_name),
            connect_timeout: connect_timeout.or(self.connect_timeout),
            keepalives: keepalives.or(self.keepalives),
            keepalives_idle: keepalives_idle.or(self.keepalives_idle),
            keepalives_interval: keepalives_interval.or(self.keepalives_interval),
            keepalives_count: keepalives_count.or(self.keepalives_count),
            tcp_user_timeout: tcp_user_timeout.or(self.tcp_user_timeout),
            target_session_attrs: target_session_attrs.or(self.target_session_attrs),
            options: options.or(self.options),
            client_id: client_id.or(self.client_id),
            tenant_id: tenant_id.or(self.tenant_id),
            client_secret: client_secret.or(self.client_secret),
        }
    }

    /// Sets one key as libpq names it (`host`, `hostaddr`, `port`, `dbname`, `user`, `password`,
    /// `sslmode`, `sslrootcert`, `application_name`, `connect_timeout`, `keepalives*`, `tcp_user_timeout`,
    /// `target_session_attrs`, `options`) from `origin`.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        fn src<T>(value: T, origin: &str) -> Sourced<T> {
            Sourced {
                value,
                origin: origin.to_string(),
            }
        }
        match key {
            "hostaddr" => {
                let addrs = value
                    .split(',')
                    .map(|a| a.trim().parse::<std::net::IpAddr>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        ConfigError::invalid(origin, value, "expected IP addresses separated by commas")
                    })?;
                self.hostaddrs = Some(src(addrs, origin));
            }
            "host" => {
                let hosts: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect();
                if hosts.is_empty() {
                    return Err(ConfigError::invalid(origin, value, "the host is empty"));
                }
                self.hosts = Some(src(hosts, origin));
            }
            "port" => {
                let ports = value
                    .split(',')
                    .map(|p| p.trim().parse::<u16>().ok().filter(|p| *p != 0))
                    .collect::<Option<Vec<u16>>>()
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            origin,
                            value,
                            "expected a port number 1-65535, or one per host separated by commas",
                        )
                    })?;
                self.ports = Some(src(ports, origin));
            }
            "keepalives" => {
                let on = match value.trim() {
                    "1" => true,
                    "0" => false,
                    _ => return Err(ConfigError::invalid(origin, value, "expected 1 (on) or 0 (off)")),
                };
                self.keepalives = Some(src(on, origin));
            }
            "keepalives_idle" | "keepalives_interval" => {
                let secs = whole_number(value, origin, "seconds")?;
                let d = Some(src(Duration::from_secs(secs), origin));
                if key == "keepalives_idle" {
                    self.keepalives_idle = d;
                } else {
                    self.keepalives_interval = d;
                }
            }
            "keepalives_count" => {
                let n = u32::try_from(whole_number(value, origin, "probes")?)
                    .map_err(|_| ConfigError::invalid(origin, value, "too many probes"))?;
                self.keepalives_count = Some(src(n, origin));
            }
            "tcp_user_timeout" => {
                let ms = whole_number(value, origin, "milliseconds")?;
                self.tcp_user_timeout = Some(src(Duration::from_millis(ms), origin));
            }
            "target_session_attrs" => {
                self.target_session_attrs = Some(src(SessionAttrs::parse(value, origin)?, origin));
            }
            "dbname" | "database" => self.dbname = Some(src(value.to_string(), origin)),
            "user" => self.user = Some(src(value.to_string(), origin)),
            "password" => {
                self.password = Some(Sourced {
                    value: secrecy::SecretString::from(value.to_string()),
                    origin: origin.into(),
                })
            }
            "sslmode" => {
                self.sslmode = Some(Sourced {
                    value: SslMode::parse(value, origin)?,
                    origin: origin.into(),
                })
            }
            "sslrootcert" => {
                self.sslrootcert = Some(Sourced {
                    value: PathBuf::from(value),
                    origin: origin.into(),
                })
            }
            "application_name" => self.application_name = Some(src(value.to_string(), origin)),
            "connect_timeout" => {
                let secs = value
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| ConfigError::invalid(origin, value, "expected whole seconds, e.g. 10"))?;
                // libpq: zero means wait forever; we never wait forever.
                let secs = if secs == 0 { 30 } else { secs.max(2) };
                self.connect_timeout = Some(Sourced {
                    value: Duration::from_secs(secs),
                    origin: origin.into(),
                });
            }
            "options" => self.options = Some(src(value.to_string(), origin)),
            _ => {
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_string(),
                    key: key.to_string(),
                    supported: "host, hostaddr, port, dbname, user, sslmode, sslrootcert, application_name, \
                                connect_timeout, keepalives, keepalives_idle, keepalives_interval, \
                                keepalives_count, tcp_user_timeout, target_session_attrs, options",
                });
            }
        }
        Ok(())
    }
}
