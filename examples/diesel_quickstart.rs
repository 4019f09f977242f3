//! A diesel-async pool (deadpool) configured from the environment, signed in with Entra tokens, and one
//! diesel query.
//!
//! On Azure (Service Connector sets the variables; a managed identity signs in):
//!
//! ```sh
//! AZURE_POSTGRESQL_HOST=myserver.postgres.database.azure.com AZURE_POSTGRESQL_DATABASE=app \
//! AZURE_POSTGRESQL_USER=my-identity cargo run --example diesel_quickstart
//! ```
//!
//! Against the local emulator:
//!
//! ```sh
//! EMULATOR=1 cargo run --example diesel_quickstart
//! ```

use std::time::Duration;

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use entra_diesel::EntraDieselPoolBuilder;
use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig};
use entra_pool::token::Env;

#[derive(QueryableByName)]
struct Who {
    #[diesel(sql_type = Text)]
    user: String,
    #[diesel(sql_type = Text)]
    version: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("diesel_quickstart: {message}");
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

    let pool = EntraDieselPoolBuilder::new(config)
        .max_size(8)
        .wait_timeout(Some(Duration::from_secs(10)))
        // Retire connections so they sign in again with newer tokens (and find a new primary after a
        // failover).
        .max_lifetime(Some(Duration::from_secs(3600)))
        .build_deadpool()
        .await
        .map_err(|e| report(&e))?;
    let mut connection = pool.get().await.map_err(|e| report(&e))?;
    let who: Who = diesel::sql_query("SELECT current_user::text AS user, version() AS version")
        .get_result(&mut connection)
        .await
        .map_err(|e| report(&e))?;
    println!("signed in as {:?}: {}", who.user, who.version);
    Ok(())
}
