//! Versioned, embedded migrations, applied under an advisory lock.

use sqlx::PgPool;

use crate::SchemaName;

/// A migration: its version and its SQL, with `__SCHEMA__` for the quoted schema name.
struct Migration {
    version: i32,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: include_str!("migrations/0001_events.sql"),
}];

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('eventcore:' || $1))";

/// `initialize` could not create or upgrade the schema.
#[derive(Debug, thiserror::Error)]
pub enum InitializeError {
    /// The database could not be reached or refused a bookkeeping statement.
    #[error("could not prepare schema {schema}: {source}")]
    Database {
        /// The schema being initialized.
        schema: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} of schema {schema} failed: {source}")]
    Migration {
        /// The schema being initialized.
        schema: String,
        /// The failing migration.
        version: i32,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database holds a newer schema than this version of EventCore knows.
    #[error("schema {schema} is at version {found}, newer than the {known} this EventCore knows")]
    TooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest version known here.
        known: i32,
    },
}

/// Creates or upgrades the schema; safe to run from many processes at once.
pub(crate) async fn initialize(pool: &PgPool, schema: &SchemaName) -> Result<(), InitializeError> {
    let quoted = schema.quoted();
    let db_error = |source| InitializeError::Database {
        schema: schema.to_string(),
        source,
    };
    let mut tx = pool.begin().await.map_err(db_error)?;
    // Serializes concurrent initializers of this schema until commit.
    sqlx::query(LOCK)
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let bookkeeping = format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.eventcore_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )"
    );
    sqlx::raw_sql(&bookkeeping)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let current: Option<i32> = sqlx::query_scalar(&format!(
        "SELECT max(version) FROM {quoted}.eventcore_migrations"
    ))
    .fetch_one(&mut *tx)
    .await
    .map_err(db_error)?;
    let current = current.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(InitializeError::TooNew {
            schema: schema.to_string(),
            found: current,
            known,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let migration_error = |source| InitializeError::Migration {
            schema: schema.to_string(),
            version: migration.version,
            source,
        };
        sqlx::raw_sql(&migration.sql.replace("__SCHEMA__", &quoted))
            .execute(&mut *tx)
            .await
            .map_err(migration_error)?;
        sqlx::query(&format!(
            "INSERT INTO {quoted}.eventcore_migrations (version) VALUES ($1)"
        ))
        .bind(migration.version)
        .execute(&mut *tx)
        .await
        .map_err(migration_error)?;
        tracing::info!(schema = %schema, version = migration.version, "applied EventCore migration");
    }
    tx.commit().await.map_err(db_error)
}
