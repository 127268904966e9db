//! What goes wrong when old events are read through upcasters, or written
//! in a shape the upcasters say is outdated.

use crate::{
    BoxError, EventId, EventType, GlobalPosition, InvalidEventType, StreamId, StreamVersion,
};

/// A stored event that could not be brought to its current shape.
///
/// Names the event (id, stream, version in the stream, position) and the
/// shape it was stored in (type name and schema version), and says what is
/// missing or which upcaster failed. The stored row is unchanged: fix or
/// register the upcaster and read again.
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StoreError, StreamId, Upcasters};
/// use eventcore_memory::InMemoryEventStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // An upcaster that cannot handle what it finds.
/// let upcasters = Upcasters::builder()
///     .step("Deposited", 1, |v| {
///         v.get("cents").ok_or("Deposited v1 without cents")?;
///         Ok(v)
///     })
///     .build()?;
/// let store = InMemoryEventStore::new().with_upcasters(upcasters);
/// let account = StreamId::try_new("account-1")?;
/// let broken = NewEvent::from_parts(EventType::try_new("Deposited")?, serde_json::json!({}), EventMetadata::default())?;
/// store.without_upcasters()
///     .append(AppendRequest::single(account.clone(), ExpectedVersion::Any, vec![broken]))
///     .await?;
///
/// match store.read_streams(std::slice::from_ref(&account)).await {
///     Err(StoreError::Upcast(error)) => {
///         assert_eq!(error.stream_id, account);
///         println!("{error}"); // names the event and the upcaster's complaint
///     }
///     other => panic!("expected an upcast error, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "stored event {event_id} (stream {stream_id} version {version}, type {event_type} at schema \
     version {schema_version}) cannot be upcast: {problem}"
)]
pub struct UpcastError {
    /// The event's id.
    pub event_id: EventId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in that stream.
    pub version: StreamVersion,
    /// Its place in the global order.
    pub position: GlobalPosition,
    /// The type name it was stored with.
    pub event_type: EventType,
    /// The schema version it was stored with.
    pub schema_version: u32,
    /// What went wrong (its text is part of this error's, so it is not
    /// also returned as the source: a chain printer shows it once).
    pub problem: UpcastProblem,
}

/// Why an event could not be upcast.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastProblem {
    /// The chain reached `event_type` at schema version `at`, and the
    /// registry has upcasters for that type from `next` on, but none from `at`.
    #[error(
        "no upcaster from schema version {at} of {event_type} is registered (there is one from \
         version {next}); register Upcasters::builder().step({event_type:?}, {at}, ..)"
    )]
    Missing {
        /// The type name the chain had reached.
        event_type: EventType,
        /// The schema version it had reached.
        at: u32,
        /// The next version an upcaster is registered from.
        next: u32,
    },
    /// The upcaster from schema version `from` of `event_type` (or the
    /// rename of `event_type`, when `from` is `None`) returned an error.
    #[error("the upcaster {} of {event_type} failed: {source}", describe(*.from))]
    Failed {
        /// The type name the failing upcaster is registered for.
        event_type: EventType,
        /// The version it upcasts from; `None` for a rename.
        from: Option<u32>,
        /// What it reported.
        source: BoxError,
    },
    /// A split of `event_type` chose a type it was not registered with.
    #[error(
        "the split of {event_type} chose {chosen:?}, which is not one of the types it was \
         registered with ({})", list(.into)
    )]
    UnknownSplitTarget {
        /// The type being split.
        event_type: EventType,
        /// The name the split returned.
        chosen: String,
        /// The names it was registered with.
        into: Vec<EventType>,
    },
    /// The stored payload is not JSON, so no upcaster could read it.
    #[error("the stored payload is not JSON: {source}")]
    NotJson {
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// An upcaster's output could not be turned back into a payload.
    #[error("the output of the upcasters for {event_type} cannot be encoded: {source}")]
    Output {
        /// The type name the chain had reached.
        event_type: EventType,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

fn list(names: &[EventType]) -> String {
    names
        .iter()
        .map(EventType::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(from: Option<u32>) -> String {
    match from {
        Some(from) => format!("from schema version {from}"),
        None => "that renames or splits it".to_owned(),
    }
}

/// An event the upcasters say is written in an outdated shape; nothing was
/// written.
///
/// The code writing it is older than the upcasters it runs with: its type
/// is renamed, or stored events of its schema version are upcast to a
/// newer one. Usually the event's [`Event::schema_version`](crate::Event::schema_version)
/// was not raised along with a new upcaster, or old code runs against new
/// registrations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to write a {event_type} event at schema version {schema_version} to stream \
     {stream_id}: {reason}"
)]
pub struct OutdatedEvent {
    /// The stream it was to be written to.
    pub stream_id: StreamId,
    /// Its type name.
    pub event_type: EventType,
    /// The schema version it was written with.
    pub schema_version: u32,
    /// What makes it outdated, and what to do.
    pub reason: Outdated,
}

/// What makes an event outdated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Outdated {
    /// Stored events of this type are read as `to`.
    #[error("{from} is renamed to {to}; write {to} events instead")]
    Renamed {
        /// The old name.
        from: EventType,
        /// The name it is read as.
        to: EventType,
    },
    /// Stored events of this type are read as one of `into`, by content.
    #[error("{from} is split into {}; write those events instead", list(.into))]
    Split {
        /// The old name.
        from: EventType,
        /// The names it is read as.
        into: Vec<EventType>,
    },
    /// An upcaster from schema version `from` (at least the written one) is
    /// registered, so this shape is upcast on every read.
    #[error(
        "an upcaster from schema version {from} is registered, so this shape is outdated; \
         write schema version {current} (raise Event::schema_version)"
    )]
    Superseded {
        /// The highest version an upcaster is registered from.
        from: u32,
        /// The version the upcasters produce.
        current: u32,
    },
}

/// A set of upcasters that contradict each other or name invalid types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidUpcasters {
    /// A type name is not a valid [`EventType`].
    #[error("invalid event type name {name:?} in an upcaster: {source}")]
    EventType {
        /// The name given.
        name: String,
        /// What is wrong with it.
        #[source]
        source: InvalidEventType,
    },
    /// An upcaster from schema version 0: versions start at 1.
    #[error("an upcaster of {event_type} is registered from schema version 0; versions start at 1")]
    ZeroVersion {
        /// The type.
        event_type: EventType,
    },
    /// Two upcasters from the same version of the same type.
    #[error("two upcasters from schema version {from} of {event_type} are registered")]
    DuplicateStep {
        /// The type.
        event_type: EventType,
        /// The version.
        from: u32,
    },
    /// Two renames (or splits) of the same type.
    #[error("{event_type} is renamed or split twice")]
    DuplicateRename {
        /// The type.
        event_type: EventType,
    },
    /// Renames or splits that lead back to where they started (or a type
    /// renamed to itself).
    #[error("the renames starting at {event_type} form a cycle")]
    RenameCycle {
        /// A type on the cycle.
        event_type: EventType,
    },
    /// A split into no type.
    #[error("{event_type} is split into no type")]
    EmptySplit {
        /// The type.
        event_type: EventType,
    },
    /// An upcaster from the last version there is.
    #[error("an upcaster of {event_type} from schema version {from} has no next version")]
    VersionOverflow {
        /// The type.
        event_type: EventType,
        /// The version.
        from: u32,
    },
}
