//! The pools the runs drive: through the gate (with tokens), for the bystander control, and direct.

use std::time::Duration;

use deadpool_postgres::Pool;
use entra_emulator::{Emulator, TestPostgres};
use entra_postgres::{EntraConfig, EntraPool, PoolBuilder};
use entra_token::Env;

use super::config::{BenchConfig, Mode};
use crate::error::LoadError;
use crate::setup;
use crate::workload::Target;

/// A pool to drive: what operations go to, and its checkout pool (tokens, user).
pub(super) struct Loaded {
    pub(super) target: Target,
    pub(super) pool: EntraPool,
}

/// Builds `builder` for `config`'s mode; `name` says which pool failed.
async fn load_target(
    config: &BenchConfig,
    builder: PoolBuilder,
    name: &'static str,
) -> Result<Loaded, LoadError> {
    let failed = |source| LoadError::PoolBuild { pool: name, source };
    match config.mode {
        Mode::Checkout => {
            let pool = builder.build().await.map_err(failed)?;
            Ok(Loaded {
                target: Target::Checkout(pool.pool().clone()),
                pool,
            })
        }
        Mode::Proxy | Mode::ProxyConnect => Err(LoadError::invalid(
            "the proxy modes are crate::proxy_bench::run and crate::proxy_connect::run",
        )),
        Mode::Multiplexed => {
            let m = builder
                .build_multiplexed(config.connections)
                .await
                .map_err(failed)?;
            Ok(Loaded {
                pool: m.checkout().clone(),
                target: Target::Multiplexed(m),
            })
        }
    }
}

/// The gate pool's connection lifetime: `--max-lifetime`, else the token lifetime.
pub(super) fn gate_lifetime(config: &BenchConfig) -> Duration {
    config
        .max_lifetime
        .unwrap_or(config.token_lifetime)
        .max(Duration::from_millis(100))
}

pub(super) async fn gate_pool(config: &BenchConfig, emulator: &Emulator) -> Result<Loaded, LoadError> {
    let max_lifetime = gate_lifetime(config);
    let builder = PoolBuilder::new(setup::emulator_config(emulator))
        .max_size(config.connections)
        .max_lifetime(Some(max_lifetime))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .replace_ahead(config.replace_ahead);
    load_target(config, builder, "gate").await
}

/// For the bystander control: the load's pool (no connection retires within the run, no spares) and a
/// pool of the same size for the bystander's sessions, which take their connections out of it.
pub(super) async fn bystander_pools(
    config: &BenchConfig,
    emulator: &Emulator,
) -> Result<(Loaded, Pool), LoadError> {
    let mut steady = config.clone();
    steady.replace_ahead = 0;
    steady.max_lifetime = Some(Duration::from_secs(86_400));
    let load = gate_pool(&steady, emulator).await?;
    // Room for as many overlapping sessions as the pool under test can sign in at once.
    let sessions = gate_pool(&steady, emulator).await?;
    let Target::Checkout(pool) = sessions.target else {
        return Err(LoadError::invalid("the bystander needs a checkout pool"));
    };
    Ok((load, pool))
}

/// A pool straight at the server as its superuser, on pgbench's database for the point mix so both read
/// the same rows with the same query.
pub(super) async fn direct_pool(
    config: &BenchConfig,
    pg: &TestPostgres,
    point: bool,
    app_database: &str,
) -> Result<(Loaded, String), LoadError> {
    let database = if point {
        setup::PGBENCH_DB.to_string()
    } else {
        app_database.to_string()
    };
    let direct = EntraConfig::from_env()
        .env(Env::from_pairs([(
            "PGSSLROOTCERT",
            pg.ca_path().display().to_string(),
        )]))
        .host(pg.host())
        .port(pg.port())
        .dbname(database.clone())
        .user(pg.superuser())
        .static_password(pg.superuser_password());
    let builder = PoolBuilder::new(direct)
        .max_size(config.connections)
        .max_lifetime(None)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)));
    Ok((load_target(config, builder, "direct").await?, database))
}
