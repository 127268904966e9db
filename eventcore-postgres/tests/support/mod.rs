//! Every test gets an initialized store in a schema of its own; without a
//! usable server the test fails saying what to install (see `eventcore_postgres::testing`).
#![allow(dead_code, clippy::panic, clippy::unwrap_used)]

use eventcore::{EventMetadata, EventType, NewEvent, StreamId};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing};

/// An initialized store in a fresh schema.
pub async fn fresh_store() -> PostgresEventStore {
    testing::fresh_store()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Settings for a store in a fresh schema, not yet initialized.
pub async fn fresh_config() -> PostgresConfig {
    testing::fresh_config()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A stream id from a literal.
pub fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

/// A `Marked` event carrying `payload`.
pub fn event(payload: serde_json::Value) -> NewEvent {
    NewEvent::from_parts(
        EventType::try_new("Marked").unwrap(),
        payload,
        EventMetadata::default(),
    )
    .unwrap()
}

/// Takes a schema back to the release before event schema versions
/// (migration 10): no `event_version` column, no append function taking
/// versions.
pub async fn downgrade_to_release_10(store: &PostgresEventStore) {
    let schema = store.schema().to_owned();
    for statement in [
        format!("ALTER TABLE \"{schema}\".eventcore_events DROP COLUMN event_version"),
        format!(
            "DROP FUNCTION \"{schema}\".eventcore_append(text[], bigint[], int[], uuid[], text[], \
             jsonb[], jsonb[], text, bigint, int[])"
        ),
        format!("DROP INDEX \"{schema}\".eventcore_events_recorded_at"),
        format!("DELETE FROM \"{schema}\".eventcore_migrations WHERE version >= 11"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(store.pool())
            .await
            .unwrap();
    }
}

/// Appends one event to `stream` as the release before schema versions
/// did: through the append function of migration 9, which has no versions.
pub async fn append_as_release_10(
    store: &PostgresEventStore,
    stream: &str,
    event_type: &str,
    payload: serde_json::Value,
) {
    let schema = store.schema().to_owned();
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM \"{schema}\".eventcore_append(ARRAY[$1], ARRAY[NULL::bigint], ARRAY[1], \
         ARRAY[$2::uuid], ARRAY[$3], ARRAY[$4::jsonb], ARRAY['{{}}'::jsonb], 'unused', NULL::bigint)"
    )))
    .bind(stream)
    .bind(uuid::Uuid::now_v7())
    .bind(event_type)
    .bind(sqlx::types::Json(payload))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// An initialized store in a fresh schema, made from a pool of the
/// caller's (`from_pool_with_schema`): appends share that pool.
pub async fn fresh_store_from_pool() -> PostgresEventStore {
    let url = testing::test_database_url()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let schema = eventcore_postgres::SchemaName::new(&testing::fresh_schema_name()).unwrap();
    let store = PostgresEventStore::from_pool_with_schema(pool, schema);
    store.initialize().await.unwrap();
    store
}

/// Calls the store's append function in a transaction the caller holds
/// open, on a connection of its own to `url`: the event takes its position
/// (transaction, sequence), returned, and commits when the caller says;
/// `channel` is notified then.
pub async fn begin_append_on(
    url: &str,
    store: &PostgresEventStore,
    stream_id: &StreamId,
    payload: serde_json::Value,
    channel: &str,
) -> (sqlx::PgConnection, (u64, u64)) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut conn)
        .await
        .unwrap();
    let new = event(payload);
    let sql = format!(
        "SELECT o_transaction_id, o_sequence FROM \"{}\".eventcore_append($1, $2, $3, $4, $5, $6, $7, $8) \
         WHERE o_kind = 'event'",
        store.schema()
    );
    let (transaction, sequence): (String, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(vec![stream_id.as_ref()])
        .bind(vec![Some(0_i64)])
        .bind(vec![1_i32])
        .bind(vec![uuid::Uuid::now_v7()])
        .bind(vec!["Marked"])
        .bind(vec![sqlx::types::Json(new.payload())])
        .bind(vec![sqlx::types::Json(new.metadata())])
        .bind(channel)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    (conn, (transaction.parse().unwrap(), sequence as u64))
}

/// An initialized store in a fresh schema with group commit on.
pub async fn fresh_store_grouped() -> PostgresEventStore {
    testing::store_with(
        fresh_config()
            .await
            .group_commit(eventcore_postgres::GroupCommit::new()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// [`fresh_store_from_pool`] with group commit on: batches run in explicit
/// transactions on the caller's pool.
pub async fn fresh_store_from_pool_grouped() -> PostgresEventStore {
    fresh_store_from_pool()
        .await
        .with_group_commit(eventcore_postgres::GroupCommit::new())
}

/// Takes `stream`'s row lock in a transaction left open on a connection
/// of its own to `url` (close the connection to let go).
pub async fn hold_row(
    url: &str,
    store: &PostgresEventStore,
    stream: &StreamId,
) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut holder = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM \"{}\".eventcore_streams WHERE stream_id = $1 FOR UPDATE",
        store.schema()
    )))
    .bind(stream.as_ref())
    .execute(&mut holder)
    .await
    .unwrap();
    holder
}

/// Sessions of `schema` waiting for a lock in a statement matching `pattern`.
pub async fn lock_waiters(watcher: &mut sqlx::PgConnection, schema: &str, pattern: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' || $2 || '%'",
    )
    .bind(schema)
    .bind(pattern)
    .fetch_one(watcher)
    .await
    .unwrap()
}
