//! What the pool benchmarks share: a plain deadpool-postgres pool and an entra-pool pool signing in the
//! same way to the same server, so only the pools differ.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use entra_emulator::postgres::{quote_ident, quote_literal};
use entra_emulator::{Claims, JwtIssuer, TestPostgres};
use entra_postgres::{EntraConfig, EntraPool, PoolBuilder};
use entra_token::{AccessToken, StaticSource};
use tokio_postgres_rustls::MakeRustlsConnect;

const ROLE: &str = "bench_app";

/// A server whose role's password is the very token the entra pool's source hands out: both pools
/// connect directly over TCP + verified TLS (no gate) and sign in the same way.
pub struct SamePassword {
    pub pg: Arc<TestPostgres>,
    token: String,
}

impl SamePassword {
    pub async fn start() -> SamePassword {
        let pg = Arc::new(
            TestPostgres::start()
                .await
                .expect("PostgreSQL starts (is it installed?)"),
        );
        let token = JwtIssuer::new().sign(&Claims::new("bench-oid", Duration::from_secs(24 * 3600)));
        pg.execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(ROLE).unwrap(),
            quote_literal(&token).unwrap()
        ))
        .await
        .expect("role created");
        SamePassword { pg, token }
    }

    /// Plain deadpool-postgres with the token as a static password.
    pub fn plain(&self, max_size: usize) -> Pool {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.pg.host())
            .port(self.pg.port())
            .dbname("postgres")
            .user(ROLE)
            .password(self.token.as_bytes())
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let tls = MakeRustlsConnect::new(self.pg.ca().client_config().expect("CA client config"));
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .build()
            .unwrap()
    }

    /// An entra pool whose token source hands out the same token.
    pub async fn entra(&self, max_size: usize) -> EntraPool {
        let source = StaticSource::new(AccessToken::new(
            self.token.clone(),
            std::time::SystemTime::now() + Duration::from_secs(24 * 3600),
        ));
        let config = EntraConfig::from_env()
            .env(entra_token::Env::from_pairs([(
                "PGSSLROOTCERT",
                self.pg.ca_path().display().to_string(),
            )]))
            .host(self.pg.host())
            .port(self.pg.port())
            .dbname("postgres")
            .user(ROLE)
            .token_source(source);
        PoolBuilder::new(config)
            .max_size(max_size)
            .build()
            .await
            .expect("entra pool")
    }
}
