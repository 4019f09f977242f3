//! Why a proxy could not start.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why [`ProxyBuilder::start`](crate::ProxyBuilder::start) failed. Each variant names what is wrong and
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A TCP address that is not loopback, without the option that allows it.
    #[error(
        "refusing to listen on {address}: it is not a loopback address, so other machines could sign in as \
         this identity. Listen on 127.0.0.1 / [::1] or a unix socket; to serve other machines on purpose, \
         use ProxyBuilder::allow_non_loopback (`entra-pg proxy --allow-non-loopback`) with client TLS and \
         the local secret"
    )]
    NonLoopback {
        /// The address.
        address: SocketAddr,
    },
    /// A non-loopback address allowed, but no TLS for clients.
    #[error(
        "listening on {address} beyond loopback needs TLS for clients: give a certificate and key \
         (ProxyBuilder::client_tls, `--tls-cert` and `--tls-key`)"
    )]
    RemoteNeedsTls {
        /// The address.
        address: SocketAddr,
    },
    /// A non-loopback address allowed, but clients would be identified by peer credentials, which only
    /// this machine's clients have.
    #[error(
        "listening on {address} beyond loopback needs the local secret for clients (LocalAuth::Secret, \
         `--auth secret`): peer credentials identify only this machine's processes"
    )]
    RemoteNeedsSecret {
        /// The address.
        address: SocketAddr,
    },
    /// Neither a TCP address nor a unix socket.
    #[error("nowhere to listen: give a TCP address (loopback) or a unix-socket directory")]
    NoListener,
    /// A TCP address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The health listener's address could not be bound.
    #[error("cannot listen for health checks on {address}")]
    HealthBind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The unix socket could not be made.
    #[error("cannot listen on the unix socket {}", path.display())]
    Socket {
        /// The socket file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file for client TLS could not be read.
    #[error("cannot read {} for client TLS", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file for client TLS holds no certificate, or no private key.
    #[error("{} holds no {what}: give a PEM file with the proxy's {what}", path.display())]
    TlsFileEmpty {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// rustls refused the certificate and key (a key that does not match the certificate, an
    /// unsupported key type…).
    #[error("the certificate and key cannot serve TLS")]
    TlsConfig(#[source] rustls::Error),
    /// The upstream side could not be prepared: the configuration is unusable, or no first token could be
    /// had (the source says which).
    #[error("cannot prepare the upstream side")]
    Upstream(#[source] entra_postgres::BuildError),
    /// The connection test ([`ProxyBuilder::run_connection_test`](crate::ProxyBuilder::run_connection_test))
    /// could not sign in upstream; `entra_postgres::diagnose` on the source names the cause and the fix.
    /// (Boxed: a session error is large, and every other variant is small.)
    #[error("the connection test could not sign in upstream")]
    ConnectionTest(#[source] Box<entra_postgres::SessionError>),
    /// The connector was made for static-password mode, whose rules do not protect a token.
    #[error("the proxy signs clients in with Entra tokens; build its connector without a static password")]
    NotTokenMode,
    /// The configured role is unknown (no user configured and none derived from the token).
    #[error("the role to sign in as is not known: set the user (PGUSER, AZURE_POSTGRESQL_USER) or use a token that names one")]
    NoRole,
}
