//! A pool configured from the environment, and one query.
//!
//! On Azure (Service Connector sets the variables; a managed identity signs in):
//!
//! ```sh
//! AZURE_POSTGRESQL_HOST=myserver.postgres.database.azure.com AZURE_POSTGRESQL_DATABASE=app \
//! AZURE_POSTGRESQL_USER=my-identity cargo run --example quickstart
//! ```
//!
//! On a laptop, against the local emulator (fake IMDS + PostgreSQL behind an Entra-checking gate):
//!
//! ```sh
//! EMULATOR=1 cargo run --example quickstart
//! ```

use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig, PoolBuilder};
use entra_pool::token::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("quickstart: {message}");
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

    let pool = PoolBuilder::new(config).build().await.map_err(|e| report(&e))?;
    let client = pool.get().await.map_err(|e| report(&e))?;
    let row = client
        .query_one("SELECT current_user::text, version()", &[])
        .await
        .map_err(|e| report(&e))?;
    let user: String = row.get(0);
    let version: String = row.get(1);
    println!("signed in as {user:?}: {version}");
    Ok(())
}
