//! A writer pool and a reader pool over the same servers, sharing one token refresher (one token, two
//! pools), each finding its server by `target_session_attrs`, and both following a switch-over.
//!
//! On Azure, with a primary and a read replica (or the writer and reader virtual endpoints):
//!
//! ```sh
//! PGHOST=myserver.postgres.database.azure.com,myreplica.postgres.database.azure.com \
//! PGDATABASE=app PGUSER=my-identity cargo run --example reader_writer
//! ```
//!
//! Against the local emulator, which starts a replica and then switches over:
//!
//! ```sh
//! EMULATOR=1 cargo run --example reader_writer
//! ```

use std::time::Duration;

use entra_emulator::Emulator;
use entra_pool::postgres::{report, EntraConfig, EntraPool, PoolBuilder, SessionAttrs};
use entra_pool::token::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("reader_writer: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Which server answered, and whether it takes writes.
async fn describe(pool: &EntraPool) -> Result<String, String> {
    let client = pool.get().await.map_err(|e| report(&e))?;
    let row = client
        .query_one(
            "SELECT current_setting('port'), current_setting('transaction_read_only')",
            &[],
        )
        .await
        .map_err(|e| report(&e))?;
    let port: String = row.try_get(0).map_err(|e| report(&e))?;
    let read_only: String = row.try_get(1).map_err(|e| report(&e))?;
    Ok(format!("server on port {port}, read-only {read_only}"))
}

async fn run() -> Result<(), String> {
    let emulator = match std::env::var_os("EMULATOR") {
        Some(_) => Some(
            Emulator::builder()
                .replica(true)
                .start()
                .await
                .map_err(|e| report(&e))?,
        ),
        None => None,
    };
    let config = || match &emulator {
        Some(emu) => EntraConfig::from_connection_string(emu.replica_set_connection_string("any"))
            .env(Env::from_pairs(emu.env_vars())),
        None => EntraConfig::from_env(),
    };

    // The writer pool starts the refresher; the reader pool uses the same token handle.
    let writer = PoolBuilder::new(config().target_session_attrs(SessionAttrs::ReadWrite))
        .build()
        .await
        .map_err(|e| report(&e))?;
    let tokens = writer.tokens().cloned().ok_or("token mode expected")?;
    let reader = PoolBuilder::new(
        config()
            .target_session_attrs(SessionAttrs::ReadOnly)
            .token_handle(tokens),
    )
    .build()
    .await
    .map_err(|e| report(&e))?;
    println!("writer: {}", describe(&writer).await?);
    println!("reader: {}", describe(&reader).await?);

    if let Some(emu) = &emulator {
        emu.switch_over().await.map_err(|e| report(&e))?;
        println!("-- switch-over: the replica is promoted, the primary becomes read-only");
        // Idle connections are re-checked after a second; give the role check a moment.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        println!("writer: {}", describe(&writer).await?);
        println!("reader: {}", describe(&reader).await?);
    }
    Ok(())
}
