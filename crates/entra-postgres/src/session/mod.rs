//! [`RawSession`]: a session signed in by a [`ConnectionPlan`], handed over as a byte stream, for relays
//! such as `entra-proxy`.
//!
//! The pool's connections are tokio-postgres clients; a relay needs the socket itself, past
//! authentication, to copy a client's bytes to. This module opens that socket the way the plan says: the
//! plan's hosts (DNS resolved again on every attempt, or its `hostaddr`), ports, connect timeout, TCP
//! keepalives and `tcp_user_timeout`, and its TLS (the same rustls configuration and verification as the
//! pool; a server that declines TLS is never talked to in cleartext when the plan says TLS). The
//! server's answer up to `ReadyForQuery` is read here and kept, so a relay can pass it on.
//!
//! Only the password exchanges Azure uses are spoken: cleartext password (what Azure asks for to receive
//! an Entra token, over TLS). A server that asks for MD5, SCRAM, GSS or SSPI is refused with
//! [`SessionError::UnsupportedAuthentication`]; the deadpool pool supports those through tokio-postgres.

mod apply;
mod attrs;
mod dial;
mod greeting;
mod startup;
mod stream;

use crate::error::ConnectError;
use crate::plan::ConnectionPlan;
use crate::refusal::{AzureRefusal, Phase};

use attrs::suits;
use dial::secure;
pub use dial::CancelTarget;
pub(crate) use dial::{connect_to, request_tls, Address, Socket};
use greeting::Greeting;
pub use startup::RESERVED_STARTUP_PARAMETERS;
pub use stream::SessionStream;

/// Why a raw session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No usable token, the server refused a fresh one too, or the plan refused to connect (ours, not
    /// the server's or the network's).
    #[error(transparent)]
    Token(ConnectError),
    /// The host name could not be resolved.
    #[error("could not resolve {host}")]
    Resolve {
        /// The host name.
        host: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The host could not be reached (TCP, or the connect timeout).
    #[error("could not connect to {host}:{port}")]
    Connect {
        /// The host name (or unix-socket directory).
        host: String,
        /// The port.
        port: u16,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The server declined TLS, which the plan requires: nothing was sent.
    #[error("{host} does not accept TLS, which the connection plan requires; no password was sent")]
    TlsRefused {
        /// The host.
        host: String,
    },
    /// The TLS handshake failed (an untrusted certificate, a name mismatch…).
    #[error("TLS with {host} failed")]
    Tls {
        /// The host.
        host: String,
        /// rustls's error, inside an I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the session with an `ErrorResponse`.
    #[error("the server refused the session: {severity} {code}: {message}")]
    Server {
        /// When it refused: before the password was asked for, in answer to it, or after
        /// `AuthenticationOk` ([`AzureRefusal::classify`](crate::AzureRefusal::classify) reads it).
        phase: Phase,
        /// `FATAL`, `ERROR`…
        severity: String,
        /// The SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
        /// Its detail, if any.
        detail: Option<String>,
        /// Its hint, if any.
        hint: Option<String>,
    },
    /// The server asked for an authentication exchange this module does not speak.
    #[error(
        "the server asked for {method} authentication; sessions for relays sign in with a cleartext password \
         over TLS (how Azure takes an Entra token)"
    )]
    UnsupportedAuthentication {
        /// The method asked for.
        method: &'static str,
    },
    /// The server broke the protocol, or the connection dropped during startup.
    #[error("protocol error with {host}: {what}")]
    Protocol {
        /// The host.
        host: String,
        /// What went wrong.
        what: String,
    },
    /// No host matched `target_session_attrs`.
    #[error("no host is {wanted} (target_session_attrs)")]
    NoSuitableHost {
        /// `read-write` or `read-only`.
        wanted: &'static str,
    },
    /// A startup parameter the plan decides was given by the caller.
    #[error("the startup parameter {0:?} is decided by the connection plan and cannot be set per session")]
    ReservedParameter(String),
}

impl SessionError {
    /// When the server refused, its SQLSTATE and its message, when the server refused.
    pub fn server_refusal(&self) -> Option<(Phase, &str, &str)> {
        match self {
            SessionError::Server {
                phase, code, message, ..
            } => Some((*phase, code, message)),
            _ => None,
        }
    }

    /// What the server's refusal means, when the server refused.
    pub fn refusal(&self) -> Option<AzureRefusal> {
        self.server_refusal()
            .map(|(phase, code, message)| AzureRefusal::classify(phase, code, message))
    }
}

/// A session past authentication: its socket, and what the server said before `ReadyForQuery`.
#[derive(Debug)]
pub struct RawSession {
    stream: SessionStream,
    greeting: Greeting,
    cancel: Option<CancelTarget>,
    host: String,
    port: u16,
    /// The plan's connect timeout, which also bounds [`apply_parameters`](Self::apply_parameters).
    connect_timeout: Option<std::time::Duration>,
}

impl RawSession {
    /// The server's `ParameterStatus` and `NoticeResponse` messages after authentication, as received
    /// (wire format, in order), without its `BackendKeyData` and `ReadyForQuery`: a relay passes these on,
    /// then its own key and `ReadyForQuery`.
    pub fn greeting(&self) -> &[u8] {
        self.greeting.bytes()
    }

    /// The server's parameters (`server_version`, `TimeZone`…).
    pub fn parameters(&self) -> &[(String, String)] {
        self.greeting.parameters()
    }

    /// The server's parameter `name`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Where to cancel this session's statements (the server sent a backend key).
    pub fn cancel_target(&self) -> Option<&CancelTarget> {
        self.cancel.as_ref()
    }

    /// The host the session is on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The socket, positioned after the server's first `ReadyForQuery` (idle, no transaction).
    pub fn into_stream(self) -> SessionStream {
        self.stream
    }
}

impl ConnectionPlan {
    /// Opens a session with `password` and hands over its socket past authentication, for a relay.
    ///
    /// `parameters` are startup parameters passed on (`application_name`, `client_encoding`,
    /// `DateStyle`, `options`…); `user`, `database` and `replication` are the plan's to decide and are
    /// refused here. Hosts are tried in order, as libpq does; the last failure is returned. No retry and
    /// no token logic: [`EntraConnect::open_session`](crate::EntraConnect::open_session) adds those.
    pub async fn open_session(
        &self,
        password: &[u8],
        parameters: &[(String, String)],
    ) -> Result<RawSession, SessionError> {
        refuse_reserved(parameters)?;
        let attrs = self
            .settings()
            .target_session_attrs
            .as_ref()
            .map(|a| a.value)
            .unwrap_or_default();
        let mut last = None;
        for (i, host) in self.hosts().iter().enumerate() {
            let port = self
                .ports()
                .get(i)
                .or_else(|| self.ports().first())
                .copied()
                .unwrap_or_else(|| self.port());
            let addresses = match self.addresses(i, host, port).await {
                Ok(a) => a,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            for address in addresses {
                match self.try_address(&address, host, port, password, parameters).await {
                    Ok(session) => match suits(session, attrs).await {
                        Ok(session) => return Ok(session),
                        Err(e) => last = Some(e),
                    },
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or(SessionError::NoSuitableHost { wanted: "any" }))
    }

    async fn try_address(
        &self,
        address: &Address,
        host: &str,
        port: u16,
        password: &[u8],
        parameters: &[(String, String)],
    ) -> Result<RawSession, SessionError> {
        let timeout = self.config().get_connect_timeout().copied();
        let open = async {
            let socket = connect_to(address, host, Some(self.config())).await?;
            let mut stream = secure(socket, host, self.transport()).await?;
            let (greeting, key) = self.sign_in(&mut stream, host, password, parameters).await?;
            Ok(RawSession {
                stream,
                greeting,
                cancel: key.map(|(process_id, secret_key)| CancelTarget {
                    address: address.clone(),
                    host: host.to_string(),
                    transport: self.transport().clone(),
                    process_id,
                    secret_key,
                }),
                host: host.to_string(),
                port,
                connect_timeout: timeout,
            })
        };
        within_connect_timeout(timeout, host, port, open).await
    }
}

/// Runs `step` of a session on `host:port` within the plan's connect timeout (none: as long as it
/// takes): opening it, and applying parameters to it later, are bounded alike.
async fn within_connect_timeout<T>(
    timeout: Option<std::time::Duration>,
    host: &str,
    port: u16,
    step: impl std::future::Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    match timeout {
        Some(t) => tokio::time::timeout(t, step).await.unwrap_or_else(|_| {
            Err(SessionError::Connect {
                host: host.to_string(),
                port,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within the connect timeout ({t:?})"),
                ),
            })
        }),
        None => step.await,
    }
}

/// Refuses the startup parameters the plan decides ([`RESERVED_STARTUP_PARAMETERS`]).
fn refuse_reserved(parameters: &[(String, String)]) -> Result<(), SessionError> {
    match parameters
        .iter()
        .find(|(k, _)| RESERVED_STARTUP_PARAMETERS.contains(&k.as_str()))
    {
        Some((key, _)) => Err(SessionError::ReservedParameter(key.clone())),
        None => Ok(()),
    }
}

impl From<ConnectError> for SessionError {
    fn from(e: ConnectError) -> Self {
        SessionError::Token(e)
    }
}
