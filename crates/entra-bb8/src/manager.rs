//! [`EntraConnectionManager`]: bb8's connection manager over our connector.

use entra_postgres::EntraConnect;
use tokio_postgres::Client;

/// A `bb8::ManageConnection` whose connections are `tokio_postgres::Client`s opened by an
/// [`EntraConnect`]: each signs in with the refresher's current token, retried once with a fresh one when
/// the server refuses it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use entra_bb8::EntraConnectionManager;
///
/// let connect = entra_postgres::EntraConfig::from_env().build_connector().await?;
/// let pool = bb8::Pool::builder()
///     .max_size(8)
///     .build_unchecked(EntraConnectionManager::new(connect));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EntraConnectionManager {
    connect: EntraConnect,
}

impl EntraConnectionManager {
    /// A manager opening connections with `connect` (from
    /// [`EntraConfig::build_connector`](entra_postgres::EntraConfig::build_connector)).
    pub fn new(connect: EntraConnect) -> Self {
        EntraConnectionManager { connect }
    }

    /// The connector connections are opened with (its plan, its token handle).
    pub fn connector(&self) -> &EntraConnect {
        &self.connect
    }
}

impl bb8::ManageConnection for EntraConnectionManager {
    type Connection = Client;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        // The connection's task is already spawned and ends when the client drops.
        let (client, _task) = self.connect.open_connection().await?;
        Ok(client)
    }

    async fn is_valid(&self, client: &mut Client) -> Result<(), tokio_postgres::Error> {
        client.simple_query("").await.map(|_| ())
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}

/// A bb8 error sink that logs each error bb8 does not return to a caller (a connection that could not
/// be opened, a connection found broken) as a `tracing` warning with its whole chain of causes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogErrors;

impl bb8::ErrorSink<tokio_postgres::Error> for LogErrors {
    fn sink(&self, error: tokio_postgres::Error) {
        tracing::warn!(error = %entra_postgres::report(&error), "bb8 pool: a connection failed");
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<tokio_postgres::Error>> {
        Box::new(*self)
    }
}
