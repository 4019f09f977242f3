//! A `sqlx::PgPool` configured from the environment, signed in with Entra tokens, and one query.
//!
//! On Azure (Service Connector sets the variables; a managed identity signs in):
//!
//! ```sh
//! AZURE_POSTGRESQL_HOST=myserver.postgres.database.azure.com AZURE_POSTGRESQL_DATABASE=app \
//! AZURE_POSTGRESQL_USER=my-identity cargo run --example sqlx_quickstart
//! ```
//!
//! Against the local emulator:
//!
//! ```sh
//! EMULATOR=1 cargo run --example sqlx_quickstart
//! ```

use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig};
use entra_pool::token::Env;
use entra_sqlx::sqlx::postgres::PgPoolOptions;
use entra_sqlx::EntraPgPoolBuilder;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sqlx_quickstart: {message}");
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
                .max_lifetime(std::time::Duration::from_secs(3600)),
        )
        .max_size(8)
        .build()
        .await
        .map_err(|e| report(&e))?;
    let (user, version): (String, String) = sqlx::query_as("SELECT current_user::text, version()")
        .fetch_one(pool.pool())
        .await
        .map_err(|e| report(&e))?;
    println!("signed in as {user:?}: {version}");
    Ok(())
}
