//! Bounds on what one execution may read and write.

use crate::{AppendRequest, EventType, StreamId};

/// Bounds an executor enforces before anything is written; see
/// [`CommandExecutor::with_limits`](crate::CommandExecutor::with_limits).
///
/// ```
/// use eventcore::Limits;
///
/// let limits = Limits::default()
///     .with_max_payload_bytes(64 * 1024)
///     .with_max_events_per_append(100)
///     .with_max_streams_per_command(10);
/// assert_eq!(limits.max_payload_bytes(), 65_536);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_payload_bytes: usize,
    max_append_bytes: usize,
    max_events_per_append: usize,
    max_streams_per_command: usize,
}

/// The default [`Limits::max_append_bytes`]: 32 MiB.
///
/// Far below what PostgreSQL could take (1 GiB per field, and the whole
/// append's payloads travel as one array parameter), because of what an
/// append costs while it runs: the server holds several copies of it (the
/// bound text, the parsed `jsonb`, the rows) and the stream rows stay locked
/// until it commits. 32 MiB still fits 32 events at the default payload limit,
/// or a 10,000-event import of 3 KiB events.
pub const DEFAULT_MAX_APPEND_BYTES: usize = 32 * 1024 * 1024;

impl Default for Limits {
    /// 1 MiB per payload, 32 MiB per append ([`DEFAULT_MAX_APPEND_BYTES`]),
    /// 10,000 events per append, 1,000 streams per command.
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
            max_events_per_append: 10_000,
            max_streams_per_command: 1_000,
        }
    }
}

/// A command went beyond one of its executor's [`Limits`]; nothing was written.
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventType, ExpectedVersion, LimitExceeded, Limits, NewEvent, StreamId};
///
/// let limits = Limits::default().with_max_payload_bytes(16);
/// let event = NewEvent::from_parts(
///     EventType::try_new("Noted")?,
///     serde_json::json!({ "text": "longer than sixteen bytes" }),
///     EventMetadata::default(),
/// )?;
/// let request = AppendRequest::single(StreamId::try_new("notes")?, ExpectedVersion::Any, vec![event]);
/// assert!(matches!(limits.check_append(&request), Err(LimitExceeded::PayloadTooLarge { .. })));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// An event's payload, serialized as JSON, is larger than allowed.
    #[error(
        "a {event_type} event for stream {stream_id} has a {size}-byte payload; the limit is {limit} bytes"
    )]
    PayloadTooLarge {
        /// The stream the event was for.
        stream_id: StreamId,
        /// The event's type.
        event_type: EventType,
        /// The payload's size in bytes, as JSON.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// All the append's payloads and custom metadata together, as JSON, are
    /// larger than allowed.
    #[error(
        "the command's append holds {size} bytes of payloads and metadata; the limit is {limit} \
         bytes per append: split it into several commands or raise Limits::with_max_append_bytes"
    )]
    AppendTooLarge {
        /// The append's size in bytes, as JSON.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The command decided more events than one append may hold.
    #[error("the command decided {count} events; the limit is {limit} per append")]
    TooManyEvents {
        /// Events decided.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The command declared or discovered more streams than allowed.
    #[error("the command reads {count} streams; the limit is {limit}")]
    TooManyStreams {
        /// Streams to read.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl Limits {
    /// Largest payload, in bytes of JSON, one event may carry (at least 1).
    #[must_use]
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes.max(1);
        self
    }

    /// Largest append, in bytes of JSON (payloads and custom metadata of all
    /// its events), checked before anything is sent (at least 1).
    #[must_use]
    pub fn with_max_append_bytes(mut self, bytes: usize) -> Self {
        self.max_append_bytes = bytes.max(1);
        self
    }

    /// Most events one append may write, over all its streams (at least 1).
    #[must_use]
    pub fn with_max_events_per_append(mut self, events: usize) -> Self {
        self.max_events_per_append = events.max(1);
        self
    }

    /// Most streams one command may read, declared and discovered (at least 1).
    #[must_use]
    pub fn with_max_streams_per_command(mut self, streams: usize) -> Self {
        self.max_streams_per_command = streams.max(1);
        self
    }

    /// The payload limit in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// The per-append byte limit.
    pub fn max_append_bytes(&self) -> usize {
        self.max_append_bytes
    }

    /// The per-append event limit.
    pub fn max_events_per_append(&self) -> usize {
        self.max_events_per_append
    }

    /// The per-command stream limit.
    pub fn max_streams_per_command(&self) -> usize {
        self.max_streams_per_command
    }

    /// Checks the number of streams a command is about to read.
    ///
    /// # Errors
    /// [`LimitExceeded::TooManyStreams`] above the limit.
    pub fn check_streams(&self, count: usize) -> Result<(), LimitExceeded> {
        if count > self.max_streams_per_command {
            return Err(LimitExceeded::TooManyStreams {
                count,
                limit: self.max_streams_per_command,
            });
        }
        Ok(())
    }

    /// Checks an append's event count and every payload's size.
    ///
    /// # Errors
    /// The first limit the request goes beyond.
    pub fn check_append(&self, request: &AppendRequest) -> Result<(), LimitExceeded> {
        let count = request.event_count();
        if count > self.max_events_per_append {
            return Err(LimitExceeded::TooManyEvents {
                count,
                limit: self.max_events_per_append,
            });
        }
        let mut total = 0_usize;
        for stream in request.streams() {
            for event in &stream.events {
                let size = event.payload().as_json().len();
                if size > self.max_payload_bytes {
                    return Err(LimitExceeded::PayloadTooLarge {
                        stream_id: stream.stream_id.clone(),
                        event_type: event.event_type().clone(),
                        size,
                        limit: self.max_payload_bytes,
                    });
                }
                total = total
                    .saturating_add(size)
                    .saturating_add(custom_metadata_bytes(event));
            }
        }
        if total > self.max_append_bytes {
            return Err(LimitExceeded::AppendTooLarge {
                size: total,
                limit: self.max_append_bytes,
            });
        }
        Ok(())
    }
}

/// The JSON size of an event's custom metadata entries, the part of its
/// metadata a user can make large (ids and the user id are bounded).
fn custom_metadata_bytes(event: &crate::NewEvent) -> usize {
    let custom = &event.metadata().custom;
    if custom.is_empty() {
        return 0;
    }
    serde_json::to_string(custom).map_or(0, |text| text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_size_is_the_compact_json_length() {
        let value = serde_json::json!({"a": [1, 2, "three"], "b": null});
        let event = crate::NewEvent::from_parts(
            crate::EventType::try_new("Sized").unwrap(),
            value.clone(),
            crate::EventMetadata::default(),
        )
        .unwrap();
        let size = value.to_string().len();
        let request = AppendRequest::single(
            crate::StreamId::try_new("limits").unwrap(),
            crate::ExpectedVersion::Any,
            vec![event],
        );
        assert!(
            Limits::default()
                .with_max_payload_bytes(size)
                .check_append(&request)
                .is_ok()
        );
        assert!(matches!(
            Limits::default()
                .with_max_payload_bytes(size - 1)
                .check_append(&request),
            Err(LimitExceeded::PayloadTooLarge { size: s, .. }) if s == size
        ));
    }

    #[test]
    fn an_append_is_bounded_by_its_payloads_and_custom_metadata_together() {
        let event = |custom: bool| {
            let mut metadata = crate::EventMetadata::default();
            if custom {
                metadata = metadata.with_entry("note", "x".repeat(100));
            }
            crate::NewEvent::from_parts(
                crate::EventType::try_new("Sized").unwrap(),
                serde_json::json!("y".repeat(98)),
                metadata,
            )
            .unwrap()
        };
        // 100 bytes of payload each; the custom entry adds 111 bytes of JSON.
        let request = |custom| {
            AppendRequest::single(
                crate::StreamId::try_new("limits").unwrap(),
                crate::ExpectedVersion::Any,
                vec![event(custom), event(custom), event(custom)],
            )
        };
        let limits = Limits::default().with_max_append_bytes(300);
        assert!(limits.check_append(&request(false)).is_ok());
        assert!(matches!(
            limits.check_append(&request(true)),
            Err(LimitExceeded::AppendTooLarge {
                size: 633,
                limit: 300
            })
        ));
        assert!(matches!(
            Limits::default()
                .with_max_append_bytes(299)
                .check_append(&request(false)),
            Err(LimitExceeded::AppendTooLarge { size: 300, .. })
        ));
        assert_eq!(
            Limits::default().max_append_bytes(),
            DEFAULT_MAX_APPEND_BYTES
        );
    }

    #[test]
    fn limits_are_at_least_one() {
        let limits = Limits::default()
            .with_max_payload_bytes(0)
            .with_max_events_per_append(0)
            .with_max_streams_per_command(0);
        assert_eq!(limits.max_payload_bytes(), 1);
        assert_eq!(limits.max_events_per_append(), 1);
        assert_eq!(limits.max_streams_per_command(), 1);
        assert!(limits.check_streams(1).is_ok());
        assert!(limits.check_streams(2).is_err());
    }
}
