//! Turning the rows the store's statements return into EventCore values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use eventcore::{
    EventId, EventMetadata, EventType, GlobalPosition, Payload, RecordedEvent, StoreError,
    StreamId, StreamVersion, StreamVersions, StreamsRead, WrittenEvent,
};
use sqlx::{Row, postgres::PgRow, types::Json};
use uuid::Uuid;

use crate::error;

pub(crate) fn to_version(version: i64) -> StreamVersion {
    StreamVersion::new(u64::try_from(version).unwrap_or(0))
}

pub(crate) fn position(transaction: &str, sequence: i64) -> Result<GlobalPosition, StoreError> {
    let transaction: u64 = transaction
        .parse()
        .map_err(|_| corrupt(format!("transaction id {transaction:?}")))?;
    Ok(GlobalPosition::new(
        transaction,
        u64::try_from(sequence).unwrap_or(0),
    ))
}

pub(crate) fn corrupt(what: String) -> StoreError {
    StoreError::Backend {
        reason: format!("stored data is not valid EventCore data: {what}"),
        source: None,
    }
}

pub(crate) fn stream_id(raw: &str) -> Result<StreamId, StoreError> {
    StreamId::try_new(raw).map_err(|e| corrupt(format!("stream id {raw:?}: {e}")))
}

pub(crate) fn written_event(row: &PgRow) -> Result<WrittenEvent, StoreError> {
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

/// Adds one row of a read after versions to `read`: unless the stream has
/// nothing new, one of its events. Returns the stream's current version,
/// which the caller gathers for all rows (rows come in global order, not
/// in stream order: one sort at the end, not one insertion per row).
pub(crate) fn add_stream_row(
    read: &mut StreamsRead,
    row: &PgRow,
) -> Result<(StreamId, StreamVersion), StoreError> {
    let get = |e: sqlx::Error| error::to_store_error(e);
    let wanted: String = row.try_get("wanted").map_err(get)?;
    let current: i64 = row.try_get("current_version").map_err(get)?;
    let event_id: Option<Uuid> = row.try_get("event_id").map_err(get)?;
    if event_id.is_some() {
        read.events.push(recorded_event(row)?);
    }
    Ok((stream_id(&wanted)?, to_version(current)))
}

/// A snapshot's stored versions, checked.
pub(crate) fn snapshot_versions(
    stored: BTreeMap<String, i64>,
) -> Result<StreamVersions, StoreError> {
    stored
        .into_iter()
        .map(|(id, v)| Ok((stream_id(&id)?, to_version(v))))
        .collect()
}

/// A stored event, or [`StoreError::Undecodable`] naming its position when
/// the row holds something EventCore cannot read.
pub(crate) fn recorded_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
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
    let schema_version: i32 = row.try_get("event_version").map_err(column)?;
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
        schema_version: u32::try_from(schema_version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| undecodable(format!("schema version {schema_version} of event {id}")))?,
        payload: Payload::from_stored(payload),
        metadata,
    })
}

/// The events of a page of the global order up to the first row that
/// cannot be read; that row's error only when it comes first, so a reader
/// gets every good event before it and then the error at its position.
pub(crate) fn readable_prefix(rows: &[PgRow]) -> Result<Vec<RecordedEvent>, StoreError> {
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

/// The stream's version and the readable events of a page of one stream
/// (up to the first row that cannot be read; its error only when it
/// comes first, as for [`readable_prefix`]).
pub(crate) fn stream_page_rows(
    rows: &[PgRow],
) -> Result<(Vec<RecordedEvent>, StreamVersion), StoreError> {
    let get = |e: sqlx::Error| error::to_store_error(e);
    let mut version = StreamVersion::INITIAL;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let current: i64 = row.try_get("current_version").map_err(get)?;
        version = to_version(current);
        let event_id: Option<Uuid> = row.try_get("event_id").map_err(get)?;
        if event_id.is_none() {
            continue;
        }
        match recorded_event(row) {
            Ok(event) => events.push(event),
            Err(error) if events.is_empty() => return Err(error),
            Err(_) => break,
        }
    }
    Ok((events, version))
}
