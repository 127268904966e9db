//! Versioned, embedded migrations, applied under an advisory lock.

use sqlx::{Executor, PgConnection, PgPool};

use crate::{
    SchemaName,
    queries::{schema_sql, statement},
};

/// A migration: its version and its SQL, with `__SCHEMA__` for the quoted schema name.
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events, streams and the append function",
        sql: include_str!("migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "projection checkpoints",
        sql: include_str!("migrations/0002_checkpoints.sql"),
    },
    Migration {
        version: 3,
        name: "idempotency keys",
        sql: include_str!("migrations/0003_idempotency.sql"),
    },
    Migration {
        version: 4,
        name: "stream lookups by hash",
        sql: include_str!("migrations/0004_stream_hash_lookup.sql"),
    },
    Migration {
        version: 5,
        name: "snapshots",
        sql: include_str!("migrations/0005_snapshots.sql"),
    },
    Migration {
        version: 6,
        name: "append plans without table scans",
        sql: include_str!("migrations/0006_append_plans.sql"),
    },
    Migration {
        version: 7,
        name: "leaner append function",
        sql: include_str!("migrations/0007_lean_append.sql"),
    },
    Migration {
        version: 8,
        name: "projection leases and fencing",
        sql: include_str!("migrations/0008_projection_leases.sql"),
    },
    Migration {
        version: 9,
        name: "append lock timeout",
        sql: include_str!("migrations/0009_append_lock_timeout.sql"),
    },
    Migration {
        version: 10,
        name: "idempotency key purpose and retention",
        sql: include_str!("migrations/0010_idempotency_purpose.sql"),
    },
    Migration {
        version: 11,
        name: "event schema versions",
        sql: include_str!("migrations/0011_event_schema_versions.sql"),
    },
    Migration {
        version: 12,
        name: "recorded_at index",
        sql: include_str!("migrations/0012_recorded_at_index.sql"),
    },
    Migration {
        version: 13,
        name: "group commit",
        sql: include_str!("migrations/0013_group_commit.sql"),
    },
];

const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('eventcore:' || $1))";

/// `initialize` could not create or upgrade the schema.
///
/// ```no_run
/// use eventcore_postgres::InitializeError;
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// match store.initialize().await {
///     Ok(()) => {}
///     // Deployed code older than the schema: roll forward, not back.
///     Err(InitializeError::TooNew { found, known, .. }) => eprintln!("schema at {found}, code knows {known}"),
///     Err(error) => return Err(error.into()),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum InitializeError {
    /// The database could not be reached or refused a bookkeeping statement.
    #[error("could not prepare schema {schema}")]
    Database {
        /// The schema being initialized.
        schema: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} of schema {schema} failed")]
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
    let name = schema.to_string();
    let mut tx = pool.begin().await.map_err(|e| database(&name, e))?;
    let conn: &mut PgConnection = &mut tx;
    // "already exists, skipping" on every run after the first says nothing.
    sqlx::query("SET LOCAL client_min_messages = warning")
        .execute(&mut *conn)
        .await
        .map_err(|e| database(&name, e))?;
    // Serializes concurrent initializers of this schema until commit.
    sqlx::query(LOCK)
        .bind(schema.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| database(&name, e))?;
    let bookkeeping = format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.eventcore_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )"
    );
    conn.execute(statement(bookkeeping))
        .await
        .map_err(|e| database(&name, e))?;
    let current: Option<i32> = sqlx::query_scalar(schema_sql!(
        "SELECT max(version) FROM {quoted}.eventcore_migrations"
    ))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| database(&name, e))?;
    let current = current.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(InitializeError::TooNew {
            schema: name,
            found: current,
            known,
        });
    }
    let record = schema_sql!("INSERT INTO {quoted}.eventcore_migrations (version) VALUES ($1)");
    for migration in MIGRATIONS {
        if migration.version <= current {
            continue;
        }
        let version = migration.version;
        let sql = migration.sql.replace("__SCHEMA__", &quoted);
        conn.execute(statement(sql))
            .await
            .map_err(|e| failed_migration(&name, version, e))?;
        sqlx::query(record.clone())
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(|e| failed_migration(&name, version, e))?;
        tracing::info!(schema = %name, version, "applied EventCore migration");
    }
    tx.commit().await.map_err(|e| database(&name, e))
}

fn database(schema: &str, source: sqlx::Error) -> InitializeError {
    InitializeError::Database {
        schema: schema.to_owned(),
        source,
    }
}

fn failed_migration(schema: &str, version: i32, source: sqlx::Error) -> InitializeError {
    InitializeError::Migration {
        schema: schema.to_owned(),
        version,
        source,
    }
}

/// A migration of EventCore's schema: its version and what it adds.
///
/// See [`SchemaStatus`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationInfo {
    /// Its version; migrations apply in version order.
    pub version: i32,
    /// What it adds or changes.
    pub name: &'static str,
}

/// Where a schema stands against the migrations this EventCore knows:
/// from [`PostgresEventStore::schema_status`](crate::PostgresEventStore::schema_status).
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let status = store.schema_status().await?;
/// for migration in &status.pending {
///     println!("would apply {}: {}", migration.version, migration.name);
/// }
/// if status.pending.is_empty() {
///     println!("schema {} is current (version {})", status.schema, status.applied);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The schema.
    pub schema: String,
    /// The newest migration applied (0: none, the schema is not initialized).
    pub applied: i32,
    /// The newest migration this EventCore knows.
    pub known: i32,
    /// Migrations [`initialize`](crate::PostgresEventStore::initialize)
    /// would apply, in order.
    pub pending: Vec<MigrationInfo>,
}

/// The schema's applied version and what `initialize` would apply; reads only.
pub(crate) async fn status(
    pool: &PgPool,
    schema: &SchemaName,
) -> Result<SchemaStatus, InitializeError> {
    let name = schema.to_string();
    let table = format!("{}.eventcore_migrations", schema.quoted());
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(pool)
        .await
        .map_err(|e| database(&name, e))?;
    let applied = if exists {
        let current: Option<i32> =
            sqlx::query_scalar(schema_sql!("SELECT max(version) FROM {table}"))
                .fetch_one(pool)
                .await
                .map_err(|e| database(&name, e))?;
        current.unwrap_or(0)
    } else {
        0
    };
    Ok(SchemaStatus {
        schema: name,
        applied,
        known: MIGRATIONS.last().map_or(0, |m| m.version),
        pending: MIGRATIONS
            .iter()
            .filter(|m| m.version > applied)
            .map(|m| MigrationInfo {
                version: m.version,
                name: m.name,
            })
            .collect(),
    })
}
