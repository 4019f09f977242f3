//! [`EntraConnect`]: deadpool's connector that signs every new connection in with the current token.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::Connect;
use entra_token::{AccessToken, TokenHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::NoTls;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::ConnectError;
use crate::tls::is_local_host;

type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How connections are secured.
#[derive(Clone)]
pub(crate) enum Transport {
    Tls(MakeRustlsConnect),
    Plain,
}

/// Where the password comes from.
#[derive(Clone)]
pub(crate) enum Credential {
    Token(TokenHandle),
    /// Static-password mode, chosen by name (tests, benchmarks, migrations off Entra).
    Password(Arc<secrecy::SecretString>),
}

/// A [`deadpool_postgres::Connect`] that sets the password of every new physical connection to the
/// refresher's current token (never a stale copy), over verified TLS by default.
///
/// When the server refuses the token (SQLSTATE 28P01/28000, or Azure's "access token has expired" /
/// "valid audience claim" messages), it [invalidates](TokenHandle::invalidate) it, waits for the new one
/// and retries once; a second refusal fails with [`ConnectError::TokenRejected`], which says what to
/// check.
#[derive(Clone)]
pub struct EntraConnect {
    pub(crate) credential: Credential,
    pub(crate) transport: Transport,
    pub(crate) token_wait: Duration,
}

impl std::fmt::Debug for EntraConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credential = match &self.credential {
            Credential::Token(t) => format!("{t:?}"),
            Credential::Password(_) => "static password".into(),
        };
        let transport = match self.transport {
            Transport::Tls(_) => "tls",
            Transport::Plain => "plain",
        };
        f.debug_struct("EntraConnect")
            .field("credential", &credential)
            .field("transport", &transport)
            .finish()
    }
}

impl EntraConnect {
    /// The token handle, in token mode.
    pub fn tokens(&self) -> Option<&TokenHandle> {
        match &self.credential {
            Credential::Token(t) => Some(t),
            Credential::Password(_) => None,
        }
    }

    async fn open(
        &self,
        config: &Config,
        password: &[u8],
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let mut config = config.clone();
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

    async fn token(&self, tokens: &TokenHandle) -> Result<AccessToken, tokio_postgres::Error> {
        match tokio::time::timeout(self.token_wait, tokens.get()).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(e)) => Err(fail(ConnectError::Token(e)).await),
            Err(_) => Err(fail(ConnectError::Token(entra_token::TokenError::Unavailable {
                reason: format!("no token within {:?}", self.token_wait),
                last_error: tokens.status().last_error.map(Box::new),
            }))
            .await),
        }
    }

    async fn connect_with_token(
        &self,
        config: &Config,
        tokens: &TokenHandle,
    ) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let token = self.token(tokens).await?;
        let first = match self.open(config, token.secret().as_bytes()).await {
            Ok(opened) => return Ok(opened),
            Err(e) => e,
        };
        let Some(rejection) = Rejection::of(&first) else {
            return Err(first);
        };
        let role = config.get_user().unwrap_or_default().to_string();
        tracing::warn!(
            role,
            token = %token.fingerprint(),
            code = rejection.code,
            message = rejection.message,
            "server rejected the token; fetching a new one and retrying once"
        );
        tokens.invalidate(&token);
        let fresh = self.token(tokens).await?;
        if fresh.same_as(&token) {
            // Fetched moments ago, so not refetched: a new token would be refused the same way.
            return Err(fail(rejection.into_error(role)).await);
        }
        match self.open(config, fresh.secret().as_bytes()).await {
            Ok(opened) => {
                tracing::info!(token = %fresh.fingerprint(), "connected with the new token");
                Ok(opened)
            }
            Err(second) => match Rejection::of(&second) {
                Some(again) => {
                    tracing::error!(
                        role,
                        code = again.code,
                        message = again.message,
                        "server rejected a fresh token"
                    );
                    Err(fail(again.into_error(role)).await)
                }
                None => Err(second),
            },
        }
    }
}

impl Connect for EntraConnect {
    fn connect(
        &self,
        pg_config: &Config,
    ) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        let config = pg_config.clone();
        Box::pin(async move {
            if matches!(self.transport, Transport::Plain) {
                if let Some(host) = remote_host(&config) {
                    if matches!(self.credential, Credential::Token(_)) {
                        return Err(fail(ConnectError::PlaintextToken { host }).await);
                    }
                }
            }
            let started = std::time::Instant::now();
            let result = match &self.credential {
                Credential::Token(tokens) => self.connect_with_token(&config, tokens).await,
                Credential::Password(p) => {
                    self.open(&config, secrecy::ExposeSecret::expose_secret(&**p).as_bytes())
                        .await
                }
            };
            match &result {
                Ok(_) => tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "connection created"
                ),
                Err(e) => tracing::warn!(error = %crate::report(e), "connection failed"),
            }
            result
        })
    }
}

fn remote_host(config: &Config) -> Option<String> {
    config.get_hosts().iter().find_map(|h| match h {
        tokio_postgres::config::Host::Tcp(name) if !is_local_host(name) => Some(name.clone()),
        _ => None,
    })
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed with an error");
        }
    })
}

/// A server refusal that a new token may cure.
struct Rejection {
    code: &'static str,
    message: String,
}

impl Rejection {
    fn of(error: &tokio_postgres::Error) -> Option<Rejection> {
        let db = error.as_db_error()?;
        let message = db.message().to_string();
        let token_message = message.contains("access token");
        let code = if *db.code() == SqlState::INVALID_PASSWORD {
            "28P01"
        } else if *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            // 28000 is also pg_hba's "no entry … SSL off": no token cures that.
            if message.contains("pg_hba.conf") {
                return None;
            }
            "28000"
        } else if token_message {
            "token"
        } else {
            return None;
        };
        Some(Rejection { code, message })
    }

    fn into_error(self, role: String) -> ConnectError {
        let hint = if self.message.contains("expired") {
            "The token was just fetched, so check this machine's clock (time sync) and the token's lifetime."
                .to_string()
        } else if self.message.contains("audience") {
            "Fetch the token for the scope https://ossrdbms-aad.database.windows.net/.default (sovereign clouds \
             have their own host); a token for another resource is refused."
                .to_string()
        } else {
            format!(
                "Check that the user name {role:?} is exactly the Entra principal's name (a managed identity's \
                 name, a group's display name, or a user's UPN; case-sensitive), that the principal was created \
                 with pgaadauth_create_principal('{role}', false, false) (or _with_oid) on the `postgres` \
                 database, that the token's identity (client id) is that principal, and that the database exists."
            )
        };
        ConnectError::TokenRejected {
            role,
            code: self.code.to_string(),
            message: self.message,
            hint,
        }
    }
}

/// Wraps our error in a `tokio_postgres::Error` (deadpool's connector must return one, and it has no
/// public constructor): a stream that fails at once, so no byte leaves this machine.
async fn fail(error: ConnectError) -> tokio_postgres::Error {
    let mut config = Config::new();
    config
        .user("entra-pool")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    match config
        .connect_raw(FailingStream(Some(std::io::Error::other(error))), NoTls)
        .await
    {
        Err(e) => e,
        // Unreachable: the stream fails its first read and write.
        Ok(_) => tokio_postgres::Error::__private_api_timeout(),
    }
}

struct FailingStream(Option<std::io::Error>);

impl FailingStream {
    fn take(&mut self) -> std::io::Error {
        self.0
            .take()
            .unwrap_or_else(|| std::io::Error::other("connection attempt abandoned"))
    }
}

impl AsyncRead for FailingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.take()))
    }
}

impl AsyncWrite for FailingStream {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(self.take()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(self.take()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn our_error_survives_inside_a_tokio_postgres_error() {
        let e = fail(ConnectError::PlaintextToken {
            host: "db.example.com".into(),
        })
        .await;
        let found = ConnectError::find(&e).expect("found in the chain");
        assert!(matches!(found, ConnectError::PlaintextToken { .. }));
        let text = crate::report(&e);
        assert!(
            text.contains("refusing to send an Entra token without TLS"),
            "{text}"
        );
        assert!(
            text.starts_with("error communicating with the server: "),
            "{text}"
        );
    }
}
