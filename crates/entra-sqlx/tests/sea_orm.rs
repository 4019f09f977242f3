//! SeaORM over the sqlx pool: a `sea_orm::DatabaseConnection` made from `EntraPgPool::pool()`
//! (`SqlxPostgresConnector::from_sqlx_postgres_pool`) shares sqlx's pool, so its new connections sign in
//! with whatever token the adapter last handed sqlx: entity queries keep working across rotations. SeaORM
//! acquires from sqlx's pool itself, past `EntraPgPool::acquire`, so a refused token reaches it as an
//! error, and `EntraPgPool::recover` is the one call that repairs it. The tests wait for events (a token
//! published, a session signed in) under hang bounds, never for some time.

use std::collections::BTreeSet;
use std::time::Duration;

use entra_emulator::{Claims, Fault, TokenFingerprint, OSSRDBMS_RESOURCE};
use entra_sqlx::sqlx::postgres::PgPoolOptions;
use entra_sqlx::{EntraPgPool, EntraPgPoolBuilder};
use entra_testkit::{bounded, emulator, settled};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    PaginatorTrait, QueryOrder, RuntimeErr, Schema, SqlxPostgresConnector,
};

/// An entity over a table the test creates from it.
mod note {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Acquiring a connection waits at most this long: a hang, not a busy machine, would reach it.
const ACQUIRE_HANG: Duration = Duration::from_secs(30);

async fn pool(emu: &entra_emulator::Emulator, options: PgPoolOptions) -> EntraPgPool {
    EntraPgPoolBuilder::new(entra_testkit::config(emu))
        .pool_options(options.acquire_timeout(ACQUIRE_HANG))
        .build()
        .await
        .expect("builds")
}

/// The quick start's one call.
fn sea_orm(pool: &EntraPgPool) -> DatabaseConnection {
    SqlxPostgresConnector::from_sqlx_postgres_pool(pool.pool().clone())
}

async fn create_notes(db: &DatabaseConnection) {
    let create = Schema::new(DbBackend::Postgres).create_table_from_entity(note::Entity);
    db.execute(&create).await.expect("CREATE TABLE notes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_queries_through_sea_orm_follow_three_rotations_without_an_error() {
    let emu = emulator(Duration::from_secs(3)).await;
    let pool = pool(
        &emu,
        // Short-lived connections, so new ones keep signing in while tokens rotate.
        PgPoolOptions::new()
            .max_connections(2)
            .max_lifetime(Duration::from_millis(500)),
    )
    .await;
    let tokens = pool.tokens().expect("token mode").clone();
    let db = sea_orm(&pool);
    create_notes(&db).await;
    let first = tokens.generation();
    let mut written = Vec::new();
    // Insert and read notes through the entity until new sessions have signed in with three tokens
    // published after the first; every call must succeed.
    let mut followed = BTreeSet::new();
    bounded(120, "SeaORM entity queries across three rotations", async {
        while followed.len() < 3 {
            let n = written.len();
            let inserted = note::ActiveModel {
                body: Set(format!("note {n}")),
                ..Default::default()
            }
            .insert(&db)
            .await
            .unwrap_or_else(|e| panic!("insert {n}: {e}"));
            written.push(inserted.clone());
            let read = note::Entity::find_by_id(inserted.id)
                .one(&db)
                .await
                .unwrap_or_else(|e| panic!("find_by_id {n}: {e}"));
            assert_eq!(read.as_ref(), Some(&inserted));
            let count = note::Entity::find()
                .count(&db)
                .await
                .unwrap_or_else(|e| panic!("count after {n}: {e}"));
            assert_eq!(count, written.len() as u64);
            if let Some(token) = tokens.current().filter(|t| t.generation() > first) {
                let fingerprint = TokenFingerprint::of(token.secret());
                if emu.gate().sessions().iter().any(|s| s.token == fingerprint) {
                    followed.insert(token.generation());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Everything written is read back whole and in order, through sessions signed in with four tokens.
    let all = note::Entity::find()
        .order_by_asc(note::Column::Id)
        .all(&db)
        .await
        .expect("all notes");
    assert_eq!(all, written);
    assert!(written.len() >= 3, "{} notes", written.len());
    assert!(emu.gate().rejections().is_empty(), "no token was refused");
    let (requests, status) = settled(&emu, &tokens).await;
    assert_eq!(requests, status.refreshes, "one token request per rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_reaches_sea_orm_once_and_recover_makes_the_retry_sign_in() {
    let emu = emulator(Duration::from_secs(3600)).await;
    // The refresher's first token is for the wrong audience: the gate refuses it, as Azure would.
    let mut claims = Claims::new(emu.principal().object_id.clone(), Duration::from_secs(3600));
    claims.aud = "https://management.azure.com".into();
    let wrong_audience = emu.identity().issuer().sign(&claims);
    emu.identity().push_faults([Fault::token(
        &wrong_audience,
        Duration::from_secs(3600),
        OSSRDBMS_RESOURCE,
    )]);
    let pool = pool(&emu, PgPoolOptions::new().max_connections(2)).await;
    let db = sea_orm(&pool);
    // Older than min_invalidate_interval (200 ms), so the token may be refetched: a sleep never ends early.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SeaORM acquires from sqlx's pool itself: the refusal comes back as a connection error, with no
    // retry and no refetch.
    let refused = note::Entity::find()
        .all(&db)
        .await
        .expect_err("the token is refused");
    let DbErr::Conn(RuntimeErr::SqlxError(sqlx_error)) = &refused else {
        panic!("a connection error from sqlx, not {refused:?}");
    };
    assert_eq!(emu.identity().token_requests(), 1, "no refetch yet");
    assert_eq!(emu.gate().rejections().len(), 1);

    // The one call: the refused token is replaced in sqlx's options, and the retry signs in.
    assert!(pool.recover(sqlx_error).await, "a new token was handed to sqlx");
    create_notes(&db).await;
    let all = note::Entity::find().all(&db).await.expect("the retry signs in");
    assert!(all.is_empty());
    assert_eq!(emu.identity().token_requests(), 2, "exactly one refetch");
    assert_eq!(emu.gate().rejections().len(), 1, "no second refusal");
    // An error that is no refusal is left alone: no refetch.
    let not_a_refusal = db
        .execute_unprepared("SELECT * FROM no_such_table")
        .await
        .expect_err("no such table");
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = &not_a_refusal {
        assert!(!pool.recover(e).await, "{e}");
    } else {
        panic!("a sqlx error, not {not_a_refusal:?}");
    }
    assert_eq!(emu.identity().token_requests(), 2);
}
