//! The 2-stream transfer written by hand in sqlx: the baseline.
//!
//! The same logical work as [`crate::workload::Transfer`] through the
//! executor, on the same tables and data: read both streams' events and fold
//! them, decide, then `BEGIN ISOLATION LEVEL SERIALIZABLE`, read both
//! versions, bump both, insert both events, `COMMIT`. A serialization
//! failure, a deadlock, a duplicate (stream, version) or a moved version
//! rolls back and starts over at once, as pgbench does, up to
//! [`MAX_TRIES`] times. That is 9 round trips per try.

use std::{sync::Arc, time::Instant};

use eventcore::{Event, EventId, StreamId};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row, SqlSafeStr, SqlStr};
use tokio::sync::Barrier;

use crate::{
    counting::StoreCounts,
    report::RunReport,
    run::{RunSpec, TaskTally},
    workload::{LoadEvent, NextCommand, StreamPool, Transfer, Workload},
};

/// Tries per transfer before the baseline counts it as failed (pgbench's
/// `--max-tries` in the reference measurements).
pub const MAX_TRIES: u32 = 100;

/// Statements one try sends: read, BEGIN, 2 SELECT, 2 UPDATE, 2 INSERT, COMMIT.
pub const ROUND_TRIPS_PER_TRY: u32 = 9;

/// The baseline's SQL for one schema.
#[derive(Debug, Clone)]
struct Sql {
    read: SqlStr,
    version: SqlStr,
    bump: SqlStr,
    insert: SqlStr,
}

/// A statement naming the store's tables: the only text not written here is
/// the schema name, a validated `SchemaName` quoted here.
fn in_schema(sql: String) -> SqlStr {
    AssertSqlSafe(Arc::<str>::from(sql)).into_sql_str()
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            read: in_schema(format!(
                "SELECT stream_id, stream_version, payload FROM {s}.eventcore_events \
                 WHERE stream_id = ANY($1) ORDER BY transaction_id, sequence"
            )),
            version: in_schema(format!(
                "SELECT version FROM {s}.eventcore_streams WHERE stream_id = $1"
            )),
            bump: in_schema(format!(
                "UPDATE {s}.eventcore_streams SET version = $2 WHERE stream_id = $1"
            )),
            insert: in_schema(format!(
                "INSERT INTO {s}.eventcore_events \
                 (event_id, stream_id, stream_version, event_type, payload, metadata) \
                 VALUES ($1, $2, $3, $4, $5, '{{}}')"
            )),
        }
    }
}

/// How one try ended, when it did not commit.
enum TryFailure {
    /// A version moved between the read and the transaction.
    Conflict,
    /// 40001, 40P01 or a duplicate (stream, version).
    Serialization,
    /// Anything else: the transfer fails.
    Other(sqlx::Error),
}

impl From<sqlx::Error> for TryFailure {
    fn from(error: sqlx::Error) -> Self {
        let retryable = error
            .as_database_error()
            .is_some_and(|db| matches!(db.code().as_deref(), Some("40001" | "40P01" | "23505")));
        if retryable {
            Self::Serialization
        } else {
            Self::Other(error)
        }
    }
}

/// Runs the transfer baseline from `spec.tasks` tasks over `pool`'s streams
/// in `schema` (an initialized EventCore schema) on `db`.
pub async fn run_raw_transfers(
    db: PgPool,
    schema: &str,
    pool: Arc<StreamPool>,
    spec: RunSpec,
) -> RunReport {
    let sql = Arc::new(Sql::new(schema));
    let start = Arc::new(Barrier::new(spec.tasks + 1));
    let mut handles = Vec::with_capacity(spec.tasks);
    for task in 0..spec.tasks {
        let (db, sql, pool, start) = (db.clone(), sql.clone(), pool.clone(), start.clone());
        handles.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(spec.seed.wrapping_add(task as u64));
            let mut tally = TaskTally::default();
            let mut counts = StoreCounts::default();
            start.wait().await;
            let deadline = Instant::now() + spec.duration;
            while Instant::now() < deadline {
                let NextCommand::Transfer(transfer) =
                    NextCommand::pick(Workload::Transfer, &pool, &mut rng, None)
                else {
                    continue;
                };
                let began = Instant::now();
                match transfer_with_retries(&db, &sql, &transfer, &mut counts).await {
                    Ok(tries) => {
                        tally.latencies.record(began.elapsed());
                        tally.commands += 1;
                        tally.events += 2;
                        tally.retries += u64::from(tries - 1);
                    }
                    Err(error) => {
                        tally.failed += 1;
                        if tally.failed <= 3 {
                            eprintln!("raw transfer failed: {error}");
                        }
                    }
                }
            }
            (tally, counts)
        }));
    }
    start.wait().await;
    let began = Instant::now();
    let mut tallies = Vec::with_capacity(spec.tasks);
    let mut counts = StoreCounts::default();
    for handle in handles {
        match handle.await {
            Ok((tally, task_counts)) => {
                counts.conflicts += task_counts.conflicts;
                counts.serialization_failures += task_counts.serialization_failures;
                counts.other_errors += task_counts.other_errors;
                tallies.push(tally);
            }
            Err(error) => eprintln!("a raw task died: {error}"),
        }
    }
    let elapsed = began.elapsed();
    let mut report = TaskTally::into_report(tallies, "raw sql", elapsed, counts);
    if report.commands > 0 {
        let tries = report.commands + report.retries;
        report.round_trips =
            Some((tries * u64::from(ROUND_TRIPS_PER_TRY)) as f64 / report.commands as f64);
    }
    report
}

/// One transfer, tried until it commits; returns the tries it took.
async fn transfer_with_retries(
    db: &PgPool,
    sql: &Sql,
    transfer: &Transfer,
    counts: &mut StoreCounts,
) -> Result<u32, String> {
    let mut connection = db.acquire().await.map_err(|e| e.to_string())?;
    for tries in 1..=MAX_TRIES {
        match try_transfer(&mut connection, sql, transfer).await {
            Ok(()) => return Ok(tries),
            Err(failure) => {
                // The transaction may be open; a failed rollback means a dead connection.
                let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                match failure {
                    TryFailure::Conflict => counts.conflicts += 1,
                    TryFailure::Serialization => counts.serialization_failures += 1,
                    TryFailure::Other(error) => {
                        counts.other_errors += 1;
                        return Err(error.to_string());
                    }
                }
            }
        }
    }
    Err(format!("no commit after {MAX_TRIES} tries"))
}

async fn try_transfer(
    connection: &mut PgConnection,
    sql: &Sql,
    transfer: &Transfer,
) -> Result<(), TryFailure> {
    let streams = [transfer.from.as_ref(), transfer.to.as_ref()];
    let rows = sqlx::query(sql.read.clone())
        .bind(&streams[..])
        .fetch_all(&mut *connection)
        .await?;
    let (mut from_version, mut to_version, mut from_balance) = (0_i64, 0_i64, 0_u64);
    for row in &rows {
        let stream: &str = row.try_get(0)?;
        let version: i64 = row.try_get(1)?;
        let payload: serde_json::Value = row.try_get(2)?;
        let event: LoadEvent = serde_json::from_value(payload)
            .map_err(|e| TryFailure::Other(sqlx::Error::Decode(e.into())))?;
        if stream == transfer.from.as_ref() {
            from_version = version;
            from_balance = match event {
                LoadEvent::Received { amount } | LoadEvent::Incremented { by: amount } => {
                    from_balance.wrapping_add(amount)
                }
                LoadEvent::Sent { amount } => from_balance.wrapping_sub(amount),
                LoadEvent::Opened => from_balance,
            };
        } else {
            to_version = version;
        }
    }
    let amount = transfer.amount.min(from_balance.max(1));

    sqlx::query("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *connection)
        .await?;
    for (stream, read) in [(&transfer.from, from_version), (&transfer.to, to_version)] {
        let current: Option<i64> = sqlx::query_scalar(sql.version.clone())
            .bind(stream.as_ref())
            .fetch_optional(&mut *connection)
            .await?;
        if current.unwrap_or(0) != read {
            return Err(TryFailure::Conflict);
        }
    }
    for (stream, read) in [(&transfer.from, from_version), (&transfer.to, to_version)] {
        sqlx::query(sql.bump.clone())
            .bind(stream.as_ref())
            .bind(read + 1)
            .execute(&mut *connection)
            .await?;
    }
    let events = [
        (&transfer.from, from_version, LoadEvent::Sent { amount }),
        (&transfer.to, to_version, LoadEvent::Received { amount }),
    ];
    for (stream, read, event) in events {
        insert_event(connection, sql, stream, read + 1, &event).await?;
    }
    sqlx::query("COMMIT").execute(&mut *connection).await?;
    Ok(())
}

async fn insert_event(
    connection: &mut PgConnection,
    sql: &Sql,
    stream: &StreamId,
    version: i64,
    event: &LoadEvent,
) -> Result<(), TryFailure> {
    let payload = serde_json::to_value(event)
        .map_err(|e| TryFailure::Other(sqlx::Error::Encode(e.into())))?;
    sqlx::query(sql.insert.clone())
        .bind(*EventId::new_v7().as_uuid())
        .bind(stream.as_ref())
        .bind(version)
        .bind(event.event_type())
        .bind(payload)
        .execute(&mut *connection)
        .await?;
    Ok(())
}
