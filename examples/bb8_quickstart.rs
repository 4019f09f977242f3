//! A bb8 pool of tokio-postgres clients configured from the environment, signed in with Entra tokens,
//! and one query.
//!
//! On Azure (Service Connector sets the variables; a managed identity signs in):
//!
//! ```sh
//! AZURE_POSTGRESQL_HOST=myserver.postgres.database.azure.com AZURE_POSTGRESQL_DATABASE=app \
//! AZURE_POSTGRESQL_USER=my-identity cargo run --example bb8_quickstart
//! ```
//!
//! Against the local emulator:
//!
//! ```sh
//! EMULATOR=1 cargo run --example bb8_quickstart
//! ```

use std::time::Duration;

use entra_bb8::EntraBb8PoolBuilder;
use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig};
use entra_pool::token::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bb8_quickstart: {message}");
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

    let pool = EntraBb8PoolBuilder::new(config)
        .max_size(8)
        .wait_timeout(Some(Duration::from_secs(10)))
        // Retire connections so they sign in again with newer tokens (and find a new primary after a
        // failover).
        .max_lifetime(Some(Duration::from_secs(3600)))
        .build()
        .await
        .map_err(|e| report(&e))?;
    // bb8 opens connections in the background: a failure reaches get() as a timeout, and its cause
    // is logged (entra_bb8::LogErrors). A dedicated connection reports its own error.
    let client = pool.get().await.map_err(|e| report(&e))?;
    let row = client
        .query_one("SELECT current_user::text, version()", &[])
        .await
        .map_err(|e| report(&e))?;
    let (user, version): (String, String) = (row.get(0), row.get(1));
    println!("signed in as {user:?} (role {:?}): {version}", pool.role());
    Ok(())
}
