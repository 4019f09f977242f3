//! The rules a plan is checked against, decided here and nowhere else: no password with tokens, no token
//! in cleartext beyond loopback (by what the host names, where a `hostaddr` connects, and the addresses a
//! name resolves to), and the TLS mode in force with its roots. Reviewable alone, as rustls keeps its
//! verifier.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{ConnectionPlan, CredentialKind, PlanOptions, Roots, TlsChoice, Transport};
use crate::config::{ConfigError, Settings, SslMode};
use crate::tls::{self, Verification};

/// The rustls configuration for `tls`: its roots (built in, or a file), the extra roots of `options`,
/// and its verification. `None` without TLS.
pub(super) fn client_config(
    tls: &TlsChoice,
    options: &PlanOptions,
) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
    Ok(match tls.verification {
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
                    ConfigError::invalid("EntraConfig::add_root_certificate", "", e.to_string())
                })?;
            }
            Some(Arc::new(tls::client_config(verification, roots)?))
        }
        None => None,
    })
}

impl ConnectionPlan {
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
    pub(super) async fn pinned_targets(&self) -> Result<Option<Vec<(&str, IpAddr, u16)>>, ConfigError> {
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
                .unwrap_or(super::pg_config::DEFAULT_PORT);
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
}

/// Whether a host is a unix-socket directory (abstract sockets, `@name`, are refused by `check_rules`).
pub(super) fn is_socket(host: &str) -> bool {
    host.starts_with('/')
}

/// A host given as an address literal (`127.0.0.1`, `::1`, `[::1]`).
pub(super) fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Every rule, checked once: the password refusal, a host, the cleartext refusal and the TLS mode.
pub(super) fn check_rules(
    settings: &Settings,
    options: &PlanOptions,
) -> Result<(Vec<String>, TlsChoice), ConfigError> {
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
            how: "EntraConfig::host, host= in the connection string, AZURE_POSTGRESQL_HOST or PGHOST",
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
