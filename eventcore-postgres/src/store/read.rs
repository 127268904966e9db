//! The read path's plumbing: the connection a call reads on (directly or
//! through a transaction pooler), pages of stored rows, and the wait for
//! transactions in flight.

use std::time::Duration;

use eventcore::{Direction, ReadAllQuery, RecordedEvent, StoreError, StreamPage, StreamQuery};
use sqlx::PgConnection;

use super::PostgresEventStore;
use crate::{
    error,
    rows::{readable_prefix, stream_page_rows},
    telemetry,
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

/// The oldest transaction still running and the next transaction id to be assigned.
pub(super) const SNAPSHOT_BOUNDS: &str = "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text \
                               FROM pg_current_snapshot() AS s";

/// Whether every transaction below `$1` has ended.
pub(super) const WATERMARK_PASSED: &str =
    "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8";

/// The longest pause between two looks at the watermark.
pub(super) const MAX_IN_FLIGHT_PAUSE: Duration = Duration::from_millis(20);

impl PostgresEventStore {
    /// Events committed or in flight that readers of the global order cannot
    /// be given yet because an older transaction is still running.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn delivery_lag(&self) -> Result<u64, StoreError> {
        let mut connection = self.events_call().await?;
        let count: i64 = sqlx::query_scalar(self.shared.queries.delivery_lag.clone())
            .persistent(self.persistent())
            .fetch_one(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        connection.done().await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// A connection to read events on (see [`CallConnection`]).
    pub(crate) async fn events_call(&self) -> Result<CallConnection, StoreError> {
        let connection = telemetry::connection(&self.events, self.events_label).await?;
        if !self.pooled {
            return Ok(CallConnection::Direct(connection));
        }
        let transaction =
            sqlx::Transaction::begin(connection, Some(self.shared.begin_read.clone()))
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
    pub(super) async fn read_stored(
        &self,
        query: ReadAllQuery,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let types: Option<Vec<&str>> = query
            .event_types
            .as_ref()
            .map(|types| types.iter().map(AsRef::as_ref).collect());
        let mut connection = self.events_call().await?;
        let rows = sqlx::query(self.shared.queries.read_all.clone())
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
    pub(super) async fn read_stream_stored(
        &self,
        query: StreamQuery,
    ) -> Result<StreamPage, StoreError> {
        let (statement, from) = match query.direction {
            Direction::Forwards => (
                self.shared.queries.read_stream_forwards.clone(),
                query.from.map_or(1, |v| v.value()),
            ),
            Direction::Backwards => (
                self.shared.queries.read_stream_backwards.clone(),
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

    /// Waits, up to the configured time, until every transaction running now
    /// has ended, so the watermark a following read uses lies above all of
    /// them: whatever committed before this call is then delivered.
    pub(super) async fn await_in_flight(&self) -> Result<(), StoreError> {
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
}
