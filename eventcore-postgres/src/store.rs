//! The PostgreSQL event store.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use eventcore::{
    AppendRequest, AppendResult, EventId, EventMetadata, EventStore, EventType, ExpectedVersion,
    GlobalPosition, ReadAllQuery, RecordedEvent, StoreError, StreamId, StreamVersion, StreamsRead,
    Subscription, VersionConflict, WrittenEvent,
};
use sqlx::{PgPool, Row, postgres::PgRow, types::Json};
use uuid::Uuid;

use crate::{
    ConfigError, InitializeError, PostgresConfig, SchemaName,
    error::{self, Failure},
    notify::PgNotifier,
    schema,
};

/// An [`EventStore`] on PostgreSQL; clones share the pool.
///
/// Appends run in one `SERIALIZABLE` transaction calling a server-side
/// function that checks every listed stream's version (one index point
/// lookup each), inserts the events and bumps the versions. Reads are single
/// statements, so a multi-stream read is one consistent snapshot.
///
/// The global order is `(writing transaction id, sequence)`, and `read_all`
/// delivers only events whose transaction is older than the oldest
/// transaction still running (`pg_snapshot_xmin(pg_current_snapshot())`):
/// no later commit can then land below what a reader has passed. The price
/// is that a long transaction anywhere in the cluster holds delivery back;
/// [`PostgresEventStore::delivery_lag`] shows by how much.
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    schema: SchemaName,
    channel: String,
    poll_interval: Duration,
    queries: Queries,
}

/// Statements with the schema name filled in once; values are always bound.
#[derive(Debug)]
struct Queries {
    append: String,
    create_streams: String,
    versions: String,
    read_streams: String,
    read_all: String,
    delivery_lag: String,
}

impl Queries {
    fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        let columns = "event_id, stream_id, stream_version, transaction_id::text AS transaction_text, \
                       sequence, recorded_at, event_type, payload, metadata";
        Self {
            append: format!("SELECT * FROM {s}.eventcore_append($1, $2, $3, $4, $5, $6, $7, $8)"),
            create_streams: format!(
                "INSERT INTO {s}.eventcore_streams (stream_id, version) \
                 SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING"
            ),
            versions: format!(
                "SELECT stream_id, version FROM {s}.eventcore_streams WHERE stream_id = ANY($1)"
            ),
            read_streams: format!(
                "SELECT {columns} FROM {s}.eventcore_events WHERE stream_id = ANY($1) \
                 ORDER BY transaction_id, sequence"
            ),
            read_all: format!(
                "SELECT {columns} FROM {s}.eventcore_events \
                 WHERE (transaction_id, sequence) > ($1::text::xid8, $2) \
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   AND ($3::text[] IS NULL OR event_type = ANY($3)) \
                 ORDER BY transaction_id, sequence LIMIT $4"
            ),
            delivery_lag: format!(
                "SELECT count(*) FROM {s}.eventcore_events \
                 WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())"
            ),
        }
    }
}

/// The store could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be reached (the URL is not repeated: it may hold a password).
    #[error("could not connect to PostgreSQL: {source}")]
    Connect {
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
}

impl PostgresEventStore {
    /// Connects a pool with `config`. Call [`initialize`](Self::initialize) before first use.
    ///
    /// # Errors
    /// [`ConnectError`] if the configuration is invalid or the database unreachable.
    pub async fn new(config: PostgresConfig) -> Result<Self, ConnectError> {
        let (pool_options, connect_options) = config.pool_options()?;
        let pool = pool_options
            .connect_with(connect_options)
            .await
            .map_err(|source| ConnectError::Connect { source })?;
        Ok(Self::build(
            pool,
            config.schema_name().clone(),
            config.subscription_poll_interval(),
        ))
    }

    /// Uses an existing pool, with EventCore's tables in schema `public`.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::build(pool, SchemaName::default(), Duration::from_millis(500))
    }

    /// Uses an existing pool, with EventCore's tables in `schema`.
    pub fn from_pool_with_schema(pool: PgPool, schema: SchemaName) -> Self {
        Self::build(pool, schema, Duration::from_millis(500))
    }

    fn build(pool: PgPool, schema: SchemaName, poll_interval: Duration) -> Self {
        Self {
            pool,
            shared: Arc::new(Shared {
                channel: format!("eventcore_{}", schema.as_str()),
                queries: Queries::new(&schema),
                schema,
                poll_interval,
            }),
        }
    }

    /// Creates or upgrades EventCore's tables. Idempotent, and safe to call
    /// from many processes at once (they take turns on an advisory lock).
    ///
    /// # Errors
    /// [`InitializeError`] with the failing step and its cause.
    pub async fn initialize(&self) -> Result<(), InitializeError> {
        schema::initialize(&self.pool, &self.shared.schema).await
    }

    /// The pool, for applications that keep read models in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema holding EventCore's tables.
    pub fn schema(&self) -> &SchemaName {
        &self.shared.schema
    }

    /// Events committed or in flight that readers of the global order cannot
    /// be given yet because an older transaction is still running.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn delivery_lag(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(&self.shared.queries.delivery_lag)
            .fetch_one(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn try_append(&self, request: &AppendRequest) -> Result<AppendResult, Failure> {
        let mut streams = Vec::with_capacity(request.streams().len());
        let mut expected = Vec::with_capacity(request.streams().len());
        let events = request.event_count();
        let mut event_stream = Vec::with_capacity(events);
        let mut ids = Vec::with_capacity(events);
        let mut types = Vec::with_capacity(events);
        let mut payloads = Vec::with_capacity(events);
        let mut metadata = Vec::with_capacity(events);
        for (index, stream) in request.streams().iter().enumerate() {
            streams.push(stream.stream_id.as_ref().to_owned());
            expected.push(match stream.expected {
                ExpectedVersion::Any => None,
                ExpectedVersion::NoStream => Some(0_i64),
                ExpectedVersion::Exact(v) => Some(i64::try_from(v.value()).unwrap_or(i64::MAX)),
            });
            for event in &stream.events {
                event_stream.push(i32::try_from(index + 1).unwrap_or(i32::MAX));
                ids.push(*EventId::new_v7().as_uuid());
                types.push(event.event_type().as_ref().to_owned());
                payloads.push(Json(event.payload()));
                metadata.push(Json(event.metadata()));
            }
        }

        self.create_new_streams(request)
            .await
            .map_err(Failure::Other)?;
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
            .await
            .map_err(error::classify)?;
        let rows = sqlx::query(&self.shared.queries.append)
            .bind(&streams)
            .bind(&expected)
            .bind(&event_stream)
            .bind(&ids)
            .bind(&types)
            .bind(&payloads)
            .bind(&metadata)
            .bind(&self.shared.channel)
            .fetch_all(&mut *tx)
            .await
            .map_err(error::classify)?;

        let conflicts = conflicts_in(&rows, request)?;
        if !conflicts.is_empty() {
            // Nothing was written; dropping the transaction rolls it back.
            return Err(Failure::Other(StoreError::Conflict { conflicts }));
        }
        let written = rows
            .iter()
            .map(written_event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::Other)?;
        tx.commit().await.map_err(error::commit_failure)?;

        let mut versions = BTreeMap::new();
        for stream in request.streams() {
            let base = match stream.expected {
                ExpectedVersion::Exact(v) => v,
                _ => StreamVersion::INITIAL,
            };
            versions.insert(stream.stream_id.clone(), base);
        }
        // Streams with new events end at their last event's version; check-only
        // and `Any`-expectation streams are filled in from what was written or read.
        for event in &written {
            versions.insert(event.stream_id.clone(), event.version);
        }
        let unknown: Vec<StreamId> = request
            .streams()
            .iter()
            .filter(|s| s.events.is_empty() && !matches!(s.expected, ExpectedVersion::Exact(_)))
            .map(|s| s.stream_id.clone())
            .collect();
        if !unknown.is_empty() {
            for (stream, version) in self
                .current_versions(&unknown)
                .await
                .map_err(Failure::Other)?
            {
                versions.insert(stream, version);
            }
        }
        Ok(AppendResult {
            events: written,
            versions,
        })
    }

    /// Creates, outside the serializable transaction, the rows of streams the
    /// append may create (expected at version 0, or at any version), so that
    /// inside it every version check finds a row and locks only that row.
    async fn create_new_streams(&self, request: &AppendRequest) -> Result<(), StoreError> {
        let maybe_new: Vec<&str> = request
            .streams()
            .iter()
            .filter(|s| match s.expected {
                ExpectedVersion::Any | ExpectedVersion::NoStream => true,
                ExpectedVersion::Exact(v) => v == StreamVersion::INITIAL,
            })
            .map(|s| s.stream_id.as_ref())
            .collect();
        if maybe_new.is_empty() {
            return Ok(());
        }
        sqlx::query(&self.shared.queries.create_streams)
            .bind(&maybe_new)
            .execute(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        Ok(())
    }

    /// After contention: which expectations no longer hold? None means a pure
    /// serialization failure, retryable as such.
    async fn explain_contention(&self, request: &AppendRequest, cause: sqlx::Error) -> StoreError {
        let ids: Vec<StreamId> = request
            .streams()
            .iter()
            .map(|s| s.stream_id.clone())
            .collect();
        let conflicts = match self.current_versions(&ids).await {
            Ok(current) => request
                .streams()
                .iter()
                .filter_map(|s| {
                    let actual = current.get(&s.stream_id).copied().unwrap_or_default();
                    (!s.expected.accepts(actual)).then(|| VersionConflict {
                        stream_id: s.stream_id.clone(),
                        expected: s.expected,
                        actual,
                    })
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if conflicts.is_empty() {
            StoreError::Transient {
                reason: "serialization failure or deadlock".to_owned(),
                source: Some(Box::new(cause)),
            }
        } else {
            StoreError::Conflict { conflicts }
        }
    }

    async fn current_versions(
        &self,
        ids: &[StreamId],
    ) -> Result<BTreeMap<StreamId, StreamVersion>, StoreError> {
        let names: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let rows = sqlx::query(&self.shared.queries.versions)
            .bind(&names)
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        let mut versions: BTreeMap<StreamId, StreamVersion> = ids
            .iter()
            .map(|id| (id.clone(), StreamVersion::INITIAL))
            .collect();
        for row in rows {
            let stream: String = row.try_get("stream_id").map_err(error::to_store_error)?;
            let version: i64 = row.try_get("version").map_err(error::to_store_error)?;
            versions.insert(stream_id(&stream)?, to_version(version));
        }
        Ok(versions)
    }
}

fn conflicts_in(rows: &[PgRow], request: &AppendRequest) -> Result<Vec<VersionConflict>, Failure> {
    let mut conflicts = Vec::new();
    for row in rows {
        let conflict: bool = row.try_get("o_conflict").map_err(other)?;
        if !conflict {
            continue;
        }
        let stream: String = row.try_get("o_stream_id").map_err(other)?;
        let actual: i64 = row.try_get("o_version").map_err(other)?;
        if let Some(listed) = request
            .streams()
            .iter()
            .find(|s| s.stream_id.as_ref() == stream)
        {
            conflicts.push(VersionConflict {
                stream_id: listed.stream_id.clone(),
                expected: listed.expected,
                actual: to_version(actual),
            });
        }
    }
    Ok(conflicts)
}

fn other(error: sqlx::Error) -> Failure {
    Failure::Other(error::to_store_error(error))
}

fn to_version(version: i64) -> StreamVersion {
    StreamVersion::new(u64::try_from(version).unwrap_or(0))
}

fn position(transaction: &str, sequence: i64) -> Result<GlobalPosition, StoreError> {
    let transaction: u64 = transaction
        .parse()
        .map_err(|_| corrupt(format!("transaction id {transaction:?}")))?;
    Ok(GlobalPosition::new(
        transaction,
        u64::try_from(sequence).unwrap_or(0),
    ))
}

fn corrupt(what: String) -> StoreError {
    StoreError::Backend {
        reason: format!("stored data is not valid EventCore data: {what}"),
        source: None,
    }
}

fn stream_id(raw: &str) -> Result<StreamId, StoreError> {
    StreamId::try_new(raw).map_err(|e| corrupt(format!("stream id {raw:?}: {e}")))
}

fn written_event(row: &PgRow) -> Result<WrittenEvent, StoreError> {
    let get = |e: sqlx::Error| error::to_store_error(e);
    let stream: String = row.try_get("o_stream_id").map_err(get)?;
    let version: i64 = row.try_get("o_version").map_err(get)?;
    let id: Uuid = row.try_get("o_event_id").map_err(get)?;
    let transaction: String = row.try_get("o_transaction_id").map_err(get)?;
    let sequence: i64 = row.try_get("o_sequence").map_err(get)?;
    let recorded_at: DateTime<Utc> = row.try_get("o_recorded_at").map_err(get)?;
    Ok(WrittenEvent {
        id: EventId::from_uuid(id),
        stream_id: stream_id(&stream)?,
        version: to_version(version),
        position: position(&transaction, sequence)?,
        recorded_at,
    })
}

fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let get = |e: sqlx::Error| error::to_store_error(e);
    let id: Uuid = row.try_get("event_id").map_err(get)?;
    let stream: String = row.try_get("stream_id").map_err(get)?;
    let version: i64 = row.try_get("stream_version").map_err(get)?;
    let transaction: String = row.try_get("transaction_text").map_err(get)?;
    let sequence: i64 = row.try_get("sequence").map_err(get)?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(get)?;
    let event_type: String = row.try_get("event_type").map_err(get)?;
    let Json(payload): Json<serde_json::Value> = row.try_get("payload").map_err(get)?;
    let Json(metadata): Json<serde_json::Value> = row.try_get("metadata").map_err(get)?;
    let metadata: EventMetadata = serde_json::from_value(metadata)
        .map_err(|e| corrupt(format!("metadata of event {id}: {e}")))?;
    Ok(RecordedEvent {
        id: EventId::from_uuid(id),
        stream_id: stream_id(&stream)?,
        version: to_version(version),
        position: position(&transaction, sequence)?,
        recorded_at,
        event_type: EventType::try_new(event_type.as_str())
            .map_err(|e| corrupt(format!("event type of event {id}: {e}")))?,
        payload,
        metadata,
    })
}

impl EventStore for PostgresEventStore {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        let names: Vec<&str> = stream_ids.iter().map(AsRef::as_ref).collect();
        let rows = sqlx::query(&self.shared.queries.read_streams)
            .bind(&names)
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        let mut versions: BTreeMap<StreamId, StreamVersion> = stream_ids
            .iter()
            .map(|id| (id.clone(), StreamVersion::INITIAL))
            .collect();
        let events = rows
            .iter()
            .map(recorded_event)
            .collect::<Result<Vec<_>, _>>()?;
        // All of a stream's events are read, so its version is its highest one.
        for event in &events {
            if let Some(version) = versions.get_mut(&event.stream_id) {
                *version = (*version).max(event.version);
            }
        }
        Ok(StreamsRead { events, versions })
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        match self.try_append(&request).await {
            Ok(result) => Ok(result),
            Err(Failure::Other(error)) => Err(error),
            Err(Failure::Contention(cause)) => Err(self.explain_contention(&request, cause).await),
        }
    }

    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let types: Option<Vec<&str>> = query
            .event_types
            .as_ref()
            .map(|types| types.iter().map(AsRef::as_ref).collect());
        let rows = sqlx::query(&self.shared.queries.read_all)
            .bind(query.after.transaction().to_string())
            .bind(i64::try_from(query.after.sequence()).unwrap_or(i64::MAX))
            .bind(types)
            .bind(i64::try_from(query.limit.get()).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        rows.iter().map(recorded_event).collect()
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        let notifier = PgNotifier::new(
            self.pool.clone(),
            self.shared.channel.clone(),
            self.shared.poll_interval,
        );
        Subscription::follow(self.clone(), query, notifier)
    }
}
