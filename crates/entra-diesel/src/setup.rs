//! diesel-async's connection manager, with a setup callback that opens through our connector.

use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod};
use diesel_async::AsyncPgConnection;
use entra_postgres::EntraConnect;

/// The URL diesel-async keeps but never uses: the setup callback ignores it.
const UNUSED_URL: &str = "postgres://entra-pool.invalid/ignored-see-custom-setup";

/// A diesel-async connection manager whose connections open through `connect`: the current token, one
/// retry with a fresh token after a refusal, the plan's TLS; then `AsyncPgConnection::try_from`.
/// Recycling checks the connection with a query (`RecyclingMethod::Verified`, diesel-async's default).
/// For either pool diesel-async supports:
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use diesel_async::pooled_connection::deadpool::Pool;
///
/// let connect = entra_postgres::EntraConfig::from_env().build_connector().await?;
/// let pool = Pool::builder(entra_diesel::manager(connect)).max_size(8).build()?;
/// # Ok(()) }
/// ```
pub fn manager(connect: EntraConnect) -> AsyncDieselConnectionManager<AsyncPgConnection> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Verified;
    config.custom_setup = Box::new(move |_url| {
        let connect = connect.clone();
        Box::pin(async move { open(&connect).await })
    });
    AsyncDieselConnectionManager::new_with_config(UNUSED_URL, config)
}

/// One connection through the connector, as diesel-async wants it.
async fn open(connect: &EntraConnect) -> diesel::ConnectionResult<AsyncPgConnection> {
    // The connection's task is already spawned and ends when the client drops.
    let (client, _task) = connect.open_connection().await.map_err(|e| {
        // diesel's error holds text only: the whole chain, so no cause is lost.
        diesel::ConnectionError::BadConnection(entra_postgres::report(&e))
    })?;
    AsyncPgConnection::try_from(client).await
}
