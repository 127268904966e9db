//! `initialize()`, schema isolation, and what the database refuses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{error::Error as _, sync::Arc};

use eventcore::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, ReadAllQuery,
    StoreError, StreamId, StreamVersion,
};
use eventcore_postgres::{ConfigError, PostgresConfig, PostgresEventStore, SchemaName, testing};
use serde_json::json;
use tokio::sync::Barrier;

const INIT_CHILD_SCHEMA: &str = "EVENTCORE_INIT_CHILD_SCHEMA";
/// Every migration this version of EventCore ships.
const ALL_MIGRATIONS: [i32; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];

fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

fn one_event(name: &str) -> AppendRequest {
    AppendRequest::single(
        stream(name),
        ExpectedVersion::Any,
        vec![
            NewEvent::from_parts(
                EventType::try_new("Marked").unwrap(),
                json!({ "name": name }),
                EventMetadata::default(),
            )
            .unwrap(),
        ],
    )
}

async fn applied_migrations(store: &PostgresEventStore) -> Vec<i32> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM \"{}\".eventcore_migrations ORDER BY version",
        store.schema()
    )))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_initializers_create_the_schema_once() {
    let config = support::fresh_config().await;
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let config = config.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let store = PostgresEventStore::new(config).await.unwrap();
            barrier.wait().await;
            store.initialize().await.map(|()| store)
        }));
    }
    let mut stores = Vec::new();
    for task in tasks {
        stores.push(task.await.unwrap().expect("every initializer succeeds"));
    }
    assert_eq!(applied_migrations(&stores[0]).await, ALL_MIGRATIONS);
    stores[0].append(one_event("after-init")).await.unwrap();
    // And again, on a schema that is already there: a no-op.
    stores[1].initialize().await.unwrap();
    assert_eq!(applied_migrations(&stores[1]).await, ALL_MIGRATIONS);
}

/// Initializes a fresh schema, or, in the child processes of
/// `eight_processes_initialize_one_schema`, the schema the parent names.
#[tokio::test]
async fn initialize_creates_a_usable_schema() {
    let schema = std::env::var(INIT_CHILD_SCHEMA).unwrap_or_else(|_| testing::fresh_schema_name());
    let config = PostgresConfig::new(testing::test_database_url().await.unwrap())
        .schema(&schema)
        .unwrap();
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    assert_eq!(applied_migrations(&store).await, ALL_MIGRATIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_initialize_one_schema() {
    let url = testing::test_database_url().await.unwrap();
    let schema = testing::fresh_schema_name();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args([
                    "--exact",
                    "initialize_creates_a_usable_schema",
                    "--test-threads",
                    "1",
                ])
                .env(INIT_CHILD_SCHEMA, &schema)
                .env("DATABASE_URL", &url)
                .output()
        })
        .collect();
    for child in futures::future::join_all(children).await {
        let output = child.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "an initializing process failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let store = PostgresEventStore::new(PostgresConfig::new(url).schema(&schema).unwrap())
        .await
        .unwrap();
    assert_eq!(applied_migrations(&store).await, ALL_MIGRATIONS);
    store.append(one_event("after-init")).await.unwrap();
}

/// A schema written by the release before migration 4 (stream rows under a
/// B-tree primary key) is upgraded in place: its streams keep their versions
/// and accept appends, and a stale expectation is still a conflict.
#[tokio::test]
async fn a_schema_from_the_previous_release_is_upgraded_in_place() {
    let store = support::fresh_store().await;
    let schema = store.schema().to_owned();
    support::downgrade_to_release_10(&store).await;
    for statement in [
        format!(
            "ALTER TABLE \"{schema}\".eventcore_streams DROP CONSTRAINT eventcore_streams_unique_id, \
             ADD CONSTRAINT eventcore_streams_pkey PRIMARY KEY (stream_id)"
        ),
        format!("DROP TABLE \"{schema}\".eventcore_snapshots"),
        format!("DROP TABLE \"{schema}\".eventcore_projection_leases"),
        format!("DROP INDEX \"{schema}\".eventcore_idempotency_age"),
        format!("ALTER TABLE \"{schema}\".eventcore_idempotency DROP COLUMN purpose"),
        format!(
            "ALTER TABLE \"{schema}\".eventcore_checkpoints DROP COLUMN fence, \
             DROP COLUMN last_event_id, DROP COLUMN last_processed_at, DROP COLUMN request, \
             DROP COLUMN requested_at"
        ),
        format!("DELETE FROM \"{schema}\".eventcore_migrations WHERE version >= 4"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(store.pool())
            .await
            .unwrap();
    }
    for _ in 0..2 {
        support::append_as_release_10(&store, "old", "Marked", json!({ "name": "old" })).await;
    }

    store.initialize().await.unwrap();
    assert_eq!(applied_migrations(&store).await, ALL_MIGRATIONS);
    let read = store.read_streams(&[stream("old")]).await.unwrap();
    assert_eq!(
        read.versions.get(&stream("old")).map(StreamVersion::value),
        Some(2)
    );
    let at = |v| {
        AppendRequest::single(
            stream("old"),
            ExpectedVersion::Exact(StreamVersion::new(v)),
            one_event("old").into_streams().remove(0).events,
        )
    };
    assert!(matches!(
        store.append(at(1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let result = store.append(at(2)).await.unwrap();
    assert_eq!(
        result
            .versions
            .get(&stream("old"))
            .map(StreamVersion::value),
        Some(3)
    );
    store.append(one_event("new-after-upgrade")).await.unwrap();
}

#[tokio::test]
async fn stores_in_different_schemas_do_not_see_each_other() {
    let first = support::fresh_store().await;
    let second = support::fresh_store().await;
    first.append(one_event("shared-name")).await.unwrap();
    let read = second.read_streams(&[stream("shared-name")]).await.unwrap();
    assert!(read.events.is_empty());
    assert!(
        second
            .read_all(&ReadAllQuery::from_start())
            .await
            .unwrap()
            .is_empty()
    );
    second.append(one_event("shared-name")).await.unwrap();
    let read = first.read_streams(&[stream("shared-name")]).await.unwrap();
    assert_eq!(
        read.events.len(),
        1,
        "the other schema's append is not here"
    );
}

#[tokio::test]
async fn the_database_refuses_to_change_or_delete_events() {
    let store = support::fresh_store().await;
    store.append(one_event("kept")).await.unwrap();
    let table = format!("\"{}\".eventcore_events", store.schema());
    for statement in [
        format!("UPDATE {table} SET payload = '{{}}'"),
        format!("DELETE FROM {table}"),
        format!("TRUNCATE {table}"),
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(store.pool())
            .await;
        assert!(refused.is_err(), "{statement} was allowed");
    }
    let read = store.read_streams(&[stream("kept")]).await.unwrap();
    assert_eq!(
        read.events[0].payload.to_value().unwrap(),
        json!({ "name": "kept" })
    );
}

#[tokio::test]
async fn appends_outside_serializable_are_refused_by_the_database() {
    let store = support::fresh_store().await;
    let refused = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM \"{}\".eventcore_append('{{s}}', '{{0}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', 'c')",
        store.schema()
    )))
    .execute(store.pool())
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("SERIALIZABLE"), "{refused}");
}

#[tokio::test]
async fn database_errors_keep_their_cause() {
    // A store whose schema was never initialized: the tables are missing.
    let store = PostgresEventStore::new(support::fresh_config().await)
        .await
        .unwrap();
    let error = store.append(one_event("nowhere")).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Backend { .. }),
        "not a backend error: {error:?}"
    );
    assert!(!error.is_retryable());
    let source = error.source().expect("the sqlx error is kept");
    let sqlx_error = source.downcast_ref::<sqlx::Error>().expect("a sqlx error");
    let code = sqlx_error.as_database_error().and_then(|db| db.code());
    assert_eq!(code.as_deref(), Some("42P01"), "undefined table");

    let error = store.read_streams(&[stream("nowhere")]).await.unwrap_err();
    assert!(error.source().is_some());
}

#[test]
fn invalid_configuration_is_a_typed_error() {
    for bad in ["", "a\"; DROP TABLE x; --", "9lives", "with space"] {
        assert!(matches!(
            PostgresConfig::new("postgres://localhost/x").schema(bad),
            Err(ConfigError::InvalidSchema { .. })
        ));
    }
}

#[tokio::test]
async fn an_unparsable_url_is_a_typed_error_without_the_password() {
    let error = PostgresEventStore::new(PostgresConfig::new("postgres://u:hunter2@[::1/db"))
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = PostgresConfig::new(format!("postgres://u:hunter2@127.0.0.1:{port}/db"))
        .acquire_timeout(std::time::Duration::from_secs(2));
    let error = PostgresEventStore::new(config).await.unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// A schema name of 63 characters, the most PostgreSQL allows, works for
/// everything: initialize, append (which notifies subscribers) and a live
/// subscription woken by that notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_longest_valid_schema_name_works_end_to_end() {
    let mut name = eventcore_postgres::testing::fresh_schema_name();
    while name.len() < 63 {
        name.push('x');
    }
    let config = support::fresh_config()
        .await
        .schema(&name)
        .unwrap()
        // Only the notification, not polling, delivers within the test.
        .poll_interval(std::time::Duration::from_secs(3600));
    let store = eventcore_postgres::testing::store_with(config)
        .await
        .unwrap();
    store.append(one_event("long")).await.unwrap();
    let mut subscription = store.subscribe(eventcore::ReadAllQuery::from_start());
    let first = subscription.next_event().await.unwrap().unwrap();
    assert_eq!(first.stream_id, stream("long"));
    // The subscription now waits on the notification channel.
    let appended = tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            store.append(one_event("long")).await.unwrap();
        }
    });
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        subscription.next_event(),
    )
    .await
    .expect("woken by the append's notification")
    .unwrap()
    .unwrap();
    assert_eq!(second.version, StreamVersion::new(2));
    appended.await.unwrap();
}

#[test]
fn system_schemas_are_refused() {
    for name in [
        "information_schema",
        "pg_catalog",
        "pg_toast",
        "pg_temp_3",
        "pg_mine",
    ] {
        let error = SchemaName::new(name).unwrap_err();
        assert!(error.to_string().contains("system"), "{name}: {error}");
    }
    assert!(SchemaName::new("pgx").is_ok());
    assert!(SchemaName::new("my_information_schema").is_ok());
}

/// Events written before schema versions existed (by the previous release,
/// before and during a rolling upgrade) read as version 1 once
/// `initialize()` has upgraded the schema in place, and are upcast like
/// any version 1 event.
#[tokio::test]
async fn events_from_before_schema_versions_read_as_version_one() {
    let store = support::fresh_store().await;
    support::downgrade_to_release_10(&store).await;
    support::append_as_release_10(&store, "legacy", "Marked", json!({ "name": "before" })).await;

    store.initialize().await.unwrap();
    assert_eq!(applied_migrations(&store).await, ALL_MIGRATIONS);
    // A process still on the previous release keeps appending meanwhile.
    support::append_as_release_10(&store, "legacy", "Marked", json!({ "name": "during" })).await;
    store.append(one_event("legacy")).await.unwrap();

    let read = store.read_streams(&[stream("legacy")]).await.unwrap();
    let versions: Vec<u32> = read.events.iter().map(|e| e.schema_version).collect();
    assert_eq!(versions, [1, 1, 1]);
    let upcasters = eventcore::Upcasters::builder()
        .step("Marked", 1, |mut v: serde_json::Value| {
            v["upcast"] = json!(true);
            Ok(v)
        })
        .build()
        .unwrap();
    let upcasting = store.clone().with_upcasters(upcasters);
    let read = upcasting.read_streams(&[stream("legacy")]).await.unwrap();
    for event in &read.events {
        assert_eq!(event.schema_version, 2);
        assert_eq!(event.payload.to_value().unwrap()["upcast"], json!(true));
    }
}

const LITTER_CHILD: &str = "EVENTCORE_LITTER_CHILD";

/// A test process leaves no schema behind: the schemas of `fresh_store`
/// are dropped once the process that made them exits (here a child
/// process that makes two, and more objects under its run's name than one
/// transaction can lock, and exits without dropping them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_schemas_are_dropped_when_their_process_exits() {
    if std::env::var(LITTER_CHILD).is_ok() {
        let mut stores = Vec::new();
        for _ in 0..2 {
            let store = testing::fresh_store().await.unwrap();
            println!("schema {}", store.schema());
            stores.push(store);
        }
        // More objects under this run's name than one transaction can lock
        // (a test binary with hundreds of stores leaves that many): schemas
        // of 50 empty tables, named as the run's own.
        let slots: i64 = sqlx::query_scalar(
            "SELECT current_setting('max_locks_per_transaction')::bigint                     * (current_setting('max_connections')::bigint                        + current_setting('max_prepared_transactions')::bigint)",
        )
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
        let name = stores[0].schema().as_str().to_owned();
        let prefix = name.rsplit_once('_').unwrap().0;
        for i in 0..slots / 50 + 10 {
            let schema = format!("{prefix}_x{i}");
            let tables: String = (0..50)
                .map(|t| format!("CREATE TABLE \"{schema}\".t{t} ();"))
                .collect();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA \"{schema}\"; {tables}"
            )))
            .execute(stores[0].pool())
            .await
            .unwrap();
            println!("schema {schema}");
        }
        return;
    }
    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "test_schemas_are_dropped_when_their_process_exits",
            "--nocapture",
        ])
        .env(LITTER_CHILD, "1")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("schema ").map(str::to_owned))
        .collect();
    assert!(
        names.len() > 2,
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let store = testing::fresh_store().await.unwrap();
    let remaining = || async {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)")
                .bind(&names)
                .fetch_one(store.pool())
                .await
                .unwrap();
        count
    };
    let started = std::time::Instant::now();
    while remaining().await > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the child's schemas are still there after a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "the child's {} schemas were dropped {:?} after it exited",
        names.len(),
        started.elapsed()
    );
}
