//! The PostgreSQL event store.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use eventcore::{
    AppendRequest, AppendResult, EventId, EventMetadata, EventStore, EventType, ExpectedVersion,
    GlobalPosition, IdempotencyKey, KeyPurpose, Payload, ReadAllQuery, RecordedEvent, Snapshot,
    SnapshotKey, StoreError, StreamId, StreamVersion, StreamsRead, Subscription, VersionConflict,
    WrittenEvent,
};
use sqlx::{
    Connection, PgConnection, PgPool, Row,
    postgres::{PgConnectOptions, PgRow},
    types::Json,
};
use uuid::Uuid;

use crate::{
    ConfigError, InitializeError, PostgresCheckpointStore, PostgresConfig, PostgresLeadership,
    SchemaName,
    error::{self, Failure},
    notify::{ListenerHub, PgNotifier},
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
    /// Reads and bookkeeping, at the server's default isolation.
    pool: PgPool,
    /// Appends: the same server, with connections that default to
    /// `SERIALIZABLE`, so an append is one autocommit statement.
    writer: PgPool,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    schema: SchemaName,
    channel: String,
    /// The one LISTEN connection all subscriptions of this store share.
    listener: Arc<ListenerHub>,
    poll_interval: Duration,
    in_flight_wait: Duration,
    /// How long idempotency keys are kept.
    key_retention: Duration,
    /// When this store last purged expired keys.
    last_key_purge: std::sync::Mutex<Option<std::time::Instant>>,
    queries: Queries,
}

/// Settings of a store beyond its pool.
struct Settings {
    schema: SchemaName,
    poll_interval: Duration,
    in_flight_wait: Duration,
    key_retention: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            schema: SchemaName::default(),
            poll_interval: crate::config::DEFAULT_POLL_INTERVAL,
            in_flight_wait: crate::config::DEFAULT_IN_FLIGHT_WAIT,
            key_retention: eventcore::DEFAULT_IDEMPOTENCY_RETENTION,
        }
    }
}

/// Makes every transaction on a connection `SERIALIZABLE` unless it says otherwise.
fn serializable(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("default_transaction_isolation", "serializable")])
}

/// Session settings for the store's statements, which each touch a handful
/// of rows through an index: no JIT compilation (a plan whose estimates look
/// large was compiled for 260 ms per execution where running it took 1), and
/// generic plans, prepared once per connection (replanning the snapshot read
/// for every command cost more than running it). The statements are written
/// so that their generic plans are index scans.
fn store_session(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("jit", "off"), ("plan_cache_mode", "force_generic_plan")])
}

/// The oldest transaction still running and the next transaction id to be assigned.
const SNAPSHOT_BOUNDS: &str = "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text \
                               FROM pg_current_snapshot() AS s";
/// Whether every transaction below `$1` has ended.
const WATERMARK_PASSED: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8";
/// How often keyed appends purge expired idempotency keys, at most.
const KEY_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The longest pause between two looks at the watermark.
const MAX_IN_FLIGHT_PAUSE: Duration = Duration::from_millis(20);

/// Statements with the schema name filled in once; values are always bound.
#[derive(Debug)]
struct Queries {
    append: String,
    create_streams: String,
    versions: String,
    read_streams: String,
    read_all: String,
    delivery_lag: String,
    record_key: String,
    find_key: String,
    purge_keys: String,
    read_after: String,
    load_snapshot: String,
    save_snapshot: String,
    read_from_snapshot: String,
}

impl Queries {
    fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        let columns = "event_id, stream_id, stream_version, transaction_id::text AS transaction_text, \
                       sequence, recorded_at, event_type, payload::text AS payload, metadata";
        Self {
            append: format!(
                "SELECT * FROM {s}.eventcore_append($1, $2, $3, $4, $5, $6::text[]::jsonb[], $7, $8, $9)"
            ),
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
            record_key: format!(
                "INSERT INTO {s}.eventcore_idempotency (key, result, purpose) VALUES ($1, $2, $3)"
            ),
            find_key: format!(
                "SELECT result, purpose FROM {s}.eventcore_idempotency WHERE key = $1"
            ),
            purge_keys: format!(
                "DELETE FROM {s}.eventcore_idempotency \
                 WHERE recorded_at < clock_timestamp() - make_interval(secs => $1)"
            ),
            // One statement, so the versions and the events come from one snapshot.
            // `OFFSET 0` keeps each stream's events a parameterized index
            // scan: flattened, the planner may hash-join the whole table.
            read_after: format!(
                "SELECT w.stream_id AS wanted, \
                        coalesce((SELECT st.version FROM {s}.eventcore_streams st \
                                  WHERE st.stream_id = w.stream_id), 0) AS current_version, \
                        e.event_id, e.stream_id, e.stream_version, \
                        e.transaction_id::text AS transaction_text, e.sequence, e.recorded_at, \
                        e.event_type, e.payload::text AS payload, e.metadata \
                 FROM unnest($1::text[], $2::bigint[]) AS w(stream_id, after) \
                 LEFT JOIN LATERAL ( \
                     SELECT * FROM {s}.eventcore_events x \
                     WHERE x.stream_id = w.stream_id AND x.stream_version > w.after \
                     OFFSET 0 \
                 ) e ON true \
                 ORDER BY e.transaction_id, e.sequence"
            ),
            // The snapshot (part 0: versions in `payload`, state in
            // `metadata`) and the events after it (part 1), in one statement.
            read_from_snapshot: format!(
                "WITH snap AS ( \
                     SELECT versions, state FROM {s}.eventcore_snapshots \
                     WHERE md5(key) = md5($1) AND key = $1 AND state_version = $2 \
                 ), wanted AS MATERIALIZED ( \
                     SELECT w.stream_id, \
                            coalesce((SELECT (snap.versions ->> w.stream_id)::bigint FROM snap), 0) AS after, \
                            coalesce((SELECT st.version FROM {s}.eventcore_streams st \
                                      WHERE st.stream_id = w.stream_id), 0) AS current_version \
                     FROM unnest($3::text[]) AS w(stream_id) \
                 ) \
                 SELECT 0 AS part, NULL::text AS wanted, NULL::bigint AS current_version, \
                        NULL::uuid AS event_id, NULL::text AS stream_id, NULL::bigint AS stream_version, \
                        NULL::text AS transaction_text, NULL::bigint AS sequence, \
                        NULL::timestamptz AS recorded_at, NULL::text AS event_type, \
                        snap.versions::text AS payload, snap.state AS metadata, NULL::xid8 AS tx \
                 FROM snap \
                 UNION ALL \
                 SELECT 1, w.stream_id, w.current_version, \
                        e.event_id, e.stream_id, e.stream_version, \
                        e.transaction_id::text, e.sequence, e.recorded_at, \
                        e.event_type, e.payload::text, e.metadata, e.transaction_id \
                 FROM wanted w \
                 LEFT JOIN LATERAL ( \
                     SELECT * FROM {s}.eventcore_events x \
                     WHERE x.stream_id = w.stream_id AND x.stream_version > w.after \
                     OFFSET 0 \
                 ) e ON true \
                 ORDER BY part, tx, sequence"
            ),
            load_snapshot: format!(
                "SELECT state_version, versions, state FROM {s}.eventcore_snapshots \
                 WHERE md5(key) = md5($1) AND key = $1"
            ),
            save_snapshot: format!(
                "INSERT INTO {s}.eventcore_snapshots AS old (key, state_version, reach, versions, state) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb) \
                 ON CONFLICT ((md5(key))) DO UPDATE SET key = excluded.key, \
                    state_version = excluded.state_version, reach = excluded.reach, \
                    versions = excluded.versions, state = excluded.state, saved_at = clock_timestamp() \
                 WHERE old.state_version <> excluded.state_version OR old.reach < excluded.reach"
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
    /// Connects to the database `config` names. Call
    /// [`initialize`](Self::initialize) before first use.
    ///
    /// The store keeps two pools of up to `max_connections` each: one for
    /// reads, one whose connections default to `SERIALIZABLE` for appends.
    /// Both turn PostgreSQL's JIT compilation off for their sessions: it
    /// only slows statements that touch a handful of rows.
    ///
    /// # Errors
    /// [`ConnectError`] if the configuration is invalid or the database unreachable.
    pub async fn new(config: PostgresConfig) -> Result<Self, ConnectError> {
        let (pool_options, connect_options) = config.pool_options()?;
        let connect_options = store_session(connect_options);
        let writer = pool_options
            .clone()
            .connect_lazy_with(serializable(connect_options.clone()));
        let pool = pool_options
            .connect_with(connect_options)
            .await
            .map_err(|source| ConnectError::Connect { source })?;
        Ok(Self::build(
            pool,
            writer,
            Settings {
                schema: config.schema_name().clone(),
                poll_interval: config.subscription_poll_interval(),
                in_flight_wait: config.read_in_flight_wait(),
                key_retention: config.key_retention(),
            },
        ))
    }

    /// Uses an existing pool, with EventCore's tables in schema `public`.
    ///
    /// Appends use a second pool with the same options whose connections
    /// default to `SERIALIZABLE`; it connects when first needed.
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_pool_with_schema(pool, SchemaName::default())
    }

    /// Uses an existing pool, with EventCore's tables in `schema`.
    pub fn from_pool_with_schema(pool: PgPool, schema: SchemaName) -> Self {
        let writer = pool
            .options()
            .clone()
            .connect_lazy_with(serializable(store_session(
                pool.connect_options().as_ref().clone(),
            )));
        Self::build(
            pool,
            writer,
            Settings {
                schema,
                ..Settings::default()
            },
        )
    }

    fn build(pool: PgPool, writer: PgPool, settings: Settings) -> Self {
        let channel = settings.schema.channel();
        let listener = Arc::new(ListenerHub::new(
            pool.connect_options().as_ref().clone(),
            channel.clone(),
        ));
        Self {
            pool,
            writer,
            shared: Arc::new(Shared {
                channel,
                listener,
                queries: Queries::new(&settings.schema),
                schema: settings.schema,
                poll_interval: settings.poll_interval,
                in_flight_wait: settings.in_flight_wait,
                key_retention: settings.key_retention,
                last_key_purge: std::sync::Mutex::new(None),
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

    /// Projection checkpoints in this store's schema (table `eventcore_checkpoints`).
    pub fn checkpoints(&self) -> PostgresCheckpointStore {
        PostgresCheckpointStore::new(self.pool.clone(), &self.shared.schema)
    }

    /// Leadership of projections among every process on this database
    /// (session advisory locks); standby runners retry every `poll`.
    pub fn leadership(&self, poll: Duration) -> PostgresLeadership {
        PostgresLeadership::new(self.pool.clone(), self.shared.schema.clone(), poll)
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
        let params = AppendParams::new(request);
        self.create_new_streams(request)
            .await
            .map_err(Failure::Other)?;
        // Acquired first, so that a pool timeout is `Unavailable`: nothing was sent.
        let mut connection = self
            .writer
            .acquire()
            .await
            .map_err(|e| Failure::Other(error::to_store_error(e)))?;
        if let Some(key) = request.idempotency_key() {
            return self
                .append_with_key(&mut connection, &params, request, key)
                .await;
        }
        // The writer's connections default to SERIALIZABLE, so this one
        // statement is a whole transaction: check, insert, bump, commit.
        let rows = self
            .append_query(&params)
            .fetch_all(&mut *connection)
            .await
            .map_err(error::commit_failure)?;
        append_outcome(&rows, request).map_err(Failure::Other)
    }

    fn append_query<'q>(
        &'q self,
        params: &'q AppendParams<'q>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(&self.shared.queries.append)
            .bind(&params.streams)
            .bind(&params.expected)
            .bind(&params.event_stream)
            .bind(&params.ids)
            .bind(&params.types)
            .bind(&params.payloads)
            .bind(&params.metadata)
            .bind(&self.shared.channel)
            .bind(params.lock_timeout_ms)
    }

    /// An append that records its idempotency key: the key's result if it is
    /// recorded already, otherwise the append and the key in one
    /// `SERIALIZABLE` transaction (lookup, BEGIN, append, record, COMMIT).
    async fn append_with_key(
        &self,
        connection: &mut PgConnection,
        params: &AppendParams<'_>,
        request: &AppendRequest,
        key: &IdempotencyKey,
    ) -> Result<AppendResult, Failure> {
        let purpose = request.key_purpose();
        if let Some(recorded) = self.recorded(key, purpose).await.map_err(Failure::Other)? {
            return Ok(recorded);
        }
        let mut tx = connection.begin().await.map_err(error::classify)?;
        let rows = self
            .append_query(params)
            .fetch_all(&mut *tx)
            .await
            .map_err(error::classify)?;
        let result = match append_outcome(&rows, request) {
            Ok(result) => result,
            Err(conflict @ StoreError::Conflict { .. }) => {
                drop(tx);
                // The streams may have moved because this very key was written meanwhile.
                return match self.recorded(key, purpose).await.map_err(Failure::Other)? {
                    Some(recorded) => Ok(recorded),
                    None => Err(Failure::Other(conflict)),
                };
            }
            Err(other) => return Err(Failure::Other(other)),
        };
        let recorded = sqlx::query(&self.shared.queries.record_key)
            .bind(key.as_ref())
            .bind(Json(&result))
            .bind(purpose.map(KeyPurpose::as_str))
            .execute(&mut *tx)
            .await;
        match recorded {
            Ok(_) => {}
            Err(e) if error::is_duplicate_key(&e) => {
                drop(tx);
                return match self.recorded(key, purpose).await.map_err(Failure::Other)? {
                    Some(recorded) => Ok(recorded),
                    None => Err(Failure::Other(error::to_store_error(e))),
                };
            }
            Err(e) => return Err(error::classify(e)),
        }
        tx.commit().await.map_err(error::commit_failure)?;
        self.purge_keys_now_and_then().await;
        Ok(result)
    }

    /// The result recorded under `key` for `purpose`, marked as a replay.
    async fn recorded(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let stored: Option<(Json<AppendResult>, Option<String>)> =
            sqlx::query_as(&self.shared.queries.find_key)
                .bind(key.as_ref())
                .fetch_optional(&self.pool)
                .await
                .map_err(error::to_store_error)?;
        let Some((Json(result), recorded)) = stored else {
            return Ok(None);
        };
        KeyPurpose::check(key, recorded.map(KeyPurpose::from_stored).as_ref(), purpose)?;
        Ok(Some(AppendResult {
            replayed: true,
            ..result
        }))
    }

    /// Deletes the idempotency keys older than the retention period
    /// ([`PostgresConfig::idempotency_retention`], 24 hours by default), and
    /// only those: a retry whose lookup comes within the period finds its
    /// key. Keyed appends call it by themselves at most once a minute per
    /// store; call it from a maintenance job where keys are rare.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        let deleted = sqlx::query(&self.shared.queries.purge_keys)
            .bind(self.shared.key_retention.as_secs_f64())
            .execute(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        Ok(deleted.rows_affected())
    }

    /// Purges expired keys if the last purge from this store was a minute ago or more.
    async fn purge_keys_now_and_then(&self) {
        let due = {
            let mut last = self
                .shared
                .last_key_purge
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.is_none_or(|at| at.elapsed() >= KEY_PURGE_INTERVAL);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            if let Err(error) = self.purge_idempotency_keys().await {
                tracing::warn!(%error, "expired idempotency keys not purged");
            }
        }
    }

    /// Waits, up to the configured time, until every transaction running now
    /// has ended, so the watermark a following read uses lies above all of
    /// them: whatever committed before this call is then delivered.
    async fn await_in_flight(&self) -> Result<(), StoreError> {
        let (oldest, next): (String, String) = sqlx::query_as(SNAPSHOT_BOUNDS)
            .fetch_one(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        if oldest == next {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.shared.in_flight_wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let passed: bool = sqlx::query_scalar(WATERMARK_PASSED)
                .bind(&next)
                .fetch_one(&self.pool)
                .await
                .map_err(error::to_store_error)?;
            if passed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!(
                    wait = ?self.shared.in_flight_wait,
                    "a transaction older than this read is still running; reading below it"
                );
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_IN_FLIGHT_PAUSE);
        }
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

/// The arguments of `eventcore_append`, as parallel arrays.
struct AppendParams<'a> {
    streams: Vec<&'a str>,
    expected: Vec<Option<i64>>,
    event_stream: Vec<i32>,
    ids: Vec<Uuid>,
    types: Vec<&'a str>,
    /// Payloads as JSON text, cast to `jsonb` by the statement.
    payloads: Vec<&'a str>,
    metadata: Vec<Json<&'a EventMetadata>>,
    /// The request's bound on lock waits, in milliseconds.
    lock_timeout_ms: Option<i64>,
}

impl<'a> AppendParams<'a> {
    fn new(request: &'a AppendRequest) -> Self {
        let events = request.event_count();
        let mut params = Self {
            streams: Vec::with_capacity(request.streams().len()),
            expected: Vec::with_capacity(request.streams().len()),
            event_stream: Vec::with_capacity(events),
            ids: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
            lock_timeout_ms: request
                .max_lock_wait()
                .map(|wait| i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
        };
        for stream in request.streams() {
            params.streams.push(stream.stream_id.as_ref());
            params.expected.push(match stream.expected {
                ExpectedVersion::Any => None,
                ExpectedVersion::NoStream => Some(0),
                ExpectedVersion::Exact(v) => Some(i64::try_from(v.value()).unwrap_or(i64::MAX)),
            });
        }
        // In the request's global order: the function inserts them in array
        // order, which numbers their sequences in that order.
        for (index, event) in request.events_in_order() {
            // PostgreSQL arrays are 1-based.
            params
                .event_stream
                .push(i32::try_from(index + 1).unwrap_or(i32::MAX));
            params.ids.push(*EventId::new_v7().as_uuid());
            params.types.push(event.event_type().as_ref());
            params.payloads.push(event.payload().as_json());
            params.metadata.push(Json(event.metadata()));
        }
        params
    }
}

/// Reads `eventcore_append`'s rows: conflicts, or the written events and every listed stream's version.
fn append_outcome(rows: &[PgRow], request: &AppendRequest) -> Result<AppendResult, StoreError> {
    let mut conflicts = Vec::new();
    let mut events = Vec::new();
    let mut versions = BTreeMap::new();
    for row in rows {
        let kind: String = row.try_get("o_kind").map_err(error::to_store_error)?;
        match kind.as_str() {
            "event" => events.push(written_event(row)?),
            "version" | "conflict" => {
                let stream: String = row.try_get("o_stream_id").map_err(error::to_store_error)?;
                let version: i64 = row.try_get("o_version").map_err(error::to_store_error)?;
                let Some(listed) = request
                    .streams()
                    .iter()
                    .find(|s| s.stream_id.as_ref() == stream)
                else {
                    return Err(corrupt(format!(
                        "append reported unlisted stream {stream:?}"
                    )));
                };
                if kind == "conflict" {
                    conflicts.push(VersionConflict {
                        stream_id: listed.stream_id.clone(),
                        expected: listed.expected,
                        actual: to_version(version),
                    });
                } else {
                    versions.insert(listed.stream_id.clone(), to_version(version));
                }
            }
            other => return Err(corrupt(format!("append returned a row of kind {other:?}"))),
        }
    }
    if conflicts.is_empty() {
        Ok(AppendResult {
            events,
            versions,
            replayed: false,
        })
    } else {
        Err(StoreError::Conflict { conflicts })
    }
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

/// Adds one row of a read after versions: a stream's current version and,
/// unless the stream has nothing new, one of its events.
fn add_stream_row(read: &mut StreamsRead, row: &PgRow) -> Result<(), StoreError> {
    let get = |e: sqlx::Error| error::to_store_error(e);
    let wanted: String = row.try_get("wanted").map_err(get)?;
    let current: i64 = row.try_get("current_version").map_err(get)?;
    read.versions
        .insert(stream_id(&wanted)?, to_version(current));
    let event_id: Option<Uuid> = row.try_get("event_id").map_err(get)?;
    if event_id.is_some() {
        read.events.push(recorded_event(row)?);
    }
    Ok(())
}

/// A snapshot's stored versions, checked.
fn snapshot_versions(
    stored: BTreeMap<String, i64>,
) -> Result<BTreeMap<StreamId, StreamVersion>, StoreError> {
    stored
        .into_iter()
        .map(|(id, v)| Ok((stream_id(&id)?, to_version(v))))
        .collect()
}

/// A stored event, or [`StoreError::Undecodable`] naming its position when
/// the row holds something EventCore cannot read.
fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let get = |e: sqlx::Error| error::to_store_error(e);
    let transaction: String = row.try_get("transaction_text").map_err(get)?;
    let sequence: i64 = row.try_get("sequence").map_err(get)?;
    let position = position(&transaction, sequence)?;
    let undecodable = |reason: String| StoreError::Undecodable { position, reason };
    let column = |e: sqlx::Error| undecodable(e.to_string());
    let id: Uuid = row.try_get("event_id").map_err(column)?;
    let stream: String = row.try_get("stream_id").map_err(column)?;
    let version: i64 = row.try_get("stream_version").map_err(column)?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(column)?;
    let event_type: String = row.try_get("event_type").map_err(column)?;
    let payload: String = row.try_get("payload").map_err(column)?;
    let Json(metadata): Json<serde_json::Value> = row.try_get("metadata").map_err(column)?;
    let metadata: EventMetadata = serde_json::from_value(metadata)
        .map_err(|e| undecodable(format!("metadata of event {id}: {e}")))?;
    Ok(RecordedEvent {
        id: EventId::from_uuid(id),
        stream_id: StreamId::try_new(stream.as_str())
            .map_err(|e| undecodable(format!("stream id {stream:?} of event {id}: {e}")))?,
        version: to_version(version),
        position,
        recorded_at,
        event_type: EventType::try_new(event_type.as_str())
            .map_err(|e| undecodable(format!("event type of event {id}: {e}")))?,
        payload: Payload::from_stored(payload),
        metadata,
    })
}

/// The events of a page of the global order up to the first row that
/// cannot be read; that row's error only when it comes first, so a reader
/// gets every good event before it and then the error at its position.
fn readable_prefix(rows: &[PgRow]) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match recorded_event(row) {
            Ok(event) => events.push(event),
            Err(error) if events.is_empty() => return Err(error),
            Err(_) => break,
        }
    }
    Ok(events)
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

    async fn read_streams_after(
        &self,
        after: &BTreeMap<StreamId, StreamVersion>,
    ) -> Result<StreamsRead, StoreError> {
        let names: Vec<&str> = after.keys().map(AsRef::as_ref).collect();
        let known: Vec<i64> = after
            .values()
            .map(|v| i64::try_from(v.value()).unwrap_or(i64::MAX))
            .collect();
        let rows = sqlx::query(&self.shared.queries.read_after)
            .bind(&names)
            .bind(&known)
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        let mut read = StreamsRead::default();
        for row in &rows {
            add_stream_row(&mut read, row)?;
        }
        Ok(read)
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(&self.shared.queries.load_snapshot)
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |e: sqlx::Error| error::to_store_error(e);
        let state_version: i64 = row.try_get("state_version").map_err(get)?;
        let Json(versions): Json<BTreeMap<String, i64>> = row.try_get("versions").map_err(get)?;
        let Json(state): Json<serde_json::Value> = row.try_get("state").map_err(get)?;
        // Kept as compact text, as the executor's cache keeps it.
        let state = Payload::from_stored(state.to_string());
        let versions = snapshot_versions(versions)?;
        Ok(Some(Snapshot {
            key: key.clone(),
            state_version: u32::try_from(state_version)
                .map_err(|_| corrupt(format!("snapshot state version {state_version}")))?,
            versions,
            state,
        }))
    }

    async fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
        state_version: u32,
        streams: &[StreamId],
    ) -> Result<(Option<Snapshot>, StreamsRead), StoreError> {
        let names: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
        let rows = sqlx::query(&self.shared.queries.read_from_snapshot)
            .bind(key.as_str())
            .bind(i64::from(state_version))
            .bind(&names)
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        let get = |e: sqlx::Error| error::to_store_error(e);
        let mut snapshot = None;
        let mut read = StreamsRead::default();
        for row in &rows {
            let part: i32 = row.try_get("part").map_err(get)?;
            if part == 0 {
                let stored: String = row.try_get("payload").map_err(get)?;
                let stored: BTreeMap<String, i64> = serde_json::from_str(&stored)
                    .map_err(|e| corrupt(format!("snapshot versions of {}: {e}", key.as_str())))?;
                let Json(state): Json<serde_json::Value> = row.try_get("metadata").map_err(get)?;
                let state = Payload::from_stored(state.to_string());
                snapshot = Some(Snapshot {
                    key: key.clone(),
                    state_version,
                    versions: snapshot_versions(stored)?,
                    state,
                });
                continue;
            }
            add_stream_row(&mut read, row)?;
        }
        Ok((snapshot, read))
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let versions: BTreeMap<&str, u64> = snapshot
            .versions
            .iter()
            .map(|(id, v)| (id.as_ref(), v.value()))
            .collect();
        sqlx::query(&self.shared.queries.save_snapshot)
            .bind(snapshot.key.as_str())
            .bind(i64::from(snapshot.state_version))
            .bind(i64::try_from(snapshot.reach()).unwrap_or(i64::MAX))
            .bind(Json(versions))
            .bind(snapshot.state.as_json())
            .execute(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        Ok(())
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        match self.try_append(&request).await {
            Ok(result) => Ok(result),
            Err(Failure::Other(error)) => Err(error),
            Err(Failure::Contention(cause)) => Err(self.explain_contention(&request, cause).await),
        }
    }

    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        self.await_in_flight().await?;
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
        readable_prefix(&rows)
    }

    async fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        self.recorded(key, purpose).await
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        let notifier = PgNotifier::new(self.shared.listener.clone(), self.shared.poll_interval);
        Subscription::follow(self.clone(), query, notifier)
    }
}
