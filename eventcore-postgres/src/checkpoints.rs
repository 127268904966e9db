//! Projection checkpoints in PostgreSQL, and the operator's report on them.

use chrono::{DateTime, Utc};
use eventcore::{
    Checkpoint, CheckpointStore, EventId, FencingToken, GlobalPosition, PendingRequest,
    ProjectionRequest, ProjectionState, StoreError,
};
use sqlx::{PgConnection, PgPool, Row, SqlStr, postgres::PgRow};
use uuid::Uuid;

use crate::{SchemaName, error, queries::schema_sql, telemetry};

// rustdoc calls this explicit target redundant, yet renders the link
// unresolved in the summary on the crate's page without it (see .ci/run).
#[allow(rustdoc::redundant_explicit_links)]
/// A [`CheckpointStore`](eventcore::CheckpointStore) in the `eventcore_checkpoints` table of a store's
/// schema; get one from [`PostgresEventStore::checkpoints`](crate::PostgresEventStore::checkpoints).
///
/// Saves are fenced in the statement that writes them (a save offering an
/// older leadership generation than the stored `fence` changes nothing).
/// An operator steers a running projection from any session, and its
/// leader carries the request out within its `poll_requests_every` (1 s by
/// default), then sets `request` back to NULL:
///
/// ```sql
/// UPDATE eventcore_checkpoints SET request = 'pause', requested_at = now()
///  WHERE projection = 'bank-balances';   -- or 'resume', 'rebuild'
/// ```
///
/// or in code, and watch every projection's lag:
///
/// ```no_run
/// use eventcore::{CheckpointStore, ProjectionRequest};
///
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), eventcore::StoreError> {
/// let checkpoints = store.checkpoints();
/// checkpoints.request("bank-balances", ProjectionRequest::Rebuild).await?;
/// for report in checkpoints.report().await? {
///     println!("{} {} lag {} held back {}", report.checkpoint.name, report.checkpoint.state,
///              report.lag, report.held_back);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresCheckpointStore {
    pool: PgPool,
    queries: std::sync::Arc<Queries>,
}

#[derive(Debug)]
struct Queries {
    load: SqlStr,
    save: SqlStr,
    claim: SqlStr,
    list: SqlStr,
    report: SqlStr,
    request: SqlStr,
    pending_request: SqlStr,
    clear_request: SqlStr,
}

/// The most events [`PostgresCheckpointStore::report`] counts for one
/// figure: beyond it, the figure says "at least this many", so the report
/// costs the same whatever the backlog (an index-only range of at most this
/// many entries per projection).
pub const REPORT_COUNT_LIMIT: u64 = 100_000;

/// One projection as an operator sees it: from
/// [`PostgresCheckpointStore::report`].
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// for report in store.checkpoints().report().await? {
///     println!(
///         "{}: {}, {} behind{}",
///         report.checkpoint.name,
///         report.checkpoint.state,
///         report.lag,
///         report.checkpoint.last_error.map(|e| format!(", last error: {e}")).unwrap_or_default(),
///     );
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionReport {
    /// The projection's saved checkpoint.
    pub checkpoint: Checkpoint,
    /// Events deliverable now after its position (of every type), counted
    /// up to [`REPORT_COUNT_LIMIT`].
    pub lag: u64,
    /// Events committed but not deliverable yet because an older
    /// transaction is still running (the same for every projection of the
    /// schema), counted up to [`REPORT_COUNT_LIMIT`]. They add to the lag as
    /// soon as that transaction ends.
    pub held_back: u64,
    /// Whether `lag` or `held_back` reached [`REPORT_COUNT_LIMIT`] and is a lower bound.
    pub counts_capped: bool,
    /// The oldest transaction still running on the server, which holds
    /// delivery back, when `held_back` is not zero.
    pub holder: Option<TransactionHolder>,
}

/// A running transaction that holds the delivery watermark back: from
/// `pg_stat_activity`, without its query text (which may hold data).
///
/// See [`Watermark`](crate::Watermark) for an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionHolder {
    /// The backend's process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// How long its transaction has been open.
    pub age: std::time::Duration,
    /// The backend's state (`active`, `idle in transaction`, ...).
    pub state: String,
    /// The client's `application_name`, often empty.
    pub application_name: String,
    /// The database it is connected to (any database of the server holds delivery back).
    pub database: String,
}

impl PostgresCheckpointStore {
    pub(crate) fn new(pool: PgPool, schema: &SchemaName) -> Self {
        let s = schema.quoted();
        let columns = "projection, transaction_id::text AS transaction_text, sequence, \
                       events_processed, status, last_error, updated_at, fence, last_event_id, \
                       last_processed_at";
        Self {
            pool,
            queries: std::sync::Arc::new(Queries {
                load: schema_sql!(
                    "SELECT {columns} FROM {s}.eventcore_checkpoints WHERE projection = $1"
                ),
                // Fenced in the statement that writes: a save offering an
                // older fence than the stored one changes nothing and returns
                // no row. An unfenced save keeps the stored fence.
                save: schema_sql!(
                    "INSERT INTO {s}.eventcore_checkpoints AS c \
                     (projection, transaction_id, sequence, events_processed, status, last_error, \
                      updated_at, fence, last_event_id, last_processed_at) \
                     VALUES ($1, $2::text::xid8, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (projection) DO UPDATE SET \
                     transaction_id = excluded.transaction_id, sequence = excluded.sequence, \
                     events_processed = excluded.events_processed, status = excluded.status, \
                     last_error = excluded.last_error, updated_at = excluded.updated_at, \
                     fence = coalesce(excluded.fence, c.fence), \
                     last_event_id = excluded.last_event_id, \
                     last_processed_at = excluded.last_processed_at \
                     WHERE c.fence IS NULL OR excluded.fence IS NULL OR c.fence <= excluded.fence \
                     RETURNING 1"
                ),
                // A new leader's takeover: raises the fence (creating an
                // initial checkpoint when none is saved) and returns the
                // checkpoint, unless a newer fence is stored (no row).
                claim: schema_sql!(
                    "INSERT INTO {s}.eventcore_checkpoints AS c \
                     (projection, transaction_id, sequence, events_processed, status, updated_at, fence) \
                     VALUES ($1, '0'::xid8, 0, 0, 'running', clock_timestamp(), $2) \
                     ON CONFLICT (projection) DO UPDATE SET fence = excluded.fence \
                     WHERE c.fence IS NULL OR c.fence <= excluded.fence \
                     RETURNING {columns}"
                ),
                request: schema_sql!(
                    "INSERT INTO {s}.eventcore_checkpoints AS c \
                     (projection, transaction_id, sequence, events_processed, status, updated_at, \
                      request, requested_at) \
                     VALUES ($1, '0'::xid8, 0, 0, 'running', clock_timestamp(), $2, clock_timestamp()) \
                     ON CONFLICT (projection) DO UPDATE \
                     SET request = excluded.request, requested_at = excluded.requested_at"
                ),
                pending_request: schema_sql!(
                    "SELECT request, requested_at FROM {s}.eventcore_checkpoints \
                     WHERE projection = $1 AND request IS NOT NULL"
                ),
                clear_request: schema_sql!(
                    "UPDATE {s}.eventcore_checkpoints SET request = NULL, requested_at = NULL \
                     WHERE projection = $1 AND request = $2 AND requested_at = $3"
                ),
                list: schema_sql!(
                    "SELECT {columns} FROM {s}.eventcore_checkpoints ORDER BY projection"
                ),
                // The monitoring query: per projection, how many deliverable
                // events lie beyond it, and how many are held back, each
                // counted up to a limit so the cost does not grow with the backlog.
                report: schema_sql!(
                    "WITH horizon AS MATERIALIZED ( \
                         SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin \
                     ), held AS MATERIALIZED ( \
                         SELECT count(*) AS held_back FROM ( \
                             SELECT 1 FROM {s}.eventcore_events e, horizon h \
                             WHERE e.transaction_id >= h.xmin LIMIT $1) x \
                     ) \
                     SELECT c.projection, c.transaction_id::text AS transaction_text, c.sequence, \
                            c.events_processed, c.status, c.last_error, c.updated_at, c.fence, \
                            c.last_event_id, c.last_processed_at, held.held_back, \
                            (SELECT count(*) FROM ( \
                                SELECT 1 FROM {s}.eventcore_events e, horizon h \
                                WHERE (e.transaction_id, e.sequence) > (c.transaction_id, c.sequence) \
                                  AND e.transaction_id < h.xmin LIMIT $1) x) AS lag \
                     FROM {s}.eventcore_checkpoints c, held ORDER BY c.projection"
                ),
            }),
        }
    }

    /// Every projection's checkpoint with its lag and the events held back
    /// by an old transaction (with that transaction's pid and age): what an
    /// operator's dashboard shows, in two queries of bounded cost
    /// ([`REPORT_COUNT_LIMIT`]). The lag counts events of every type, so a
    /// projection that filters types can show more lag than it will apply.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn report(&self) -> Result<Vec<ProjectionReport>, StoreError> {
        let limit = i64::try_from(REPORT_COUNT_LIMIT).unwrap_or(i64::MAX);
        let rows = sqlx::query(self.queries.report.clone())
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        let held_back = match rows.first() {
            Some(row) => count(row, "held_back")?,
            None => return Ok(Vec::new()),
        };
        crate::telemetry::held_back(held_back);
        let holder = if held_back > 0 {
            crate::insight::oldest_transaction(&self.pool).await?
        } else {
            None
        };
        rows.iter()
            .map(|row| {
                let lag = count(row, "lag")?;
                let checkpoint = checkpoint_from(row)?;
                eventcore::telemetry::ProjectionMeter::new(&checkpoint.name).lag(lag);
                Ok(ProjectionReport {
                    checkpoint,
                    lag,
                    held_back,
                    counts_capped: lag >= REPORT_COUNT_LIMIT || held_back >= REPORT_COUNT_LIMIT,
                    holder: holder.clone(),
                })
            })
            .collect()
    }
}

/// A count column, as a `u64`.
fn count(row: &PgRow, column: &str) -> Result<u64, StoreError> {
    let n: i64 = row.try_get(column).map_err(error::to_store_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn checkpoint_from(row: &PgRow) -> Result<Checkpoint, StoreError> {
    let get = error::to_store_error;
    let name: String = row.try_get("projection").map_err(get)?;
    let transaction: String = row.try_get("transaction_text").map_err(get)?;
    let sequence: i64 = row.try_get("sequence").map_err(get)?;
    let processed: i64 = row.try_get("events_processed").map_err(get)?;
    let status: String = row.try_get("status").map_err(get)?;
    let last_error: Option<String> = row.try_get("last_error").map_err(get)?;
    let updated_at: DateTime<Utc> = row.try_get("updated_at").map_err(get)?;
    let fence: Option<i64> = row.try_get("fence").map_err(get)?;
    let last_event_id: Option<Uuid> = row.try_get("last_event_id").map_err(get)?;
    let last_processed_at: Option<DateTime<Utc>> = row.try_get("last_processed_at").map_err(get)?;
    let corrupt = |what: String| StoreError::Backend {
        reason: format!("checkpoint of projection {name:?} is not valid: {what}"),
        source: None,
    };
    let transaction: u64 = transaction
        .parse()
        .map_err(|_| corrupt(format!("transaction id {transaction:?}")))?;
    let state =
        ProjectionState::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
    Ok(Checkpoint {
        position: GlobalPosition::new(transaction, u64::try_from(sequence).unwrap_or(0)),
        events_processed: u64::try_from(processed).unwrap_or(0),
        state,
        last_error,
        last_event_id: last_event_id.map(EventId::from_uuid),
        last_processed_at,
        fence: fence.map(|f| FencingToken::new(u64::try_from(f).unwrap_or(0))),
        updated_at,
        name,
    })
}

impl PostgresCheckpointStore {
    /// Saves `checkpoint` on `connection`, inside whatever transaction it
    /// has open: a projection that keeps its read model in this database
    /// calls this from [`Projection::save_checkpoint`](eventcore::Projection::save_checkpoint)
    /// to commit its changes and the checkpoint together (exactly-once effect).
    ///
    /// # Errors
    /// [`StoreError`] with the database's error.
    pub async fn save_in(
        &self,
        connection: &mut PgConnection,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let saved = self
            .save_query(checkpoint)
            .fetch_optional(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        match saved {
            Some(_) => Ok(()),
            None => Err(self.fenced(connection, checkpoint).await),
        }
    }

    fn save_query<'q>(
        &'q self,
        checkpoint: &'q Checkpoint,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(self.queries.save.clone())
            .bind(&checkpoint.name)
            .bind(checkpoint.position.transaction().to_string())
            .bind(i64::try_from(checkpoint.position.sequence()).unwrap_or(i64::MAX))
            .bind(i64::try_from(checkpoint.events_processed).unwrap_or(i64::MAX))
            .bind(checkpoint.state.as_str())
            .bind(checkpoint.last_error.as_deref())
            .bind(checkpoint.updated_at)
            .bind(checkpoint.fence.map(fence_value))
            .bind(checkpoint.last_event_id.map(|id| *id.as_uuid()))
            .bind(checkpoint.last_processed_at)
    }

    /// The refusal of a fenced save, naming the fence that refused it.
    async fn fenced(&self, connection: &mut PgConnection, checkpoint: &Checkpoint) -> StoreError {
        let stored = match sqlx::query(self.queries.load.clone())
            .bind(&checkpoint.name)
            .fetch_optional(connection)
            .await
        {
            Ok(Some(row)) => checkpoint_from(&row).ok().and_then(|c| c.fence),
            _ => None,
        };
        StoreError::Fenced {
            name: checkpoint.name.clone(),
            stored: stored.unwrap_or(FencingToken::new(0)),
            offered: checkpoint.fence.unwrap_or(FencingToken::new(0)),
        }
    }
}

/// A fence as stored: generations stay far below `i64::MAX`.
fn fence_value(fence: FencingToken) -> i64 {
    i64::try_from(fence.value()).unwrap_or(i64::MAX)
}

impl CheckpointStore for PostgresCheckpointStore {
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query(self.queries.load.clone())
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        row.as_ref().map(checkpoint_from).transpose()
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let mut connection = telemetry::boxed_acquire(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        self.save_in(&mut connection, checkpoint).await
    }

    async fn claim(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> Result<Checkpoint, StoreError> {
        let Some(fence) = fence else {
            return Ok(self
                .load(name)
                .await?
                .unwrap_or_else(|| Checkpoint::initial(name)));
        };
        let row = sqlx::query(self.queries.claim.clone())
            .bind(name)
            .bind(fence_value(fence))
            .fetch_optional(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        match row {
            Some(row) => checkpoint_from(&row),
            None => {
                let mut offered = Checkpoint::initial(name);
                offered.fence = Some(fence);
                let mut connection = telemetry::boxed_acquire(&self.pool)
                    .await
                    .map_err(error::to_store_error)?;
                Err(self.fenced(&mut connection, &offered).await)
            }
        }
    }

    async fn list(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(self.queries.list.clone())
            .fetch_all(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        rows.iter().map(checkpoint_from).collect()
    }

    async fn request(&self, name: &str, request: ProjectionRequest) -> Result<(), StoreError> {
        sqlx::query(self.queries.request.clone())
            .bind(name)
            .bind(request.as_str())
            .execute(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        Ok(())
    }

    async fn pending_request(&self, name: &str) -> Result<Option<PendingRequest>, StoreError> {
        let row: Option<(String, DateTime<Utc>)> =
            sqlx::query_as(self.queries.pending_request.clone())
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(error::to_store_error)?;
        let Some((request, requested_at)) = row else {
            return Ok(None);
        };
        let request = ProjectionRequest::parse(&request).ok_or_else(|| StoreError::Backend {
            reason: format!("projection {name:?} has an unknown request {request:?}"),
            source: None,
        })?;
        Ok(Some(PendingRequest {
            request,
            requested_at,
        }))
    }

    async fn clear_request(&self, name: &str, pending: &PendingRequest) -> Result<(), StoreError> {
        sqlx::query(self.queries.clear_request.clone())
            .bind(name)
            .bind(pending.request.as_str())
            .bind(pending.requested_at)
            .execute(&self.pool)
            .await
            .map_err(error::to_store_error)?;
        Ok(())
    }
}
