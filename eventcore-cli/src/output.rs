//! Tables for people, JSON for scripts.

use std::io::{self, Write};

use eventcore::RecordedEvent;
use serde::Serialize;

/// Prints `value` as one JSON document on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell. (A table
/// crate would do the same in more code than this.)
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) -> io::Result<()> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = io::stdout().lock();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// An event as scripts see it: every field, the payload and metadata as JSON.
pub fn event_json(event: &RecordedEvent) -> serde_json::Value {
    serde_json::json!({
        "position": event.position.to_string(),
        "id": event.id,
        "stream_id": event.stream_id,
        "version": event.version,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "recorded_at": event.recorded_at,
        "payload": event.payload.to_value().unwrap_or(serde_json::Value::Null),
        "metadata": event.metadata,
    })
}

/// The columns of an event in a table.
pub const EVENT_HEADER: &[&str] = &[
    "POSITION", "STREAM", "VERSION", "TYPE", "RECORDED", "PAYLOAD",
];

/// An event as a table row, its payload shortened.
pub fn event_row(event: &RecordedEvent) -> Vec<String> {
    vec![
        event.position.to_string(),
        event.stream_id.to_string(),
        event.version.to_string(),
        if event.schema_version > 1 {
            format!("{} v{}", event.event_type, event.schema_version)
        } else {
            event.event_type.to_string()
        },
        event
            .recorded_at
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        shorten(event.payload.as_json(), 60),
    ]
}
