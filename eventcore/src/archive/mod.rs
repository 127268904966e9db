//! Moving events between stores: the JSON Lines archive.
//!
//! An archive holds a store's events in global order, one JSON object a
//! line, with every field a copy needs: id, stream, version, type, schema
//! version, recorded time, payload and metadata. It is what
//! [`export`] writes, what [`import`] reads into any store that is an
//! [`ImportTarget`] (both EventCore stores are), and what
//! `InMemoryEventStore::save_jsonl` and `load_jsonl` use, so a prototype's
//! events move from the memory store to PostgreSQL (and back) unchanged.
//!
//! ```text
//! {"id":"0192…","stream_id":"account-1","version":1,"event_type":"MoneyDeposited","schema_version":2,"recorded_at":"2026-12-01T14:08:47.123456Z","payload":{"cents":500},"metadata":{"correlation_id":"0192…"}}
//! ```
//!
//! Positions are not in the archive: they belong to the store that
//! assigned them, and an import assigns its own (in the archive's order).
//! The same events therefore export to the same bytes from every store
//! that holds them: payload keys are written sorted, times in RFC 3339.
//!
//! Events are archived as stored: export through a store without
//! [`Upcasters`](crate::Upcasters), so a copy keeps the shapes and names
//! the events were written with, and readers of the copy upcast them alike.

mod export;
mod import;

use std::io::{self, BufRead, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    EventId, EventMetadata, EventType, Payload, RecordedEvent, StreamId, StreamVersion,
    recorded::check_metadata,
};

pub use export::{ExportError, ExportOptions, ExportSummary, export};
pub use import::{
    BatchError, ImportError, ImportOptions, ImportProblem, ImportSummary, ImportTarget,
    ImportedBatch, import,
};

/// One event of an archive: one line of JSON.
///
/// ```
/// use eventcore::archive::ArchiveReader;
///
/// let line = r#"{"id":"0190b6a0-0000-7000-8000-000000000001","stream_id":"account-1","version":1,"event_type":"Opened","schema_version":1,"payload":{"owner":"ada"},"metadata":{},"recorded_at":"2026-12-01T00:00:00Z"}"#;
/// let events: Vec<_> = ArchiveReader::new(line.as_bytes()).collect::<Result<_, _>>()?;
/// assert_eq!(events[0].stream_id.as_ref(), "account-1");
/// assert_eq!(events[0].version.value(), 1);
/// # Ok::<(), eventcore::archive::ArchiveError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedEvent {
    /// The event's id, kept by an import.
    pub id: EventId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in the stream (from 1, contiguous per stream).
    pub version: StreamVersion,
    /// Its type name as stored.
    pub event_type: EventType,
    /// The schema version of its payload as stored (1 where the source had none).
    #[serde(default = "first_schema_version")]
    pub schema_version: u32,
    /// When the source store wrote it, kept by an import.
    pub recorded_at: DateTime<Utc>,
    /// The payload.
    pub payload: Payload,
    /// The metadata.
    pub metadata: EventMetadata,
}

fn first_schema_version() -> u32 {
    1
}

impl From<&RecordedEvent> for ArchivedEvent {
    fn from(event: &RecordedEvent) -> Self {
        Self {
            id: event.id,
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            recorded_at: event.recorded_at,
            payload: event.payload.clone(),
            metadata: event.metadata.clone(),
        }
    }
}

impl ArchivedEvent {
    /// Writes the event as one line of the archive (with its newline).
    ///
    /// # Errors
    /// What `out` fails with, or serde_json's error as an I/O error.
    pub fn write_line<W: Write>(&self, out: &mut W) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.write_all(b"\n")
    }

    /// What makes the event unstorable, if anything: versions from 1, no
    /// NUL or excess nesting in the metadata (the payload is checked as it
    /// is parsed).
    fn check(&self) -> Result<(), String> {
        if self.version == StreamVersion::INITIAL {
            return Err("version 0: stream versions start at 1".into());
        }
        if self.schema_version == 0 {
            return Err("schema version 0: schema versions start at 1".into());
        }
        check_metadata(&self.metadata, &self.event_type).map_err(|e| e.to_string())
    }
}

/// A line of an archive that is not an archived event, or an archive that
/// cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The archive could not be read.
    #[error("could not read the archive")]
    Io(#[from] io::Error),
    /// A line is not an archived event.
    #[error("line {line} of the archive is not an archived event: {reason}")]
    Line {
        /// The line's number, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads an archive a line at a time, checking every event as it goes.
///
/// Blank lines are skipped.
///
/// ```
/// use eventcore::archive::ArchiveReader;
///
/// let text = r#"{"id":"0192e0a0-0000-7000-8000-000000000001","stream_id":"account-1","version":1,"event_type":"Opened","recorded_at":"2026-12-01T10:00:00Z","payload":{},"metadata":{}}
/// "#;
/// let events: Vec<_> = ArchiveReader::new(text.as_bytes()).collect::<Result<_, _>>()?;
/// assert_eq!(events[0].stream_id.as_ref(), "account-1");
/// assert_eq!(events[0].schema_version, 1);
/// # Ok::<(), eventcore::archive::ArchiveError>(())
/// ```
#[derive(Debug)]
pub struct ArchiveReader<R> {
    input: R,
    line: u64,
    buffer: String,
}

impl<R: BufRead> ArchiveReader<R> {
    /// Reads the archive in `input`.
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: 0,
            buffer: String::new(),
        }
    }

    /// The number of the line read last (0 before the first).
    pub fn line(&self) -> u64 {
        self.line
    }
}

impl<R: BufRead> Iterator for ArchiveReader<R> {
    type Item = Result<ArchivedEvent, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buffer.clear();
            match self.input.read_line(&mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => self.line += 1,
                Err(error) => return Some(Err(error.into())),
            }
            let text = self.buffer.trim();
            if text.is_empty() {
                continue;
            }
            let line = self.line;
            let event = serde_json::from_str::<ArchivedEvent>(text)
                .map_err(|e| e.to_string())
                .and_then(|event| event.check().map(|()| event))
                .map_err(|reason| ArchiveError::Line { line, reason });
            return Some(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(version: u64) -> String {
        format!(
            r#"{{"id":"0192e0a0-0000-7000-8000-00000000000{version}","stream_id":"s-1","version":{version},"event_type":"Noted","schema_version":2,"recorded_at":"2026-12-01T10:00:00.123456Z","payload":{{"b":1,"a":[true,null]}},"metadata":{{"custom":{{"k":"v"}}}}}}"#
        )
    }

    #[test]
    fn a_line_reads_back_and_writes_out_the_same_with_sorted_keys() {
        let event = ArchiveReader::new(line(1).as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(event.schema_version, 2);
        let mut out = Vec::new();
        event.write_line(&mut out).unwrap();
        let written = String::from_utf8(out).unwrap();
        assert_eq!(
            written,
            line(1).replace(r#"{"b":1,"a":[true,null]}"#, r#"{"a":[true,null],"b":1}"#) + "\n"
        );
        let again = ArchiveReader::new(written.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(again, event);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let text = format!(
            "{}\n\n{}\n{}\n",
            line(1),
            line(2).replace("\"version\":2", "\"version\":0"),
            "not json"
        );
        let results: Vec<_> = ArchiveReader::new(text.as_bytes()).collect();
        assert!(results[0].is_ok());
        let errors: Vec<String> = results[1..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().to_string())
            .collect();
        assert!(errors[0].starts_with("line 3 of the archive"), "{errors:?}");
        assert!(errors[0].contains("version 0"), "{errors:?}");
        assert!(errors[1].starts_with("line 4 of the archive"), "{errors:?}");
        let unknown = line(1).replace("\"version\"", "\"position\":\"1:1\",\"version\"");
        let error = ArchiveReader::new(unknown.as_bytes())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `position`"),
            "{error}"
        );
        let nul = line(1).replace(r#""k":"v""#, r#""k":"v\u0000""#);
        let error = ArchiveReader::new(nul.as_bytes())
            .next()
            .unwrap()
            .unwrap_err();
        assert!(error.to_string().contains("NUL"), "{error}");
    }
}
