//! A SeaORM `DatabaseConnection` over `entra-sqlx`'s pool, configured from the environment and signed
//! in with Entra tokens: an entity, its table (created if missing), one insert and one query.
//!
//! On Azure (Service Connector sets the variables; a managed identity signs in; the role needs CREATE on
//! the `public` schema, or create `quickstart_notes` beforehand):
//!
//! ```sh
//! AZURE_POSTGRESQL_HOST=myserver.postgres.database.azure.com AZURE_POSTGRESQL_DATABASE=app \
//! AZURE_POSTGRESQL_USER=my-identity cargo run --example seaorm_quickstart
//! ```
//!
//! Against the local emulator:
//!
//! ```sh
//! EMULATOR=1 cargo run --example seaorm_quickstart
//! ```

use std::time::Duration;

use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig};
use entra_pool::token::Env;
use entra_sqlx::sqlx::postgres::PgPoolOptions;
use entra_sqlx::{EntraPgPool, EntraPgPoolBuilder};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    RuntimeErr, Schema, SqlxPostgresConnector,
};

mod note {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "quickstart_notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("seaorm_quickstart: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // Kept until the end: dropping the emulator stops its server.
    let emulator = match std::env::var_os("EMULATOR") {
        Some(_) => Some(Emulator::start().await.map_err(|e| report(&e))?),
        None => None,
    };
    let mut config = EntraConfig::from_env();
    if let Some(emulator) = &emulator {
        config = config.env(Env::from_pairs(emulator.env_vars()));
    }

    let pool = EntraPgPoolBuilder::new(config)
        .pool_options(
            PgPoolOptions::new()
                // Retire connections so they sign in again with newer tokens (and find a new primary
                // after a failover).
                .max_lifetime(Duration::from_secs(3600)),
        )
        .max_size(8)
        .build()
        .await
        .map_err(|e| report(&e))?;
    // The one call: SeaORM over the same sqlx pool, whose connect options follow the refresher. `pool`
    // stays alive as long as `db`: the task handing sqlx each new token ends when it drops.
    let db = SqlxPostgresConnector::from_sqlx_postgres_pool(pool.pool().clone());

    let create = Schema::new(DbBackend::Postgres)
        .create_table_from_entity(note::Entity)
        .if_not_exists()
        .to_owned();
    retried(&pool, || db.execute(&create))
        .await
        .map_err(|e| e.to_string())?;
    let inserted = note::ActiveModel {
        body: Set(format!("written as {}", pool.role())),
        ..Default::default()
    }
    .insert(&db)
    .await
    .map_err(|e| e.to_string())?;
    let notes = retried(&pool, || note::Entity::find().all(&db))
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "signed in as {:?}: note {} written, {} in the table",
        pool.role(),
        inserted.id,
        notes.len()
    );
    close(db).await;
    Ok(())
}

/// One SeaORM call, retried once when the server refused the token: SeaORM acquires from sqlx's pool
/// itself, past `EntraPgPool::acquire`, so `EntraPgPool::recover` hands sqlx a fresh token first.
async fn retried<T, F, Fut>(pool: &EntraPgPool, call: F) -> Result<T, DbErr>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    match call().await {
        Err(DbErr::Conn(RuntimeErr::SqlxError(e))) if pool.recover(&e).await => call().await,
        result => result,
    }
}

async fn close(db: DatabaseConnection) {
    // Closing SeaORM's connection closes the shared sqlx pool, and with it the token follower.
    if let Err(e) = db.close().await {
        eprintln!("seaorm_quickstart: closing: {e}");
    }
}
