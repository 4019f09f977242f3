//! Restarts a service lives through: the database server restarting under it, and the service itself
//! restarting (a new process, a new pool, the same identity).

use std::time::Duration;

async fn current_user(pool: &entra_pool::postgres::EntraPool) -> Result<String, String> {
    let client = pool.get().await.map_err(|e| entra_pool::postgres::report(&e))?;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| entra_pool::postgres::report(&e))?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_serves_again_after_the_server_restarts() {
    let emulator = entra_testkit::emulator(Duration::from_secs(3600)).await;
    let pool = entra_testkit::pool_builder(&emulator)
        .max_size(4)
        .build()
        .await
        .expect("builds");
    assert_eq!(current_user(&pool).await.as_deref(), Ok(emulator.user()));
    entra_testkit::bounded(60, "the restart", emulator.gate().restart_upstream())
        .await
        .expect("the server restarts");
    // The connection that was open died with the server; deadpool notices at recycling (or the first
    // statement fails). Within a few attempts the pool serves again, on a new connection.
    let mut last = Err(String::new());
    for _ in 0..20 {
        last = current_user(&pool).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        last.as_deref(),
        Ok(emulator.user()),
        "served again after the restart"
    );
    assert_eq!(
        emulator.identity().token_requests(),
        1,
        "the cached token is still good"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_service_signs_in_with_a_token_of_its_own() {
    let emulator = entra_testkit::emulator(Duration::from_secs(3600)).await;
    let first = entra_testkit::pool_builder(&emulator)
        .build()
        .await
        .expect("builds");
    assert_eq!(current_user(&first).await.as_deref(), Ok(emulator.user()));
    drop(first); // the process ends: its refresher and connections go with it
    let second = entra_testkit::pool_builder(&emulator)
        .build()
        .await
        .expect("builds again");
    assert_eq!(current_user(&second).await.as_deref(), Ok(emulator.user()));
    assert_eq!(emulator.identity().token_requests(), 2, "one fetch per start");
}
