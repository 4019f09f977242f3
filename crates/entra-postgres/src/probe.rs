//! [`ConnectionPlan::reach`]: how far a connection gets before it signs in, step by step, for
//! `entra-pg doctor` and for services that check their path to the server at start.
//!
//! It dials exactly as a session does (the plan's addresses, with the loopback check for a name that
//! would carry a token without TLS; its connect timeout and keepalives; PostgreSQL's TLS request and
//! the plan's rustls verification) and stops after TLS: no startup message, no password.

use std::sync::Arc;
use std::time::Duration;

use crate::plan::ConnectionPlan;
use crate::session::{connect_to, request_tls, Address, SessionError, Socket};

/// The wait when the plan sets no connect timeout.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// One step a connection got through.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReachStep {
    /// The host's addresses: what DNS gave (checked to be loopback where no TLS protects a token), its
    /// `hostaddr`, or its unix socket.
    Resolved {
        /// The host name (or socket directory).
        host: String,
        /// Where connections to it go.
        addresses: Vec<String>,
    },
    /// A socket was connected to this address.
    Connected {
        /// The address (or socket path).
        address: String,
    },
    /// The server took PostgreSQL's TLS request and the handshake passed the plan's verification.
    Tls {
        /// The protocol version negotiated (`TLSv1_3`…).
        version: String,
    },
}

/// How far a connection got ([`ConnectionPlan::reach`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct Reach {
    /// The steps passed, in order.
    pub steps: Vec<ReachStep>,
    /// Why the next step failed; `None` when every step passed.
    pub error: Option<SessionError>,
}

impl Reach {
    /// Whether the connection got as far as a session would before signing in.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

impl ConnectionPlan {
    /// Connects to the plan's first host as a session does and stops after TLS (or after the connect,
    /// without TLS): nothing of the credential is sent. Each address is tried in turn, as libpq does;
    /// the steps of the first that got furthest are kept.
    pub async fn reach(&self) -> Reach {
        let mut steps = Vec::new();
        let Some(host) = self.hosts().first().cloned() else {
            return Reach {
                steps,
                error: Some(SessionError::NoSuitableHost { wanted: "any" }),
            };
        };
        let port = self.port();
        let addresses = match self.addresses(0, &host, port).await {
            Ok(addresses) => addresses,
            Err(e) => {
                return Reach {
                    steps,
                    error: Some(e),
                }
            }
        };
        steps.push(ReachStep::Resolved {
            host: host.clone(),
            addresses: addresses.iter().map(describe).collect(),
        });
        let wait = self
            .config()
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_WAIT);
        let mut error = None;
        for address in &addresses {
            let socket =
                match tokio::time::timeout(wait, connect_to(address, &host, Some(self.config()))).await {
                    Ok(Ok(socket)) => socket,
                    Ok(Err(e)) => {
                        error = Some(e);
                        continue;
                    }
                    Err(_) => {
                        error = Some(timed_out(&host, port, wait));
                        continue;
                    }
                };
            steps.push(ReachStep::Connected {
                address: describe(address),
            });
            // A unix socket, or TCP without TLS (loopback only, by the plan's rules): nothing more to check.
            let (tcp, config) = match (socket, self.rustls_config()) {
                (Socket::Tcp(tcp), Some(config)) => (tcp, config),
                _ => return Reach { steps, error: None },
            };
            return match tokio::time::timeout(wait, handshake(tcp, &host, config)).await {
                Ok(Ok(version)) => {
                    steps.push(ReachStep::Tls { version });
                    Reach { steps, error: None }
                }
                Ok(Err(e)) => Reach {
                    steps,
                    error: Some(e),
                },
                Err(_) => Reach {
                    steps,
                    error: Some(timed_out(&host, port, wait)),
                },
            };
        }
        Reach { steps, error }
    }
}

/// PostgreSQL's TLS request, then a handshake verified by the plan's rustls configuration.
async fn handshake(
    mut tcp: tokio::net::TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, SessionError> {
    request_tls(&mut tcp, host).await?;
    let failed = |source: std::io::Error| SessionError::Tls {
        host: host.to_string(),
        source,
    };
    // The name exactly as sessions give it to their TLS connector, so the probe passes only where they do.
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(failed)?;
    Ok(tls
        .get_ref()
        .1
        .protocol_version()
        .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}")))
}

fn describe(address: &Address) -> String {
    match address {
        Address::Tcp(addr) => addr.to_string(),
        Address::Unix(path) => path.display().to_string(),
    }
}

fn timed_out(host: &str, port: u16, wait: Duration) -> SessionError {
    SessionError::Connect {
        host: host.to_string(),
        port,
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {wait:?}")),
    }
}
