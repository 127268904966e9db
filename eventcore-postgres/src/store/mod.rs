//! The PostgreSQL event store.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use eventcore::{
    AppendRequest, AppendResult, Direction, EventId, EventMetadata, EventStore, ExpectedVersion,
    IdempotencyKey, KeyPurpose, Payload, ReadAllQuery, RecordedEvent, Snapshot, SnapshotKey,
    StoreError, StreamId, StreamPage, StreamQuery, StreamVersion, StreamsRead, Subscription,
    Upcasters, VersionConflict,
};
use sqlx::{
    Connection, PgConnection, PgPool, Row,
    postgres::{PgConnectOptions, PgRow},
    types::Json,
};
use uuid::Uuid;

use eventcore::telemetry::traced;

mod import;
mod replica;
use import::ImportQueries;
pub use replica::{WaitError, WalPosition};

use crate::{
    ConfigError, InitializeError, PostgresCheckpointStore, PostgresConfig, PostgresLeadership,
    SchemaName,
    error::{self, Failure},
    notify::{ListenerHub, PgNotifier},
    queries::Queries,
    rows::{
        add_stream_row, corrupt, readable_prefix, recorded_event, snapshot_versions, stream_id,
        stream_page_rows, to_version, written_event,
    },
    schema, telemetry,
};

/// The connection of one store call that reads events: from the pool as
/// it is or, through a transaction pooler, inside a transaction of its own
/// (a pooler may hand statements outside one to different server
/// connections, and a statement's Parse and its Bind must meet).
pub(crate) enum CallConnection {
    Direct(sqlx::pool::PoolConnection<sqlx::Postgres>),
    Pooled(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl std::ops::Deref for CallConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Self::Direct(connection) => connection,
            Self::Pooled(transaction) => transaction,
        }
    }
}

impl std::ops::DerefMut for CallConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Direct(connection) => connection,
            Self::Pooled(transaction) => transaction,
        }
    }
}

impl CallConnection {
    /// Ends the call's transaction, if it has one.
    pub(crate) async fn done(self) -> Result<(), StoreError> {
        match self {
            Self::Direct(_) => Ok(()),
            Self::Pooled(transaction) => transaction.commit().await.map_err(error::to_store_error),
        }
    }
}

/// The most connections a store opens, from
/// [`PostgresEventStore::connection_limit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimit {
    /// The read pool's limit: reads, checkpoints, bookkeeping (and appends
    /// for a store made [`from_pool`](PostgresEventStore::from_pool)).
    pub read: u32,
    /// The writer pool's limit (0 when appends share the read pool).
    pub write: u32,
    /// The LISTEN connection, open while any subscription waits.
    pub listener: u32,
    /// Each configured replica's pool limit, on that replica.
    pub replicas: Vec<u32>,
}

impl ConnectionLimit {
    /// The most connections on the primary with `runners` projection
    /// runners using the store's leadership (one lease connection each).
    pub fn on_primary(&self, runners: u32) -> u32 {
        self.read + self.write + self.listener + runners
    }
}

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
///
/// ```no_run
/// use eventcore::{CommandExecutor, ProjectionRunner};
/// use eventcore_postgres::{PostgresConfig, PostgresEventStore};
///
/// # async fn demo(projection: impl eventcore::Projection) -> Result<(), Box<dyn std::error::Error>> {
/// let config = PostgresConfig::from_env()?.schema("bank")?;
/// let store = PostgresEventStore::new(config).await?;
/// store.initialize().await?; // creates or upgrades the tables; safe from every process
///
/// // Commands, and a projection with its checkpoint and lease in the same schema.
/// let executor = CommandExecutor::new(store.clone());
/// let runner = ProjectionRunner::new(store.clone(), projection, store.checkpoints())
///     .with_leadership(store.leadership(std::time::Duration::from_secs(1)))
///     .start();
/// # let _ = (executor, runner);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    /// Bookkeeping on the primary (stream rows, idempotency keys,
    /// checkpoints, leases), at the server's default isolation.
    pool: PgPool,
    /// Where this handle reads events: `pool`, or a replica's pool for a
    /// handle from [`replica`](Self::replica).
    pub(crate) events: PgPool,
    /// The pool label of `events` in the connection metrics.
    pub(crate) events_label: &'static str,
    /// Appends run in explicit SERIALIZABLE transactions (on the caller's
    /// pool, or through a transaction pooler), not as one statement on
    /// SERIALIZABLE-default writer connections.
    writes_in_transactions: bool,
    /// Appends take their connections from the read pool (a store made
    /// from the caller's pool).
    appends_share_pool: bool,
    /// Event reads and appends go through a transaction pooler: each call
    /// in a transaction of its own, with unnamed statements.
    pub(crate) pooled: bool,
    /// Appends: the same server, with connections that default to
    /// `SERIALIZABLE`, so an append is one autocommit statement.
    writer: PgPool,
    shared: Arc<Shared>,
    /// What every read brings old events through; none by default.
    upcasters: Upcasters,
}

#[derive(Debug)]
struct Shared {
    schema: SchemaName,
    /// One pool per configured read replica.
    replicas: Vec<PgPool>,
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
    import_queries: ImportQueries,
    /// How an append's transaction begins.
    begin_write: String,
    /// How a read's transaction begins through a transaction pooler.
    begin_read: String,
}

/// Settings of a store beyond its pool.
struct Settings {
    schema: SchemaName,
    poll_interval: Duration,
    in_flight_wait: Duration,
    key_retention: Duration,
    upcasters: Upcasters,
    /// Set per transaction when statements go through a transaction pooler.
    statement_timeout: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            schema: SchemaName::default(),
            poll_interval: crate::config::DEFAULT_POLL_INTERVAL,
            in_flight_wait: crate::config::DEFAULT_IN_FLIGHT_WAIT,
            key_retention: eventcore::DEFAULT_IDEMPOTENCY_RETENTION,
            upcasters: Upcasters::none(),
            statement_timeout: None,
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
/// A transaction's BEGIN with the session settings a pooler cannot keep
/// (the statement timeout, JIT off) set for the transaction.
fn pooled_begin(begin: &str, statement_timeout: Option<Duration>) -> String {
    let timeout = statement_timeout.map_or_else(String::new, |t| {
        format!("; SET LOCAL statement_timeout = {}", t.as_millis())
    });
    format!("{begin}; SET LOCAL jit = off{timeout}")
}

/// How appends begin their transactions (a no-op change of level on the
/// writer's SERIALIZABLE-default connections, needed on a user's pool).
const BEGIN_SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
/// Whether every transaction below `$1` has ended.
const WATERMARK_PASSED: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8";
/// How often keyed appends purge expired idempotency keys, at most.
const KEY_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// The longest pause between two looks at the watermark.
const MAX_IN_FLIGHT_PAUSE: Duration = Duration::from_millis(20);

/// The store could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be reached or refused the session (the URL
    /// is not repeated: it may hold a password).
    #[error("could not connect to PostgreSQL at {endpoint}: {diagnosis}")]
    Connect {
        /// `host:port` (or the socket directory) connected to.
        endpoint: String,
        /// What was found: refused, no answer, or the server's own refusal.
        diagnosis: String,
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
        // Sessions: the main URL, or the session URL behind a transaction pooler.
        let (pool_options, connect_options) = config.session_pool_options()?;
        let connect_options = store_session(connect_options);
        let pooled = config.behind_transaction_pooler();
        let (writer, pooled_events) = if pooled {
            let (options, connect) = config.pooled_pool_options()?;
            let writer = options
                .clone()
                .max_connections(config.writer_limit())
                .connect_lazy_with(connect.clone());
            (writer, Some(options.connect_lazy_with(connect)))
        } else {
            let writer = pool_options
                .clone()
                .max_connections(config.writer_limit())
                .connect_lazy_with(serializable(connect_options.clone()));
            (writer, None)
        };
        let endpoint = format!(
            "{}:{}",
            connect_options.get_host(),
            connect_options.get_port()
        );
        let pool = match pool_options.connect_with(connect_options.clone()).await {
            Ok(pool) => pool,
            Err(source) => {
                let diagnosis = match &source {
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                        error::diagnose_unreachable(&connect_options).await
                    }
                    sqlx::Error::Database(db) => format!("the server refused: {}", db.message()),
                    _ => "the connection could not be set up".to_owned(),
                };
                return Err(ConnectError::Connect {
                    endpoint,
                    diagnosis,
                    source,
                });
            }
        };
        let replicas = config
            .replica_pool_options()?
            .into_iter()
            .map(|(options, connect)| options.connect_lazy_with(store_session(connect)))
            .collect();
        let mut store = Self::build(
            pool,
            writer,
            replicas,
            Settings {
                schema: config.schema_name().clone(),
                poll_interval: config.subscription_poll_interval(),
                in_flight_wait: config.read_in_flight_wait(),
                key_retention: config.key_retention(),
                upcasters: config.configured_upcasters(),
                statement_timeout: config.statement_timeout_setting(),
            },
        );
        if let Some(events) = pooled_events {
            store.events = events;
            store.pooled = true;
            store.writes_in_transactions = true;
        }
        Ok(store)
    }

    /// Uses an existing pool, with EventCore's tables in schema `public`.
    ///
    /// The store opens no pool of its own: appends run on `pool` too, each
    /// in an explicit `SERIALIZABLE` transaction (BEGIN, the append, COMMIT:
    /// three round trips where a store from [`new`](Self::new) needs one,
    /// since its writer connections default to `SERIALIZABLE`). Beyond
    /// `pool`'s own limit it opens only the listener and the lease
    /// connections (see the crate docs, "Connections").
    pub fn from_pool(pool: PgPool) -> Self {
        Self::from_pool_with_schema(pool, SchemaName::default())
    }

    /// Uses an existing pool, with EventCore's tables in `schema`; see
    /// [`from_pool`](Self::from_pool).
    pub fn from_pool_with_schema(pool: PgPool, schema: SchemaName) -> Self {
        let mut store = Self::build(
            pool.clone(),
            pool,
            Vec::new(),
            Settings {
                schema,
                ..Settings::default()
            },
        );
        store.writes_in_transactions = true;
        store.appends_share_pool = true;
        store
    }

    /// The most connections this store (with its clones) opens: its
    /// pools' limits and the listener. Each projection runner using
    /// [`leadership`](Self::leadership) adds one (see the crate docs,
    /// "Connections").
    pub fn connection_limit(&self) -> ConnectionLimit {
        let limit = |pool: &PgPool| pool.options().get_max_connections();
        ConnectionLimit {
            read: limit(&self.pool),
            write: if self.writes_in_transactions {
                0
            } else {
                limit(&self.writer)
            },
            listener: 1,
            replicas: self.shared.replicas.iter().map(limit).collect(),
        }
    }

    fn build(pool: PgPool, writer: PgPool, replicas: Vec<PgPool>, settings: Settings) -> Self {
        let channel = settings.schema.channel();
        let listener = Arc::new(ListenerHub::new(
            pool.connect_options().as_ref().clone(),
            channel.clone(),
        ));
        Self {
            events: pool.clone(),
            events_label: "read",
            writes_in_transactions: false,
            pooled: false,
            appends_share_pool: false,
            pool,
            writer,
            shared: Arc::new(Shared {
                begin_write: pooled_begin(BEGIN_SERIALIZABLE, settings.statement_timeout),
                begin_read: pooled_begin("BEGIN", settings.statement_timeout),
                replicas,
                channel,
                listener,
                queries: Queries::new(&settings.schema),
                import_queries: ImportQueries::new(&settings.schema.quoted()),
                schema: settings.schema,
                poll_interval: settings.poll_interval,
                in_flight_wait: settings.in_flight_wait,
                key_retention: settings.key_retention,
                last_key_purge: std::sync::Mutex::new(None),
            }),
            upcasters: settings.upcasters,
        }
    }

    /// Reads stored events through `upcasters`, as
    /// [`PostgresConfig::upcasters`] does: for stores made
    /// [`from_pool`](Self::from_pool). The upcasters belong to this handle
    /// and the clones made from it afterwards.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// A handle on the same database that reads events as stored (no
    /// upcasters): for tools and tests that need the stored shapes.
    #[must_use]
    pub fn without_upcasters(&self) -> Self {
        self.clone().with_upcasters(Upcasters::none())
    }

    /// Creates or upgrades EventCore's tables. Idempotent, and safe to call
    /// from many processes at once (they take turns on an advisory lock).
    ///
    /// # Errors
    /// [`InitializeError`] with the failing step and its cause.
    pub async fn initialize(&self) -> Result<(), InitializeError> {
        schema::initialize(&self.pool, &self.shared.schema).await
    }

    /// The schema's applied migration and the ones
    /// [`initialize`](Self::initialize) would apply, without applying any:
    /// what `eventcore migrate --dry-run` shows.
    ///
    /// # Errors
    /// [`InitializeError::Database`] if the database cannot be asked.
    pub async fn schema_status(&self) -> Result<crate::SchemaStatus, InitializeError> {
        schema::status(&self.pool, &self.shared.schema).await
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
        let mut connection = self.events_call().await?;
        let count: i64 = sqlx::query_scalar(&self.shared.queries.delivery_lag)
            .persistent(self.persistent())
            .fetch_one(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        connection.done().await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The span of one store call: OpenTelemetry's database fields, no
    /// statement text (it holds no values, but says nothing the operation
    /// name does not), no parameters.
    fn span(&self, operation: &'static str) -> tracing::Span {
        tracing::debug_span!(
            "eventcore_postgres.call",
            otel.name = %format_args!("{operation} {}", self.shared.schema),
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = operation,
            db.namespace = %self.shared.schema,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    }

    /// A connection to read events on (see [`CallConnection`]).
    pub(crate) async fn events_call(&self) -> Result<CallConnection, StoreError> {
        let connection = telemetry::connection(&self.events, self.events_label).await?;
        if !self.pooled {
            return Ok(CallConnection::Direct(connection));
        }
        let transaction =
            sqlx::Transaction::begin(connection, Some(self.shared.begin_read.clone().into()))
                .await
                .map_err(error::to_store_error)?;
        Ok(CallConnection::Pooled(transaction))
    }

    /// Whether statements may be prepared once per connection: not through
    /// a transaction pooler, where the next transaction may be on another
    /// server connection.
    pub(crate) fn persistent(&self) -> bool {
        !self.pooled
    }

    /// One page of the global order as stored (no upcasting).
    async fn read_stored(&self, query: ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let types: Option<Vec<&str>> = query
            .event_types
            .as_ref()
            .map(|types| types.iter().map(AsRef::as_ref).collect());
        let mut connection = self.events_call().await?;
        let rows = sqlx::query(&self.shared.queries.read_all)
            .persistent(self.persistent())
            .bind(query.after.transaction().to_string())
            .bind(i64::try_from(query.after.sequence()).unwrap_or(i64::MAX))
            .bind(types)
            .bind(i64::try_from(query.limit.get()).unwrap_or(i64::MAX))
            .fetch_all(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        connection.done().await?;
        readable_prefix(&rows)
    }

    /// One page of one stream as stored (no upcasting).
    async fn read_stream_stored(&self, query: StreamQuery) -> Result<StreamPage, StoreError> {
        let (statement, from) = match query.direction {
            Direction::Forwards => (
                &self.shared.queries.read_stream_forwards,
                query.from.map_or(1, |v| v.value()),
            ),
            Direction::Backwards => (
                &self.shared.queries.read_stream_backwards,
                query.from.map_or(u64::MAX, |v| v.value()),
            ),
        };
        let types: Option<Vec<&str>> = query
            .event_types
            .as_ref()
            .map(|types| types.iter().map(AsRef::as_ref).collect());
        let mut connection = self.events_call().await?;
        let rows = sqlx::query(statement)
            .persistent(self.persistent())
            .bind(query.stream_id.as_ref())
            .bind(i64::try_from(from).unwrap_or(i64::MAX))
            .bind(types)
            .bind(i64::try_from(query.limit.get()).unwrap_or(i64::MAX))
            .fetch_all(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        connection.done().await?;
        let (events, version) = stream_page_rows(&rows)?;
        Ok(query.page(events, version))
    }

    async fn try_append(&self, request: &AppendRequest) -> Result<AppendResult, Failure> {
        let params = AppendParams::new(request);
        self.create_new_streams(request)
            .await
            .map_err(Failure::Other)?;
        // Acquired first, so that a pool timeout is `Unavailable`: nothing was sent.
        let mut connection = telemetry::connection(&self.writer, "write")
            .await
            .map_err(Failure::Other)?;
        if let Some(key) = request.idempotency_key() {
            let result = self
                .append_with_key(&mut connection, &params, request, key)
                .await;
            // Released first: on a store made from the caller's pool the
            // purge needs a connection of that same pool.
            drop(connection);
            if result.as_ref().is_ok_and(|r| !r.replayed) {
                self.purge_keys_now_and_then().await;
            }
            return result;
        }
        if self.writes_in_transactions {
            let mut tx = connection
                .begin_with(self.shared.begin_write.clone())
                .await
                .map_err(error::classify)?;
            let rows = self
                .append_query(&params)
                .fetch_all(&mut *tx)
                .await
                .map_err(error::classify)?;
            // A conflict rolls back as the transaction drops.
            let result = append_outcome(&rows, request).map_err(Failure::Other)?;
            tx.commit().await.map_err(error::commit_failure)?;
            return Ok(result);
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
            .persistent(self.persistent())
            .bind(&params.streams)
            .bind(&params.expected)
            .bind(&params.event_stream)
            .bind(&params.ids)
            .bind(&params.types)
            .bind(&params.payloads)
            .bind(&params.metadata)
            .bind(&self.shared.channel)
            .bind(params.lock_timeout_ms)
            .bind(&params.schema_versions)
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
        if let Some(recorded) = self
            .recorded_holding(connection, key, purpose)
            .await
            .map_err(Failure::Other)?
        {
            return Ok(recorded);
        }
        let mut tx = (*connection)
            .begin_with(self.shared.begin_write.clone())
            .await
            .map_err(error::classify)?;
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
                return match self
                    .recorded_holding(connection, key, purpose)
                    .await
                    .map_err(Failure::Other)?
                {
                    Some(recorded) => Ok(recorded),
                    None => Err(Failure::Other(conflict)),
                };
            }
            Err(other) => return Err(Failure::Other(other)),
        };
        let recorded = sqlx::query(&self.shared.queries.record_key)
            .persistent(self.persistent())
            .bind(key.as_ref())
            .bind(Json(&result))
            .bind(purpose.map(KeyPurpose::as_str))
            .execute(&mut *tx)
            .await;
        match recorded {
            Ok(_) => {}
            Err(e) if error::is_duplicate_key(&e) => {
                drop(tx);
                return match self
                    .recorded_holding(connection, key, purpose)
                    .await
                    .map_err(Failure::Other)?
                {
                    Some(recorded) => Ok(recorded),
                    None => Err(Failure::Other(error::to_store_error(e))),
                };
            }
            Err(e) => return Err(error::classify(e)),
        }
        tx.commit().await.map_err(error::commit_failure)?;
        Ok(result)
    }

    /// The result recorded under `key` for `purpose`, marked as a replay.
    async fn recorded(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let mut connection = telemetry::connection(&self.pool, "read").await?;
        self.recorded_on(&mut connection, key, purpose).await
    }

    /// [`recorded`](Self::recorded) for an append holding `connection`:
    /// on the read pool, at its default isolation (a SERIALIZABLE lookup
    /// would add predicate locks that fail concurrent keyed appends), but
    /// on `connection` itself when appends share the read pool (waiting
    /// for a second connection of that pool could wait forever).
    async fn recorded_holding(
        &self,
        connection: &mut PgConnection,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        if self.appends_share_pool {
            self.recorded_on(connection, key, purpose).await
        } else {
            self.recorded(key, purpose).await
        }
    }

    /// The recorded result, read on `connection`.
    async fn recorded_on(
        &self,
        connection: &mut PgConnection,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let stored: Option<(Json<AppendResult>, Option<String>)> =
            sqlx::query_as(&self.shared.queries.find_key)
                .persistent(self.persistent())
                .bind(key.as_ref())
                .fetch_optional(&mut *connection)
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
            .execute(&mut *telemetry::connection(&self.pool, "read").await?)
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
        let mut connection = self.events_call().await?;
        let (oldest, next): (String, String) = sqlx::query_as(SNAPSHOT_BOUNDS)
            .persistent(self.persistent())
            .fetch_one(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        connection.done().await?;
        if oldest == next {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.shared.in_flight_wait;
        let mut pause = Duration::from_millis(1);
        loop {
            let mut connection = self.events_call().await?;
            let passed: bool = sqlx::query_scalar(WATERMARK_PASSED)
                .persistent(self.persistent())
                .bind(&next)
                .fetch_one(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
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
            .execute(&mut *telemetry::connection(&self.pool, "read").await?)
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
            .fetch_all(&mut *telemetry::connection(&self.pool, "read").await?)
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
    schema_versions: Vec<i32>,
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
            schema_versions: Vec::with_capacity(events),
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
            params
                .schema_versions
                .push(i32::try_from(event.schema_version()).unwrap_or(i32::MAX));
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
            commit_token: None,
        })
    } else {
        Err(StoreError::Conflict { conflicts })
    }
}

impl EventStore for PostgresEventStore {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        let span = self.span("read_streams");
        traced(span, async move {
            let names: Vec<&str> = stream_ids.iter().map(AsRef::as_ref).collect();
            let mut connection = self.events_call().await?;
            let rows = sqlx::query(&self.shared.queries.read_streams)
                .persistent(self.persistent())
                .bind(&names)
                .fetch_all(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
            let mut versions: BTreeMap<StreamId, StreamVersion> = stream_ids
                .iter()
                .map(|id| (id.clone(), StreamVersion::INITIAL))
                .collect();
            let events = rows
                .iter()
                .map(recorded_event)
                .collect::<Result<Vec<_>, _>>()?;
            let events = self.upcasters.upcast_all(events)?;
            // All of a stream's events are read, so its version is its highest one.
            for event in &events {
                if let Some(version) = versions.get_mut(&event.stream_id) {
                    *version = (*version).max(event.version);
                }
            }
            Ok(StreamsRead { events, versions })
        })
        .await
    }

    async fn read_streams_after(
        &self,
        after: &BTreeMap<StreamId, StreamVersion>,
    ) -> Result<StreamsRead, StoreError> {
        let span = self.span("read_streams_after");
        traced(span, async move {
            let names: Vec<&str> = after.keys().map(AsRef::as_ref).collect();
            let known: Vec<i64> = after
                .values()
                .map(|v| i64::try_from(v.value()).unwrap_or(i64::MAX))
                .collect();
            let mut connection = self.events_call().await?;
            let rows = sqlx::query(&self.shared.queries.read_after)
                .persistent(self.persistent())
                .bind(&names)
                .bind(&known)
                .fetch_all(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
            let mut read = StreamsRead::default();
            for row in &rows {
                add_stream_row(&mut read, row)?;
            }
            read.events = self.upcasters.upcast_all(read.events)?;
            Ok(read)
        })
        .await
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        let span = self.span("load_snapshot");
        traced(span, async move {
            let mut connection = self.events_call().await?;
            let row = sqlx::query(&self.shared.queries.load_snapshot)
                .persistent(self.persistent())
                .bind(key.as_str())
                .fetch_optional(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let get = |e: sqlx::Error| error::to_store_error(e);
            let state_version: i64 = row.try_get("state_version").map_err(get)?;
            let Json(versions): Json<BTreeMap<String, i64>> =
                row.try_get("versions").map_err(get)?;
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
        })
        .await
    }

    async fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
        state_version: u32,
        streams: &[StreamId],
    ) -> Result<(Option<Snapshot>, StreamsRead), StoreError> {
        let span = self.span("read_from_snapshot");
        traced(span, async move {
            let names: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
            let mut connection = self.events_call().await?;
            let rows = sqlx::query(&self.shared.queries.read_from_snapshot)
                .persistent(self.persistent())
                .bind(key.as_str())
                .bind(i64::from(state_version))
                .bind(&names)
                .fetch_all(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
            let get = |e: sqlx::Error| error::to_store_error(e);
            let mut snapshot = None;
            let mut read = StreamsRead::default();
            for row in &rows {
                let part: i32 = row.try_get("part").map_err(get)?;
                if part == 0 {
                    let stored: String = row.try_get("payload").map_err(get)?;
                    let stored: BTreeMap<String, i64> =
                        serde_json::from_str(&stored).map_err(|e| {
                            corrupt(format!("snapshot versions of {}: {e}", key.as_str()))
                        })?;
                    let Json(state): Json<serde_json::Value> =
                        row.try_get("metadata").map_err(get)?;
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
            read.events = self.upcasters.upcast_all(read.events)?;
            Ok((snapshot, read))
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let span = self.span("save_snapshot");
        traced(span, async move {
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
                .execute(&mut *telemetry::connection(&self.pool, "read").await?)
                .await
                .map_err(error::to_store_error)?;
            Ok(())
        })
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let span = self.span("append");
        traced(span, async move {
            self.upcasters.check_append(&request)?;
            match self.try_append(&request).await {
                Ok(mut result) => {
                    // With replicas, a token a replica reader can wait for;
                    // the append stands even if asking for it fails.
                    if !self.shared.replicas.is_empty() {
                        result.commit_token = self.wal_position().await.ok().map(|p| p.to_string());
                    }
                    Ok(result)
                }
                Err(Failure::Other(error)) => Err(error),
                Err(Failure::Contention(cause)) => {
                    Err(self.explain_contention(&request, cause).await)
                }
            }
        })
        .await
    }

    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let span = self.span("read_all");
        traced(span, async move {
            self.await_in_flight().await?;
            self.upcasters
                .read_page(query, |stored| self.read_stored(stored))
                .await
        })
        .await
    }

    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError> {
        let span = self.span("read_stream");
        traced(span, async move {
            self.upcasters
                .read_stream_page(query, |stored| self.read_stream_stored(stored))
                .await
        })
        .await
    }

    async fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let span = self.span("idempotent_result");
        traced(span, async move { self.recorded(key, purpose).await }).await
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        let notifier = PgNotifier::new(self.shared.listener.clone(), self.shared.poll_interval);
        Subscription::follow(self.clone(), query, notifier)
    }
}
