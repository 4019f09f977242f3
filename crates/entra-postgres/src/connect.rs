//! [`EntraConnect`]: deadpool's connector that signs every new connection in with the current token.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Connect;
use entra_token::{AccessToken, TokenHandle};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config};

use crate::config::ConfigError;
use crate::error::ConnectError;
use crate::plan::{ConnectionPlan, CredentialKind};
use crate::refusal::{AzureRefusal, Phase};
use crate::tunnel::fail;

type BoxFuture<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The pool name metrics carry when none is given.
pub(crate) const DEFAULT_POOL_NAME: &str = "entra-pool";

/// How long a new connection waits for a server that is starting up or shutting down (SQLSTATE 57P03);
/// the pool's create timeout, when shorter, ends the wait first.
const SERVER_NOT_READY_WAIT: Duration = Duration::from_secs(30);

/// How long a new connection waits for a token by default.
pub(crate) const DEFAULT_TOKEN_WAIT: Duration = Duration::from_secs(15);

/// Where the password comes from.
#[derive(Clone)]
pub(crate) enum Credential {
    Token(TokenHandle),
    /// Static-password mode, chosen by name (tests, benchmarks, migrations off Entra).
    Password(Arc<secrecy::SecretString>),
}

/// A [`deadpool_postgres::Connect`] that opens connections by a [`ConnectionPlan`] and sets the password
/// of every new physical connection to the refresher's current token (never a stale copy).
///
/// It connects with its plan's settings and ignores the `Config` deadpool passes, so the plan's rules
/// (TLS verified, no token in cleartext) cannot be bypassed by a different config.
///
/// When the server refuses the token ([`AzureRefusal::is_token_problem`]: decided by when the server
/// refused and its SQLSTATE, never by its text alone), it [invalidates](TokenHandle::invalidate) it, waits
/// for the new one and retries once; a second refusal fails with [`ConnectError::TokenRejected`], which says what to
/// check.
///
/// ```no_run
/// # async fn demo(settings: entra_postgres::Settings, tokens: entra_token::TokenHandle) -> Result<(), Box<dyn std::error::Error>> {
/// use entra_postgres::{ConnectionPlan, EntraConnect, PlanOptions};
///
/// let plan = ConnectionPlan::new(&settings, &PlanOptions::default())?.resolve_role(&tokens).await?;
/// let config = plan.config().clone();
/// let connect = EntraConnect::new(plan, tokens)?;
/// let manager = deadpool_postgres::Manager::from_connect(config, connect, Default::default());
/// let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EntraConnect {
    plan: Arc<ConnectionPlan>,
    credential: Credential,
    token_wait: Duration,
    pool_name: Arc<str>,
    spares: Option<Arc<crate::spares::Spares>>,
    opened_in_checkout: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for EntraConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credential = match &self.credential {
            Credential::Token(t) => format!("{t:?}"),
            Credential::Password(_) => "static password".into(),
        };
        f.debug_struct("EntraConnect")
            .field("credential", &credential)
            .field("plan", &self.plan)
            .finish()
    }
}

impl EntraConnect {
    /// A connector signing in with `tokens` by `plan`, which must have been made for Entra tokens.
    pub fn new(plan: ConnectionPlan, tokens: TokenHandle) -> Result<Self, ConfigError> {
        if plan.credential() != CredentialKind::EntraToken {
            return Err(ConfigError::invalid(
                "EntraConnect::new",
                "",
                "the plan was made for static-password mode, whose rules do not protect a token: make it \
                 with CredentialKind::EntraToken",
            ));
        }
        Ok(EntraConnect {
            plan: Arc::new(plan),
            credential: Credential::Token(tokens),
            token_wait: DEFAULT_TOKEN_WAIT,
            pool_name: DEFAULT_POOL_NAME.into(),
            spares: None,
            opened_in_checkout: Arc::default(),
        })
    }

    /// A connector signing in with a fixed password by `plan` (static-password mode).
    pub fn with_static_password(plan: ConnectionPlan, password: secrecy::SecretString) -> Self {
        EntraConnect {
            plan: Arc::new(plan),
            credential: Credential::Password(Arc::new(password)),
            token_wait: DEFAULT_TOKEN_WAIT,
            pool_name: DEFAULT_POOL_NAME.into(),
            spares: None,
            opened_in_checkout: Arc::default(),
        }
    }

    pub(crate) fn with_spares(mut self, spares: Arc<crate::spares::Spares>) -> Self {
        self.spares = Some(spares);
        self
    }

    /// The connector without spares, for the task that opens them.
    pub(crate) fn without_spares(&self) -> Self {
        let mut plain = self.clone();
        plain.spares = None;
        plain
    }

    /// How this connector's connections came about.
    pub(crate) fn counts(&self) -> crate::spares::ConnectionCounts {
        crate::spares::ConnectionCounts {
            opened_in_checkout: self.opened_in_checkout.load(std::sync::atomic::Ordering::Relaxed),
            ..self.spares.as_ref().map(|s| s.counts()).unwrap_or_default()
        }
    }

    /// How long a new connection waits for a token before failing with [`ConnectError::Token`]
    /// (default 15 s).
    pub fn token_wait(mut self, wait: Duration) -> Self {
        self.token_wait = wait;
        self
    }

    /// How long a new connection waits for a token ([`token_wait`](Self::token_wait)), for fronts that
    /// drive the sign-in themselves (sqlx) and wait the same.
    pub fn get_token_wait(&self) -> Duration {
        self.token_wait
    }

    /// The pool's name in metrics (`db.client.connection.pool.name`; default `entra-pool`).
    pub fn pool_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.pool_name = name.into();
        self
    }

    /// The token handle, in token mode.
    pub fn tokens(&self) -> Option<&TokenHandle> {
        match &self.credential {
            Credential::Token(t) => Some(t),
            Credential::Password(_) => None,
        }
    }

    /// The plan connections are opened by.
    pub fn plan(&self) -> &ConnectionPlan {
        &self.plan
    }

    async fn token(&self, tokens: &TokenHandle) -> Result<AccessToken, ConnectError> {
        match tokio::time::timeout(self.token_wait, tokens.get()).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(e)) => Err(ConnectError::Token(e)),
            Err(_) => Err(ConnectError::Token(entra_token::TokenError::Unavailable {
                reason: format!("no token within {:?}", self.token_wait),
                last_error: tokens.status().last_error.map(Box::new),
            })),
        }
    }

    /// Signs in with the current token by `open`; when the server refuses it in a way a new token may
    /// cure, invalidates it, waits for the new one and retries once. The one place this rule lives, for
    /// pooled connections and raw sessions alike.
    async fn with_token<'s, T, E, F>(&'s self, tokens: &'s TokenHandle, open: &F) -> Result<T, Failed<E>>
    where
        E: Refusal,
        F: Fn(Password) -> BoxFuture<'s, Result<T, E>>,
    {
        // Read before the token, so the two are ordered: the token taken is of this generation or newer.
        let known = tokens.generation();
        let token = self.token(tokens).await.map_err(Failed::Ours)?;
        tracing::debug!(
            known_generation = known,
            token_generation = token.generation(),
            token = %token.fingerprint(),
            "signing in with the current token"
        );
        let first = match open(Password::Token(token.clone())).await {
            Ok(opened) => return Ok(opened),
            Err(e) => e,
        };
        let Some(rejection) = Rejection::of(&first) else {
            return Err(Failed::Theirs(first));
        };
        let role = self.plan.role().unwrap_or_default().to_string();
        crate::metrics::token_rejected(&self.pool_name);
        tracing::warn!(
            role,
            token = %token.fingerprint(),
            kind = ?rejection.kind,
            code = rejection.code,
            message = ?rejection.message,
            "server rejected the token; fetching a new one and retrying once"
        );
        tokens.invalidate(&token);
        let known = tokens.generation();
        let fresh = self.token(tokens).await.map_err(Failed::Ours)?;
        tracing::debug!(
            known_generation = known,
            token_generation = fresh.generation(),
            token = %fresh.fingerprint(),
            "signing in with the current token"
        );
        if fresh.same_as(&token) {
            // Fetched moments ago, so not refetched: a new token would be refused the same way.
            return Err(Failed::Ours(rejection.into_error(role)));
        }
        match open(Password::Token(fresh.clone())).await {
            Ok(opened) => {
                tracing::info!(token = %fresh.fingerprint(), "connected with the new token");
                Ok(opened)
            }
            Err(second) => match Rejection::of(&second) {
                Some(again) => {
                    tracing::error!(
                        role,
                        code = again.code,
                        message = ?again.message,
                        "server rejected a fresh token"
                    );
                    Err(Failed::Ours(again.into_error(role)))
                }
                None => Err(Failed::Theirs(second)),
            },
        }
    }

    /// Opens a session for a relay (such as `entra-proxy`) by this connector's plan, with the same token
    /// rules as the pool's connections: the current token, one retry with a fresh token after a refusal
    /// a new token may cure, and a wait for a server that is starting up. `parameters` are startup
    /// parameters passed on ([`ConnectionPlan::open_session`]).
    pub async fn open_session(
        &self,
        parameters: &[(String, String)],
    ) -> Result<crate::session::RawSession, crate::session::SessionError> {
        let open = |password: Password| -> BoxFuture<'_, _> {
            Box::pin(async move { self.plan.open_session(password.bytes(), parameters).await })
        };
        self.open_with(&open).await.map_err(|failed| match failed {
            Failed::Ours(e) => crate::session::SessionError::Token(e),
            Failed::Theirs(e) => e,
        })
    }
}

/// A failure of ours (no token, a token refused twice) or of the server's or network's.
pub(crate) enum Failed<E> {
    Ours(ConnectError),
    Theirs(E),
}

/// What a connection attempt signs in with.
#[derive(Clone)]
pub(crate) enum Password {
    Token(AccessToken),
    Static(Arc<secrecy::SecretString>),
}

impl Password {
    fn bytes(&self) -> &[u8] {
        match self {
            Password::Token(t) => t.secret().as_bytes(),
            Password::Static(p) => secrecy::ExposeSecret::expose_secret(&**p).as_bytes(),
        }
    }
}

/// A server's refusal of a connection attempt: when it came, its SQLSTATE and its message.
pub(crate) trait Refusal {
    fn refusal(&self) -> Option<(Phase, &str, &str)>;
}

impl Refusal for tokio_postgres::Error {
    fn refusal(&self) -> Option<(Phase, &str, &str)> {
        // tokio-postgres drives the handshake and does not say when the server refused.
        self.as_db_error()
            .map(|db| (Phase::Unknown, db.code().code(), db.message()))
    }
}

impl Refusal for crate::session::SessionError {
    fn refusal(&self) -> Option<(Phase, &str, &str)> {
        self.server_refusal()
    }
}

fn is_not_ready(e: &impl Refusal) -> bool {
    e.refusal().is_some_and(|(phase, code, message)| {
        AzureRefusal::classify(phase, code, message) == AzureRefusal::NotReady
    })
}

impl Connect for EntraConnect {
    fn connect(&self, _: &Config) -> BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>> {
        Box::pin(async move {
            if let Some(spare) = self.spares.as_ref().and_then(|s| s.take()) {
                tracing::debug!("connection handed over from the spares (replace-ahead)");
                return Ok(spare);
            }
            self.opened_in_checkout
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.open_new().await
        })
    }
}

impl EntraConnect {
    /// Opens one new physical connection by this connector's plan, for pools other than deadpool's
    /// (bb8, diesel-async) that ask for one connection at a time: the current token, one retry with a
    /// fresh token when the server refuses it in a way a new token may cure, and a wait for a server that
    /// is starting up. The connection's task is already spawned; its handle is returned with the client.
    ///
    /// Fails with tokio-postgres's error, as deadpool's connector must; failures of ours (no token, a
    /// token refused twice, a plan rule) travel inside it, and [`ConnectError::find`] gets them back.
    pub async fn open_connection(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        self.open_new().await
    }

    /// Opens a new physical connection: token, sign-in, the refused-token retry, and a wait for a server
    /// that is starting up.
    pub(crate) async fn open_new(&self) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
        let open = |password: Password| -> BoxFuture<'_, _> {
            Box::pin(async move { self.plan.open(password.bytes()).await })
        };
        match self.open_with(&open).await {
            Ok(opened) => Ok(opened),
            Err(Failed::Ours(e)) => Err(fail(e).await),
            Err(Failed::Theirs(e)) => Err(e),
        }
    }

    /// One connection attempt by `open` with this connector's credential, waiting for a server that
    /// answers 57P03, with its metrics and log lines.
    async fn open_with<'s, T, E, F>(&'s self, open: &F) -> Result<T, Failed<E>>
    where
        E: Refusal + std::error::Error + 'static,
        F: Fn(Password) -> BoxFuture<'s, Result<T, E>>,
    {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        let result = loop {
            let result = match &self.credential {
                Credential::Token(tokens) => self.with_token(tokens, open).await,
                Credential::Password(p) => open(Password::Static(p.clone())).await.map_err(Failed::Theirs),
            };
            // A server starting up or shutting down (a restart, a failover) answers 57P03 for a few
            // seconds: wait for it, within the pool's create timeout, rather than fail the caller.
            match &result {
                Err(Failed::Theirs(e))
                    if is_not_ready(e) && started.elapsed() + pause < SERVER_NOT_READY_WAIT =>
                {
                    tracing::debug!(
                        retry_in_ms = pause.as_millis() as u64,
                        "server not accepting connections yet"
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                _ => break result,
            }
        };
        match &result {
            Ok(_) => {
                crate::metrics::connection_created(&self.pool_name, started.elapsed());
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "connection created"
                )
            }
            Err(failed) => {
                let (kind, error): (_, &(dyn std::error::Error + 'static)) = match failed {
                    Failed::Ours(e @ ConnectError::Token(_)) => ("token", e),
                    Failed::Ours(e) => ("rejected", e),
                    Failed::Theirs(e) => ("server", e),
                };
                crate::metrics::connection_failed(&self.pool_name, kind);
                tracing::warn!(error = ?crate::report(error), "connection failed")
            }
        }
        result
    }
}

/// A server refusal that a new token may cure.
struct Rejection {
    kind: AzureRefusal,
    code: String,
    message: String,
}

impl Rejection {
    fn of(error: &impl Refusal) -> Option<Rejection> {
        let (phase, sqlstate, message) = error.refusal()?;
        let kind = AzureRefusal::classify(phase, sqlstate, message);
        kind.is_token_problem().then(|| Rejection {
            kind,
            code: sqlstate.to_string(),
            message: message.to_string(),
        })
    }

    fn into_error(self, role: String) -> ConnectError {
        ConnectError::TokenRejected {
            hint: self.kind.token_hint(&role),
            role,
            kind: self.kind,
            code: self.code,
            message: self.message,
        }
    }
}
