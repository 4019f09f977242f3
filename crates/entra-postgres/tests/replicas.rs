//! Writer and reader hosts: one refresher behind a writer pool and a reader pool over two servers, and a
//! switch-over (the replica promoted, the primary made read-only) that the pools follow without a restart.

use std::time::Duration;

use entra_emulator::Emulator;
use entra_postgres::{EntraConfig, EntraPool, PoolBuilder};
use entra_testkit::bounded;
use entra_token::{Env, RefreshPolicy};

/// The upstream server's port, read through the session: which of the two servers answered.
async fn server_port(pool: &EntraPool) -> Result<String, String> {
    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
    let row = client
        .query_one("SHOW port", &[])
        .await
        .map_err(|e| entra_postgres::report(&e))?;
    Ok(row.get(0))
}

async fn write(pool: &EntraPool, n: i64) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| entra_postgres::report(&e))?;
    client
        .execute("INSERT INTO writes (n) VALUES ($1)", &[&n])
        .await
        .map(|_| ())
        .map_err(|e| entra_postgres::report(&e))
}

/// A superuser session on the emulator's database of `pg`.
async fn superuser(pg: &entra_emulator::TestPostgres, database: &str) -> tokio_postgres::Client {
    let (client, connection) = pg
        .socket_config(database)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("superuser session");
    tokio::spawn(connection);
    client
}

fn pool_builder(emu: &Emulator, attrs: &str) -> PoolBuilder {
    PoolBuilder::new(
        EntraConfig::from_connection_string(emu.replica_set_connection_string(attrs))
            .env(Env::from_pairs(emu.env_vars()))
            .refresh_policy(RefreshPolicy::short_lived()),
    )
    .max_size(2)
    .wait_timeout(Some(Duration::from_secs(10)))
    .create_timeout(Some(Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_reader_pools_share_one_token_and_follow_a_switch_over() {
    let emu = Emulator::builder().replica(true).start().await.expect("starts");
    let replica = emu.replica().expect("a replica");
    for pg in [emu.postgres(), replica.postgres()] {
        // The replica is read-only by default: its schema goes in through an explicit read-write
        // transaction, as a migration tool's would before the replica existed.
        superuser(pg, emu.dbname())
            .await
            .batch_execute(&format!(
                "BEGIN READ WRITE; CREATE TABLE IF NOT EXISTS writes (n int8 NOT NULL); \
                 GRANT INSERT, SELECT ON writes TO \"{}\"; COMMIT",
                emu.user()
            ))
            .await
            .expect("table");
    }
    let primary_port = emu.postgres().port().to_string();
    let replica_port = replica.postgres().port().to_string();

    let writer = pool_builder(&emu, "read-write")
        .build()
        .await
        .expect("writer pool");
    let tokens = writer.tokens().expect("token mode").clone();
    let reader = pool_builder(&emu, "read-only")
        .with_config(|c| c.token_handle(tokens.clone()))
        .build()
        .await
        .expect("reader pool");
    assert_eq!(server_port(&writer).await.as_deref(), Ok(primary_port.as_str()));
    assert_eq!(server_port(&reader).await.as_deref(), Ok(replica_port.as_str()));
    write(&writer, 1).await.expect("a write on the primary");

    bounded(60, "the switch-over", emu.switch_over())
        .await
        .expect("switched");

    // Statements on connections still on the old writer fail (read-only) until the role check retires
    // them; then the pools find the new writer and the new reader by themselves.
    let mut failed = 0;
    let mut acknowledged = vec![1];
    let mut n = 2;
    while server_port(&writer).await.as_deref() != Ok(replica_port.as_str()) {
        match write(&writer, n).await {
            Ok(()) => acknowledged.push(n),
            Err(_) => failed += 1,
        }
        n += 1;
        assert!(n < 200, "the writer pool did not move to the promoted server");
    }
    write(&writer, n).await.expect("writes go to the promoted server");
    acknowledged.push(n);
    for _ in 0..200 {
        if server_port(&reader).await.as_deref() == Ok(primary_port.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        server_port(&reader).await.as_deref(),
        Ok(primary_port.as_str()),
        "reads moved"
    );

    // No acknowledged write is lost: each is on one of the two servers.
    let mut found = 0i64;
    for pg in [emu.postgres(), replica.postgres()] {
        let client = superuser(pg, emu.dbname()).await;
        let row = client
            .query_one("SELECT count(*) FROM writes WHERE n = ANY($1)", &[&acknowledged])
            .await
            .expect("count");
        found += row.get::<_, i64>(0);
    }
    assert_eq!(
        found,
        acknowledged.len() as i64,
        "every acknowledged write is stored ({failed} refused)"
    );
    assert_eq!(emu.identity().token_requests(), 1, "one token for both pools");
}
