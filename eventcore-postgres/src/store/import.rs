//! Archived events written as they are: the store side of `eventcore import`.

use std::collections::{BTreeMap, HashMap};

use eventcore::{
    EventId, EventMetadata, StoreError, StreamId, StreamVersion,
    archive::{ArchivedEvent, BatchError, ImportProblem, ImportTarget, ImportedBatch},
};
use sqlx::{Connection, Row, SqlStr, types::Json};
use tracing::Instrument;
use uuid::Uuid;

use super::PostgresEventStore;
use crate::{
    error,
    queries::schema_sql,
    rows::{stream_id, to_version},
    telemetry,
};

/// Statements of an import batch, with the schema filled in.
#[derive(Debug)]
pub(super) struct ImportQueries {
    lock_streams: SqlStr,
    stored_ids: SqlStr,
    insert: SqlStr,
    set_versions: SqlStr,
}

impl ImportQueries {
    pub(super) fn new(s: &str) -> Self {
        Self {
            // In stream-id order, as appends lock them: no deadlock with one.
            lock_streams: schema_sql!(
                "SELECT stream_id, version FROM {s}.eventcore_streams \
                 WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE"
            ),
            stored_ids: schema_sql!(
                "SELECT event_id, stream_id, stream_version FROM {s}.eventcore_events \
                 WHERE event_id = ANY($1)"
            ),
            // Identity values follow the ORDER BY: the archive's order.
            insert: schema_sql!(
                "INSERT INTO {s}.eventcore_events \
                     (event_id, stream_id, stream_version, event_type, event_version, \
                      recorded_at, payload, metadata) \
                 SELECT t.id, t.stream, t.version, t.etype, t.schema_version, t.recorded, \
                        t.payload::jsonb, t.metadata \
                 FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::int[], \
                             $6::timestamptz[], $7::text[], $8::jsonb[]) \
                      WITH ORDINALITY AS t(id, stream, version, etype, schema_version, \
                                           recorded, payload, metadata, ord) \
                 ORDER BY t.ord"
            ),
            set_versions: schema_sql!(
                "UPDATE {s}.eventcore_streams st SET version = v.version \
                 FROM unnest($1::text[], $2::bigint[]) AS v(stream_id, version) \
                 WHERE st.stream_id = v.stream_id"
            ),
        }
    }
}

/// The new events of a batch, as parallel arrays.
#[derive(Default)]
struct Rows<'a> {
    ids: Vec<Uuid>,
    streams: Vec<&'a str>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    schema_versions: Vec<i32>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
    payloads: Vec<&'a str>,
    metadata: Vec<Json<&'a EventMetadata>>,
}

impl<'a> Rows<'a> {
    fn push(&mut self, event: &'a ArchivedEvent) {
        self.ids.push(*event.id.as_uuid());
        self.streams.push(event.stream_id.as_ref());
        self.versions
            .push(i64::try_from(event.version.value()).unwrap_or(i64::MAX));
        self.types.push(event.event_type.as_ref());
        self.schema_versions
            .push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
        self.recorded_at.push(event.recorded_at);
        self.payloads.push(event.payload.as_json());
        self.metadata.push(Json(&event.metadata));
    }
}

impl ImportTarget for PostgresEventStore {
    /// One transaction per batch: the batch's streams are locked (in
    /// stream-id order, as appends lock them), events already stored by id
    /// are skipped, the rest inserted in the batch's order with their ids,
    /// versions and recorded times; the streams' versions follow, and
    /// subscriptions are notified at commit.
    async fn import_batch(&self, events: &[ArchivedEvent]) -> Result<ImportedBatch, BatchError> {
        let span = self.span("import_batch");
        self.import_events(events).instrument(span).await
    }
}

impl PostgresEventStore {
    async fn import_events(&self, events: &[ArchivedEvent]) -> Result<ImportedBatch, BatchError> {
        let queries = &self.shared.import_queries;
        let store_error = |e: sqlx::Error| BatchError::Store(error::to_store_error(e));
        let mut names: Vec<&str> = events.iter().map(|e| e.stream_id.as_ref()).collect();
        names.sort_unstable();
        names.dedup();
        let ids: Vec<Uuid> = events.iter().map(|e| *e.id.as_uuid()).collect();

        let mut connection = telemetry::connection(&self.pool, "write").await?;
        let mut tx = connection.begin().await.map_err(store_error)?;
        sqlx::query(self.shared.queries.create_streams.clone())
            .bind(&names)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
        let mut current: HashMap<StreamId, StreamVersion> = HashMap::new();
        for row in sqlx::query(queries.lock_streams.clone())
            .bind(&names)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?
        {
            let stream: String = row.try_get("stream_id").map_err(store_error)?;
            let version: i64 = row.try_get("version").map_err(store_error)?;
            current.insert(stream_id(&stream)?, to_version(version));
        }
        let mut stored: HashMap<EventId, (StreamId, StreamVersion)> = HashMap::new();
        for row in sqlx::query(queries.stored_ids.clone())
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?
        {
            let id: Uuid = row.try_get("event_id").map_err(store_error)?;
            let stream: String = row.try_get("stream_id").map_err(store_error)?;
            let version: i64 = row.try_get("stream_version").map_err(store_error)?;
            stored.insert(
                EventId::from_uuid(id),
                (stream_id(&stream)?, to_version(version)),
            );
        }

        // Check everything before writing anything.
        let mut rows = Rows::default();
        let mut after: BTreeMap<&str, StreamVersion> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for (index, event) in events.iter().enumerate() {
            if let Some((stream, version)) = stored.get(&event.id) {
                if *stream == event.stream_id && *version == event.version {
                    continue;
                }
                let problem = ImportProblem::IdElsewhere {
                    stream_id: stream.clone(),
                    version: *version,
                };
                return Err(BatchError::Refused { index, problem });
            }
            let version = after
                .get(event.stream_id.as_ref())
                .or_else(|| current.get(&event.stream_id))
                .copied()
                .unwrap_or_default();
            if event.version.value() != version.value() + 1 || !seen.insert(event.id) {
                let problem = ImportProblem::VersionGap { current: version };
                return Err(BatchError::Refused { index, problem });
            }
            after.insert(event.stream_id.as_ref(), event.version);
            rows.push(event);
        }
        let written = rows.ids.len() as u64;
        if written > 0 {
            sqlx::query(queries.insert.clone())
                .bind(&rows.ids)
                .bind(&rows.streams)
                .bind(&rows.versions)
                .bind(&rows.types)
                .bind(&rows.schema_versions)
                .bind(&rows.recorded_at)
                .bind(&rows.payloads)
                .bind(&rows.metadata)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            let (streams, versions): (Vec<&str>, Vec<i64>) = after
                .iter()
                .map(|(stream, v)| (*stream, i64::try_from(v.value()).unwrap_or(i64::MAX)))
                .unzip();
            sqlx::query(queries.set_versions.clone())
                .bind(&streams)
                .bind(&versions)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(&self.shared.channel)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
        }
        tx.commit()
            .await
            .map_err(|e| match error::to_store_error(e) {
                // The batch may or may not be written; importing again skips
                // whatever was.
                StoreError::Unavailable { .. } | StoreError::UnknownOutcome { .. } => {
                    BatchError::Store(StoreError::UnknownOutcome {
                        source: "the connection was lost while an import batch committed; \
                             import again: events already written are skipped"
                            .into(),
                    })
                }
                other => BatchError::Store(other),
            })?;
        Ok(ImportedBatch {
            written,
            skipped: events.len() as u64 - written,
        })
    }
}
