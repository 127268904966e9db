//! Test databases: every test gets a fresh schema of its own.
//!
//! The server is the one `DATABASE_URL` names, or else the local one on
//! 127.0.0.1:5432 (user `postgres`), in which a database `eventcore_test` is
//! created when missing. Without a reachable server the tests fail, saying
//! what to do; they never skip.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventcore_postgres::{PostgresConfig, PostgresEventStore};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const TEST_DATABASE: &str = "eventcore_test";
const SCHEMA_PREFIX: &str = "eventcore_t_";
/// Test schemas older than this are dropped when a test binary starts.
const STALE_AFTER: Duration = Duration::from_secs(3600);

static DATABASE: OnceCell<String> = OnceCell::const_new();

/// The URL of the database tests create their schemas in.
pub async fn database_url() -> String {
    DATABASE.get_or_init(prepare_database).await.clone()
}

async fn prepare_database() -> String {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let admin = format!("{LOCAL_SERVER}/postgres");
            let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                panic!(
                    "no PostgreSQL for the tests: DATABASE_URL is not set and {admin} is not \
                     reachable ({e}). Set DATABASE_URL to a database the tests may create \
                     schemas in, or start a local server (Debian: `apt-get install postgresql`, \
                     then `pg_ctlcluster 15 main start`; trust authentication for user postgres)."
                )
            });
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(TEST_DATABASE)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            if !exists {
                // Another test binary may create it at the same moment.
                let _ = conn
                    .execute(format!("CREATE DATABASE {TEST_DATABASE}").as_str())
                    .await;
            }
            format!("{LOCAL_SERVER}/{TEST_DATABASE}")
        }
    };
    drop_stale_schemas(&url).await;
    url
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn drop_stale_schemas(url: &str) {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
            .bind(format!("{SCHEMA_PREFIX}%"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let cutoff = now_secs().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created: Option<u64> = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|secs| secs < cutoff) {
            let _ = conn
                .execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str())
                .await;
        }
    }
}

/// A fresh schema name, unique to this test.
pub fn fresh_schema_name() -> String {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{SCHEMA_PREFIX}{}_{}",
        now_secs(),
        &unique[unique.len() - 16..]
    )
}

/// Settings for a store in a fresh schema, not yet initialized.
pub async fn fresh_config() -> PostgresConfig {
    PostgresConfig::new(database_url().await)
        .max_connections(8)
        .poll_interval(Duration::from_millis(50))
        .schema(&fresh_schema_name())
        .unwrap()
}

/// An initialized store in a fresh schema of its own.
pub async fn fresh_store() -> PostgresEventStore {
    let store = PostgresEventStore::new(fresh_config().await)
        .await
        .expect("connect to the test database");
    store.initialize().await.expect("initialize a test schema");
    store
}
