//! The PostgreSQL event store.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use eventcore::{
    AppendRequest, AppendResult, EventStore, IdempotencyKey, KeyPurpose, Payload, ReadAllQuery,
    RecordedEvent, Snapshot, SnapshotKey, StoreError, StreamId, StreamPage, StreamQuery,
    StreamVersion, StreamVersions, StreamsRead, Subscription, Upcasters, telemetry::traced,
};
use sqlx::{PgPool, Row, postgres::PgConnectOptions, types::Json};

mod append;
mod group_commit;
mod import;
mod read;
mod replica;

use append::{BEGIN_SERIALIZABLE, pooled_begin};
use group_commit::Committer;
pub use group_commit::GroupCommit;
use import::ImportQueries;
pub use replica::{WaitError, WalPosition};

use crate::{
    ConfigError, InitializeError, PostgresCheckpointStore, PostgresConfig, PostgresLeadership,
    SchemaName,
    error::{self, Failure},
    notify::{ListenerHub, PgNotifier},
    queries::Queries,
    rows::{add_stream_row, corrupt, recorded_event, snapshot_versions},
    schema, telemetry,
};

/// The most connections a store opens, from
/// [`PostgresEventStore::connection_limit`].
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let limit = store.connection_limit();
/// // Three application processes, each with two projection runners:
/// let budget = 3 * limit.on_primary(2);
/// println!("max_connections must exceed {budget} (plus superuser_reserved_connections)");
/// # Ok(())
/// # }
/// ```
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

// rustdoc calls this explicit target redundant, yet renders the link
// unresolved in the summary on the crate's page without it (see .ci/run).
#[allow(rustdoc::redundant_explicit_links)]
/// An [`EventStore`](eventcore::EventStore) on PostgreSQL; clones share the pool.
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
    /// The group commit queue, when appends are batched.
    group: Option<Arc<Committer>>,
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
    begin_write: sqlx::SqlStr,
    /// How a read's transaction begins through a transaction pooler.
    begin_read: sqlx::SqlStr,
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

/// The store could not be created.
///
/// ```no_run
/// use eventcore_postgres::{ConnectError, PostgresConfig, PostgresEventStore};
/// # async fn demo() {
/// match PostgresEventStore::new(PostgresConfig::new("postgres://app:secret@db.internal:5432/app")).await {
///     Ok(store) => { let _ = store; }
///     // "could not connect to PostgreSQL at db.internal:5432: connection refused": never the password.
///     Err(ConnectError::Connect { endpoint, diagnosis, .. }) => eprintln!("{endpoint}: {diagnosis}"),
///     Err(error) => eprintln!("{error}"),
/// }
/// # }
/// ```
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
        if let Some(group) = config.group_commit_setting() {
            store = store.with_group_commit(group);
        }
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
            group: None,
        }
    }

    /// Gathers concurrent appends into shared transactions, as
    /// [`PostgresConfig::group_commit`] does: for stores made
    /// [`from_pool`](Self::from_pool). The queue belongs to this handle and
    /// the clones made from it afterwards.
    #[must_use]
    pub fn with_group_commit(mut self, group: GroupCommit) -> Self {
        self.group = Some(Arc::new(Committer::new(group)));
        self
    }

    /// Appends waiting for a batch of the group commit (0 without it): a
    /// queue that stays long means the writer pool or the database is the
    /// limit.
    pub fn appends_queued(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.queued())
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
}

impl EventStore for PostgresEventStore {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        let span = self.span("read_streams");
        traced(span, async move {
            let names: Vec<&str> = stream_ids.iter().map(AsRef::as_ref).collect();
            let mut connection = self.events_call().await?;
            let rows = sqlx::query(self.shared.queries.read_streams.clone())
                .persistent(self.persistent())
                .bind(&names)
                .fetch_all(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
            let mut versions: StreamVersions = stream_ids
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

    async fn read_streams_after(&self, after: &StreamVersions) -> Result<StreamsRead, StoreError> {
        let span = self.span("read_streams_after");
        traced(span, async move {
            let names: Vec<&str> = after.keys().map(AsRef::as_ref).collect();
            let known: Vec<i64> = after
                .values()
                .map(|v| i64::try_from(v.value()).unwrap_or(i64::MAX))
                .collect();
            let mut connection = self.events_call().await?;
            let rows = sqlx::query(self.shared.queries.read_after.clone())
                .persistent(self.persistent())
                .bind(&names)
                .bind(&known)
                .fetch_all(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
            connection.done().await?;
            let mut read = StreamsRead::default();
            let mut versions = Vec::with_capacity(after.len());
            for row in &rows {
                versions.push(add_stream_row(&mut read, row)?);
            }
            read.versions.extend(versions);
            read.events = self.upcasters.upcast_all(read.events)?;
            Ok(read)
        })
        .await
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        let span = self.span("load_snapshot");
        traced(span, async move {
            let mut connection = self.events_call().await?;
            let row = sqlx::query(self.shared.queries.load_snapshot.clone())
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
            let rows = sqlx::query(self.shared.queries.read_from_snapshot.clone())
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
            let mut versions = Vec::new();
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
                versions.push(add_stream_row(&mut read, row)?);
            }
            read.versions.extend(versions);
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
            sqlx::query(self.shared.queries.save_snapshot.clone())
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
            let request = Arc::new(request);
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
