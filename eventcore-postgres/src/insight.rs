//! What an operator asks of the store: how much is in it, what happened
//! lately, what holds delivery back. Every query's cost is bounded on a
//! large table, and each method says how.

use std::time::Duration;

use chrono::NaiveDate;
use eventcore::{EventType, GlobalPosition, StoreError, StreamId, StreamVersion};
use sqlx::Row;

use crate::{PostgresEventStore, TransactionHolder, error, queries::schema_sql, telemetry};

/// Counts up to this many rows are exact; larger tables are estimated
/// from PostgreSQL's statistics (`pg_class.reltuples`), so that asking
/// never scans a table of billions of rows.
pub const EXACT_COUNT_LIMIT: u64 = 1_000_000;

/// How many of the latest events the activity queries look at by default.
pub const DEFAULT_RECENT_EVENTS: u64 = 100_000;

/// A number of rows, exact or estimated.
///
/// See [`Totals`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// The number.
    pub value: u64,
    /// Whether it was counted (`true`) or estimated from statistics,
    /// because there are more than [`EXACT_COUNT_LIMIT`].
    pub exact: bool,
}

/// Events and streams in the store.
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let totals = store.totals().await?;
/// let about = if totals.events.exact { "" } else { "about " };
/// println!("{about}{} events in {} streams", totals.events.value, totals.streams.value);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Stored events.
    pub events: Count,
    /// Streams with at least one event.
    pub streams: Count,
}

/// Events recorded on one day (UTC).
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// for day in store.events_per_day(7).await? {
///     println!("{}: {} events", day.day, day.events);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    /// The day.
    pub day: NaiveDate,
    /// Events recorded that day.
    pub events: u64,
}

/// A stream and how many of the recent events it received.
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// // The ten busiest accounts among the last 10,000 events.
/// for stream in store.most_active_streams(10_000, 10, Some("account-")).await? {
///     println!("{}: {} recent events, at version {}", stream.stream_id, stream.events, stream.version);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamActivity {
    /// The stream.
    pub stream_id: StreamId,
    /// Its events among the recent ones looked at.
    pub events: u64,
    /// Its version (number of events) now.
    pub version: StreamVersion,
}

/// An event type and how many of the recent events have it.
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// for count in store.events_per_type(10_000).await? {
///     println!("{}: {}", count.event_type, count.events);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeCount {
    /// The stored type name.
    pub event_type: EventType,
    /// Events of that type among the recent ones looked at.
    pub events: u64,
}

/// Where delivery of the global order stands.
///
/// ```no_run
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let watermark = store.watermark().await?;
/// if let Some(holder) = watermark.holder {
///     println!(
///         "{} events held back by pid {} ({}, open {:?}): end that transaction",
///         watermark.held_back.value, holder.pid, holder.application_name, holder.age
///     );
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The oldest transaction id still running on the server: events of
    /// this transaction and later ones are not delivered yet.
    pub oldest_running_transaction: u64,
    /// Committed events held back behind it, counted up to
    /// [`EXACT_COUNT_LIMIT`].
    pub held_back: Count,
    /// The transaction that holds delivery back, when events are held back.
    pub holder: Option<TransactionHolder>,
}

/// The oldest transaction with an id, server-wide: the one whose id is the
/// delivery watermark. Prepared transactions (`pg_prepared_xacts`) hold it
/// back as well and are not listed.
pub(crate) const OLDEST_TRANSACTION: &str = "SELECT pid, \
        extract(epoch FROM clock_timestamp() - xact_start)::float8 AS age_seconds, \
        coalesce(state, '') AS state, coalesce(application_name, '') AS application_name, \
        coalesce(datname, '') AS database \
    FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
    ORDER BY age(backend_xid) DESC LIMIT 1";

/// The oldest transaction running on the server, if any.
pub(crate) async fn oldest_transaction(
    pool: &sqlx::PgPool,
) -> Result<Option<TransactionHolder>, StoreError> {
    let row: Option<(i32, Option<f64>, String, String, String)> =
        sqlx::query_as(OLDEST_TRANSACTION)
            .fetch_optional(&mut *telemetry::connection(pool, "read").await?)
            .await
            .map_err(error::to_store_error)?;
    Ok(row.map(
        |(pid, age, state, application_name, database)| TransactionHolder {
            pid,
            age: Duration::try_from_secs_f64(age.unwrap_or(0.0).max(0.0)).unwrap_or_default(),
            state,
            application_name,
            database,
        },
    ))
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn bounded(limit: u64) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl PostgresEventStore {
    /// Events and streams in total. Exact up to [`EXACT_COUNT_LIMIT`]
    /// rows each (the count stops there), estimated from the table
    /// statistics beyond.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let s = self.schema().quoted();
        let events = self
            .bounded_count(
                &format!("SELECT 1 FROM {s}.eventcore_events"),
                &format!("{s}.eventcore_events"),
            )
            .await?;
        // Stream rows are created at version 0 before their first append,
        // and stay if that append fails: only written streams count.
        let streams = self
            .bounded_count(
                &format!("SELECT 1 FROM {s}.eventcore_streams WHERE version > 0"),
                &format!("{s}.eventcore_streams"),
            )
            .await?;
        Ok(Totals { events, streams })
    }

    /// Rows of `rows` (a query), counted up to the limit, else the table's estimate.
    async fn bounded_count(&self, rows: &str, table: &str) -> Result<Count, StoreError> {
        let mut connection = telemetry::connection(self.pool(), "read").await?;
        let counted: i64 = sqlx::query_scalar(schema_sql!(
            "SELECT count(*) FROM ({rows} LIMIT $1) AS capped"
        ))
        .bind(bounded(EXACT_COUNT_LIMIT) + 1)
        .fetch_one(&mut *connection)
        .await
        .map_err(error::to_store_error)?;
        let counted = to_u64(counted);
        if counted <= EXACT_COUNT_LIMIT {
            return Ok(Count {
                value: counted,
                exact: true,
            });
        }
        let estimate: Option<f32> =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = $1::text::regclass")
                .bind(table)
                .fetch_optional(&mut *connection)
                .await
                .map_err(error::to_store_error)?;
        // Statistics may lag or be missing (-1 before the first ANALYZE):
        // never report fewer than were counted.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let estimate = estimate.map_or(0, |e| e.max(0.0) as u64);
        Ok(Count {
            value: estimate.max(counted),
            exact: false,
        })
    }

    /// Events recorded per day (UTC) over the last `days` days, today
    /// included, oldest first; days without events are left out. Reads
    /// only the events of those days, found through a BRIN index on the
    /// recording time (migration 12): the cost grows with the events in
    /// the window, not with the table.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn events_per_day(&self, days: u32) -> Result<Vec<DayCount>, StoreError> {
        let s = self.schema().quoted();
        let rows = sqlx::query(schema_sql!(
            "SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, count(*) AS events \
             FROM {s}.eventcore_events \
             WHERE recorded_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                                   - make_interval(days => $1) \
             GROUP BY 1 ORDER BY 1"
        ))
        .bind(i32::try_from(days.saturating_sub(1)).unwrap_or(i32::MAX))
        .fetch_all(&mut *telemetry::connection(self.pool(), "read").await?)
        .await
        .map_err(error::to_store_error)?;
        rows.iter()
            .map(|row| {
                Ok(DayCount {
                    day: row.try_get("day").map_err(error::to_store_error)?,
                    events: to_u64(row.try_get("events").map_err(error::to_store_error)?),
                })
            })
            .collect()
    }

    /// The streams that received most of the latest `recent` events
    /// (whose ids start with `prefix`, when given), most active first, at
    /// most `limit`. Reads those events backwards through the global-order
    /// index: the cost is bounded by `recent`
    /// ([`DEFAULT_RECENT_EVENTS`] is a good start).
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn most_active_streams(
        &self,
        recent: u64,
        limit: u32,
        prefix: Option<&str>,
    ) -> Result<Vec<StreamActivity>, StoreError> {
        let s = self.schema().quoted();
        let rows = sqlx::query(schema_sql!(
            "SELECT r.stream_id, count(*) AS events, max(st.version) AS version \
             FROM (SELECT stream_id FROM {s}.eventcore_events \
                   ORDER BY transaction_id DESC, sequence DESC LIMIT $1) AS r \
             JOIN {s}.eventcore_streams st ON st.stream_id = r.stream_id \
             WHERE $3::text IS NULL OR starts_with(r.stream_id, $3) \
             GROUP BY r.stream_id ORDER BY events DESC, r.stream_id LIMIT $2"
        ))
        .bind(bounded(recent))
        .bind(i64::from(limit))
        .bind(prefix)
        .fetch_all(&mut *telemetry::connection(self.pool(), "read").await?)
        .await
        .map_err(error::to_store_error)?;
        rows.iter()
            .map(|row| {
                let get = error::to_store_error;
                let stream: String = row.try_get("stream_id").map_err(get)?;
                Ok(StreamActivity {
                    stream_id: crate::rows::stream_id(&stream)?,
                    events: to_u64(row.try_get("events").map_err(get)?),
                    version: StreamVersion::new(to_u64(row.try_get("version").map_err(get)?)),
                })
            })
            .collect()
    }

    /// Event types among the latest `recent` events, most frequent first.
    /// Bounded by `recent`, like [`most_active_streams`](Self::most_active_streams).
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn events_per_type(&self, recent: u64) -> Result<Vec<TypeCount>, StoreError> {
        let s = self.schema().quoted();
        let rows = sqlx::query(schema_sql!(
            "SELECT event_type, count(*) AS events \
             FROM (SELECT event_type FROM {s}.eventcore_events \
                   ORDER BY transaction_id DESC, sequence DESC LIMIT $1) AS r \
             GROUP BY event_type ORDER BY events DESC, event_type"
        ))
        .bind(bounded(recent))
        .fetch_all(&mut *telemetry::connection(self.pool(), "read").await?)
        .await
        .map_err(error::to_store_error)?;
        rows.iter()
            .map(|row| {
                let get = error::to_store_error;
                let name: String = row.try_get("event_type").map_err(get)?;
                Ok(TypeCount {
                    event_type: EventType::try_new(name.as_str())
                        .map_err(|e| crate::rows::corrupt(format!("event type {name:?}: {e}")))?,
                    events: to_u64(row.try_get("events").map_err(get)?),
                })
            })
            .collect()
    }

    /// The position of the newest event readers can be given now (below
    /// the delivery watermark), `None` in an empty store: where a reader
    /// that wants only what comes next starts. One step backwards through
    /// the global-order index.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn head(&self) -> Result<Option<GlobalPosition>, StoreError> {
        let s = self.schema().quoted();
        let mut connection = self.events_call().await?;
        let row: Option<(String, i64)> = sqlx::query_as(schema_sql!(
            "SELECT transaction_id::text, sequence FROM {s}.eventcore_events \
             WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY transaction_id DESC, sequence DESC LIMIT 1"
        ))
        .persistent(self.persistent())
        .fetch_optional(&mut *connection)
        .await
        .map_err(error::to_store_error)?;
        connection.done().await?;
        row.map(|(transaction, sequence)| crate::rows::position(&transaction, sequence))
            .transpose()
    }

    /// The delivery watermark, the committed events held back behind it
    /// (counted up to [`EXACT_COUNT_LIMIT`], through the global-order
    /// index), and the transaction holding it back (pid, age, database;
    /// never its query text).
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn watermark(&self) -> Result<Watermark, StoreError> {
        let s = self.schema().quoted();
        let row = sqlx::query(schema_sql!(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS xmin, \
                    (SELECT count(*) FROM (SELECT 1 FROM {s}.eventcore_events \
                     WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()) \
                     LIMIT $1) AS capped) AS held_back"
        ))
        .bind(bounded(EXACT_COUNT_LIMIT) + 1)
        .fetch_one(&mut *telemetry::connection(self.pool(), "read").await?)
        .await
        .map_err(error::to_store_error)?;
        let get = error::to_store_error;
        let xmin: String = row.try_get("xmin").map_err(get)?;
        let held_back = to_u64(row.try_get("held_back").map_err(get)?);
        telemetry::held_back(held_back);
        let holder = if held_back > 0 {
            oldest_transaction(self.pool()).await?
        } else {
            None
        };
        Ok(Watermark {
            oldest_running_transaction: xmin
                .parse()
                .map_err(|_| crate::rows::corrupt(format!("transaction id {xmin:?}")))?,
            held_back: Count {
                value: held_back.min(EXACT_COUNT_LIMIT),
                exact: held_back <= EXACT_COUNT_LIMIT,
            },
            holder,
        })
    }
}
