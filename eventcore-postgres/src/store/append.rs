//! The write path: appends (with and without idempotency keys), the
//! stream rows they need, and what a failed append says.

use std::{sync::Arc, time::Duration};

use eventcore::{
    AppendRequest, AppendResult, EventId, EventMetadata, ExpectedVersion, IdempotencyKey,
    KeyPurpose, StoreError, StreamId, StreamVersion, StreamVersions, VersionConflict,
};
use sqlx::{Connection, PgConnection, Row, postgres::PgRow, types::Json};
use uuid::Uuid;

use super::PostgresEventStore;
use crate::{
    error::{self, Failure},
    queries::statement,
    rows::{corrupt, stream_id, to_version, written_event},
    telemetry,
};
use sqlx::SqlStr;

/// A transaction's BEGIN with the session settings a pooler cannot keep
/// (the statement timeout, JIT off) set for the transaction.
pub(super) fn pooled_begin(begin: &str, statement_timeout: Option<Duration>) -> SqlStr {
    let timeout = statement_timeout.map_or_else(String::new, |t| {
        format!("; SET LOCAL statement_timeout = {}", t.as_millis())
    });
    statement(format!("{begin}; SET LOCAL jit = off{timeout}"))
}

/// How appends begin their transactions (a no-op change of level on the
/// writer's SERIALIZABLE-default connections, needed on a user's pool).
pub(super) const BEGIN_SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// How often keyed appends purge expired idempotency keys, at most.
pub(super) const KEY_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The arguments of `eventcore_append` (and `eventcore_append_batch`), as
/// parallel arrays.
pub(super) struct AppendParams<'a> {
    pub(super) streams: Vec<&'a str>,
    pub(super) expected: Vec<Option<i64>>,
    /// For each stream, which append of a batch it belongs to (1-based).
    pub(super) stream_append: Vec<i32>,
    /// For each event, its stream's index in `streams` (1-based).
    pub(super) event_stream: Vec<i32>,
    pub(super) ids: Vec<Uuid>,
    pub(super) types: Vec<&'a str>,
    /// Payloads as JSON text, cast to `jsonb` by the statement.
    pub(super) payloads: Vec<&'a str>,
    pub(super) metadata: Vec<Json<&'a EventMetadata>>,
    pub(super) schema_versions: Vec<i32>,
    /// The tightest bound on lock waits of the appends, in milliseconds.
    pub(super) lock_timeout_ms: Option<i64>,
}

/// A count or index as a PostgreSQL `int`.
fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl<'a> AppendParams<'a> {
    pub(super) fn new(request: &'a AppendRequest) -> Self {
        Self::batch(std::iter::once(request))
    }

    /// The appends of a batch, one after the other: their streams in one
    /// list, their events in one list, each append's in its global order.
    pub(super) fn batch(requests: impl Iterator<Item = &'a AppendRequest> + Clone) -> Self {
        let streams: usize = requests.clone().map(|r| r.streams().len()).sum();
        let events: usize = requests.clone().map(AppendRequest::event_count).sum();
        let mut params = Self {
            streams: Vec::with_capacity(streams),
            expected: Vec::with_capacity(streams),
            stream_append: Vec::with_capacity(streams),
            event_stream: Vec::with_capacity(events),
            ids: Vec::with_capacity(events),
            types: Vec::with_capacity(events),
            payloads: Vec::with_capacity(events),
            metadata: Vec::with_capacity(events),
            schema_versions: Vec::with_capacity(events),
            lock_timeout_ms: None,
        };
        for (append, request) in requests.enumerate() {
            if let Some(wait) = request.max_lock_wait() {
                let ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                params.lock_timeout_ms = Some(params.lock_timeout_ms.map_or(ms, |m| m.min(ms)));
            }
            let first = params.streams.len();
            for stream in request.streams() {
                params.streams.push(stream.stream_id.as_ref());
                params.stream_append.push(int(append + 1));
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
                params.event_stream.push(int(first + index + 1));
                params.ids.push(*EventId::new_v7().as_uuid());
                params.types.push(event.event_type().as_ref());
                params.payloads.push(event.payload().as_json());
                params.metadata.push(Json(event.metadata()));
                params
                    .schema_versions
                    .push(i32::try_from(event.schema_version()).unwrap_or(i32::MAX));
            }
        }
        params
    }
}

/// Reads `eventcore_append`'s rows: conflicts, or the written events and every listed stream's version.
pub(super) fn append_outcome<'r>(
    rows: impl IntoIterator<Item = &'r PgRow>,
    request: &AppendRequest,
) -> Result<AppendResult, StoreError> {
    let mut conflicts = Vec::new();
    let mut events = Vec::new();
    let mut versions = Vec::new();
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
                    // Gathered, then sorted once: rows need not come in stream order.
                    versions.push((listed.stream_id.clone(), to_version(version)));
                }
            }
            other => return Err(corrupt(format!("append returned a row of kind {other:?}"))),
        }
    }
    if conflicts.is_empty() {
        Ok(AppendResult {
            events,
            versions: versions.into_iter().collect(),
            replayed: false,
            commit_token: None,
        })
    } else {
        Err(StoreError::Conflict { conflicts })
    }
}

impl PostgresEventStore {
    pub(super) async fn try_append(
        &self,
        request: &Arc<AppendRequest>,
    ) -> Result<AppendResult, Failure> {
        if let Some(committer) = &self.group {
            return self.group_append(committer, request.clone()).await;
        }
        self.create_new_streams(request)
            .await
            .map_err(Failure::Other)?;
        self.write_one(request, true).await
    }

    /// An append in a transaction of its own, its new stream rows already
    /// created; `lookup`: whether a keyed append first looks for its key's
    /// recorded result (not when its caller just did).
    pub(super) async fn write_one(
        &self,
        request: &AppendRequest,
        lookup: bool,
    ) -> Result<AppendResult, Failure> {
        let params = AppendParams::new(request);
        // Acquired first, so that a pool timeout is `Unavailable`: nothing was sent.
        let mut connection = telemetry::connection(&self.writer, "write")
            .await
            .map_err(Failure::Other)?;
        if let Some(key) = request.idempotency_key() {
            let result = self
                .append_with_key(&mut connection, &params, request, key, lookup)
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

    pub(super) fn append_query<'q>(
        &'q self,
        params: &'q AppendParams<'q>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(self.shared.queries.append.clone())
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
    pub(super) async fn append_with_key(
        &self,
        connection: &mut PgConnection,
        params: &AppendParams<'_>,
        request: &AppendRequest,
        key: &IdempotencyKey,
        lookup: bool,
    ) -> Result<AppendResult, Failure> {
        let purpose = request.key_purpose();
        if lookup
            && let Some(recorded) = self
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
                return self.recorded_or(connection, key, purpose, conflict).await;
            }
            Err(other) => return Err(Failure::Other(other)),
        };
        let recorded = sqlx::query(self.shared.queries.record_key.clone())
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
                let refused = error::to_store_error(e);
                return self.recorded_or(connection, key, purpose, refused).await;
            }
            Err(e) => return Err(error::classify(e)),
        }
        tx.commit().await.map_err(error::commit_failure)?;
        Ok(result)
    }

    /// The result recorded under `key` for `purpose`, marked as a replay.
    pub(super) async fn recorded(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let mut connection = telemetry::connection(&self.pool, "read").await?;
        self.recorded_on(&mut connection, key, purpose).await
    }

    /// The result recorded under `key` (written by a concurrent append
    /// with the same key), else `otherwise`: what an append that failed
    /// because of that concurrent append answers.
    async fn recorded_or(
        &self,
        connection: &mut PgConnection,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
        otherwise: StoreError,
    ) -> Result<AppendResult, Failure> {
        match self
            .recorded_holding(connection, key, purpose)
            .await
            .map_err(Failure::Other)?
        {
            Some(recorded) => Ok(recorded),
            None => Err(Failure::Other(otherwise)),
        }
    }

    /// [`recorded`](Self::recorded) for an append holding `connection`:
    /// on the read pool, at its default isolation (a SERIALIZABLE lookup
    /// would add predicate locks that fail concurrent keyed appends), but
    /// on `connection` itself when appends share the read pool (waiting
    /// for a second connection of that pool could wait forever).
    pub(super) async fn recorded_holding(
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
    pub(super) async fn recorded_on(
        &self,
        connection: &mut PgConnection,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let stored: Option<(Json<AppendResult>, Option<String>)> =
            sqlx::query_as(self.shared.queries.find_key.clone())
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
    /// ([`PostgresConfig::idempotency_retention`](crate::PostgresConfig::idempotency_retention), 24 hours by default), and
    /// only those: a retry whose lookup comes within the period finds its
    /// key. Keyed appends call it by themselves at most once a minute per
    /// store; call it from a maintenance job where keys are rare.
    ///
    /// # Errors
    /// [`StoreError`] if the database cannot be asked.
    pub async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        let deleted = sqlx::query(self.shared.queries.purge_keys.clone())
            .bind(self.shared.key_retention.as_secs_f64())
            .execute(&mut *telemetry::connection(&self.pool, "read").await?)
            .await
            .map_err(error::to_store_error)?;
        Ok(deleted.rows_affected())
    }

    /// Purges expired keys if the last purge from this store was a minute ago or more.
    pub(super) async fn purge_keys_now_and_then(&self) {
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
        if due && let Err(error) = self.purge_idempotency_keys().await {
            tracing::warn!(%error, "expired idempotency keys not purged");
        }
    }

    /// Creates, outside the serializable transaction, the rows of streams the
    /// append may create (expected at version 0, or at any version), so that
    /// inside it every version check finds a row and locks only that row.
    pub(super) async fn create_new_streams(
        &self,
        request: &AppendRequest,
    ) -> Result<(), StoreError> {
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
        sqlx::query(self.shared.queries.create_streams.clone())
            .bind(&maybe_new)
            .execute(&mut *telemetry::connection(&self.pool, "read").await?)
            .await
            .map_err(error::to_store_error)?;
        Ok(())
    }

    /// After contention: which expectations no longer hold? None means a pure
    /// serialization failure, retryable as such.
    pub(super) async fn explain_contention(
        &self,
        request: &AppendRequest,
        cause: sqlx::Error,
    ) -> StoreError {
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
                    let actual = current.get(&s.stream_id).unwrap_or_default();
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

    pub(super) async fn current_versions(
        &self,
        ids: &[StreamId],
    ) -> Result<StreamVersions, StoreError> {
        let names: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let rows = sqlx::query(self.shared.queries.versions.clone())
            .bind(&names)
            .fetch_all(&mut *telemetry::connection(&self.pool, "read").await?)
            .await
            .map_err(error::to_store_error)?;
        let mut versions: StreamVersions = ids
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
