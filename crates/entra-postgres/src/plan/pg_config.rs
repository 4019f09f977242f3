//! The `tokio_postgres::Config` of a plan: the settings' values, with our defaults where none is set.

use std::net::IpAddr;
use std::time::Duration;

use super::{ConnectionPlan, Transport};
use crate::config::{ConfigError, Settings};

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
pub(super) const DEFAULT_PORT: u16 = 5432;
const DEFAULT_DBNAME: &str = "postgres";

/// The database: the configured one, else `postgres`.
pub(super) fn dbname(settings: &Settings) -> String {
    settings
        .dbname
        .as_ref()
        .map_or_else(|| DEFAULT_DBNAME.to_string(), |d| d.value.clone())
}

/// The ports: one for every host, or one per host.
pub(super) fn ports(settings: &Settings, hosts: &[String]) -> Result<Vec<u16>, ConfigError> {
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
    Ok(ports)
}

/// Everything but where to connect.
pub(super) fn base(
    settings: &Settings,
    dbname: &str,
    role: Option<&str>,
    transport: &Transport,
) -> tokio_postgres::Config {
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
        .dbname(dbname)
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
    if let Some(role) = role {
        config.user(role);
    }
    base
}

/// `base` with the hosts, their addresses and ports.
pub(super) fn with_hosts(
    base: &tokio_postgres::Config,
    hosts: &[String],
    hostaddrs: &[IpAddr],
    ports: &[u16],
) -> tokio_postgres::Config {
    let mut config = base.clone();
    for host in hosts {
        config.host(host);
    }
    for addr in hostaddrs {
        config.hostaddr(*addr);
    }
    for port in ports {
        config.port(*port);
    }
    config
}

impl ConnectionPlan {
    /// The config to connect with when some host's addresses must be checked first ([`Self::pinned_targets`]).
    pub(super) async fn pinned_config(&self) -> Result<Option<tokio_postgres::Config>, ConfigError> {
        let Some(targets) = self.pinned_targets().await? else {
            return Ok(None);
        };
        let mut config = self.base.clone();
        for (host, addr, port) in targets {
            config.host(host).hostaddr(addr).port(port);
        }
        Ok(Some(config))
    }
}
