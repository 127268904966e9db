//! Events on their way into the store and on their way back out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Event, EventId, EventMetadata, EventType, GlobalPosition, InvalidEventType, MAX_JSON_DEPTH,
    Payload, StreamId, StreamVersion,
    payload::{JsonProblem, check_json},
};

/// An event ready to append: its type name, [`Payload`] and metadata.
///
/// Ids, versions, positions and the recorded time are assigned by the store
/// when the event is written.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    event_type: EventType,
    payload: Payload,
    metadata: EventMetadata,
}

/// A domain event that could not be turned into a [`NewEvent`].
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The event's `event_type()` is not a valid [`EventType`].
    #[error("invalid event type name {name:?}: {source}")]
    InvalidEventType {
        /// The name the event reported.
        name: String,
        /// What is wrong with it.
        #[source]
        source: InvalidEventType,
    },
    /// A string in the payload or metadata holds U+0000, which PostgreSQL's
    /// `jsonb` cannot store; every store refuses it alike.
    #[error(
        "the {part} of a {event_type} event contains a NUL character (U+0000), which cannot be stored"
    )]
    NulCharacter {
        /// The event's type name.
        event_type: String,
        /// `"payload"` or `"metadata"`.
        part: &'static str,
    },
    /// The payload or metadata nests arrays and objects deeper than
    /// [`MAX_JSON_DEPTH`]: readers could not decode it again (JSON parsers
    /// limit nesting), so every store refuses it alike.
    #[error(
        "the {part} of a {event_type} event nests JSON deeper than {MAX_JSON_DEPTH} levels, which readers cannot decode"
    )]
    TooDeep {
        /// The event's type name.
        event_type: String,
        /// `"payload"` or `"metadata"`.
        part: &'static str,
    },
    /// A float in the payload is NaN or infinite: JSON has no such number,
    /// and would store it as `null`; every store refuses it alike.
    #[error(
        "the {part} of a {event_type} event holds a NaN or infinite number, which JSON cannot \
         store (it would be written as null); use a finite value or an Option"
    )]
    NonFinite {
        /// The event's type name.
        event_type: String,
        /// `"payload"`.
        part: &'static str,
    },
    /// serde could not serialize the payload to JSON.
    #[error("could not serialize a {event_type} event to JSON: {source}")]
    Serialize {
        /// The event's type name.
        event_type: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

impl NewEvent {
    /// Serializes a domain event with its metadata.
    ///
    /// ```
    /// use eventcore::{Event, EventMetadata, NewEvent};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Pinged { n: u32 }
    /// # impl Event for Pinged { fn event_type(&self) -> &'static str { "Pinged" } }
    /// let event = NewEvent::from_event(&Pinged { n: 1 }, EventMetadata::default())?;
    /// assert_eq!(event.event_type().as_ref(), "Pinged");
    /// assert_eq!(event.payload().to_value()?["n"], 1);
    ///
    /// // PostgreSQL's jsonb cannot hold U+0000, so no store accepts it.
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Named { name: String }
    /// # impl Event for Named { fn event_type(&self) -> &'static str { "Named" } }
    /// let nul = Named { name: "a\0b".into() };
    /// assert!(NewEvent::from_event(&nul, EventMetadata::default()).is_err());
    ///
    /// // JSON has no NaN: it would be stored as null, so it is refused.
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Measured { celsius: f64 }
    /// # impl Event for Measured { fn event_type(&self) -> &'static str { "Measured" } }
    /// let nan = Measured { celsius: f64::NAN };
    /// assert!(matches!(
    ///     NewEvent::from_event(&nan, EventMetadata::default()),
    ///     Err(eventcore::EncodeError::NonFinite { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_event<E: Event>(event: &E, metadata: EventMetadata) -> Result<Self, EncodeError> {
        let name = event.event_type();
        let event_type =
            EventType::of_static(name).map_err(|source| EncodeError::InvalidEventType {
                name: name.to_owned(),
                source,
            })?;
        Self::encoded(event_type, event, metadata)
    }

    /// An event from an already-encoded payload, for tools that move raw events.
    ///
    /// # Errors
    /// [`EncodeError::NulCharacter`] if a string in the payload or metadata
    /// holds U+0000; [`EncodeError::TooDeep`] if either nests deeper than
    /// [`MAX_JSON_DEPTH`]. (A `serde_json::Value` cannot hold a NaN or an
    /// infinity, so neither can metadata values.)
    pub fn from_parts(
        event_type: EventType,
        payload: serde_json::Value,
        metadata: EventMetadata,
    ) -> Result<Self, EncodeError> {
        Self::encoded(event_type, &payload, metadata)
    }

    /// Encodes `payload` and checks it and the metadata can be stored.
    fn encoded<T: Serialize + ?Sized>(
        event_type: EventType,
        payload: &T,
        metadata: EventMetadata,
    ) -> Result<Self, EncodeError> {
        let payload = Payload::encode(payload)
            .map_err(|source| EncodeError::Serialize {
                event_type: event_type.to_string(),
                source,
            })?
            .map_err(|problem| refusal(problem, &event_type, "payload"))?;
        if metadata.user_id.as_ref().is_some_and(|u| u.contains('\0')) {
            return Err(refusal(JsonProblem::Nul, &event_type, "metadata"));
        }
        for (key, value) in &metadata.custom {
            if key.contains('\0') {
                return Err(refusal(JsonProblem::Nul, &event_type, "metadata"));
            }
            // Custom values sit two levels down in the stored metadata object.
            check_json(value, 3).map_err(|p| refusal(p, &event_type, "metadata"))?;
        }
        Ok(Self {
            event_type,
            payload,
            metadata,
        })
    }

    /// The stored type name.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The metadata.
    pub fn metadata(&self) -> &EventMetadata {
        &self.metadata
    }

    /// Splits the event into type name, payload and metadata.
    pub fn into_parts(self) -> (EventType, Payload, EventMetadata) {
        (self.event_type, self.payload, self.metadata)
    }
}

/// The error refusing an event whose `part` has `problem`.
fn refusal(problem: JsonProblem, event_type: &EventType, part: &'static str) -> EncodeError {
    let event_type = event_type.to_string();
    match problem {
        JsonProblem::Nul => EncodeError::NulCharacter { event_type, part },
        JsonProblem::TooDeep => EncodeError::TooDeep { event_type, part },
        JsonProblem::NonFinite => EncodeError::NonFinite { event_type, part },
    }
}

/// A stored event as the store returns it, with its payload still JSON.
///
/// Turn it into a typed [`StoredEvent`] with [`RecordedEvent::decode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id, assigned at write time.
    pub id: EventId,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// The event's version inside its stream (the first event is version 1).
    pub version: StreamVersion,
    /// The event's place in the store-wide order.
    pub position: GlobalPosition,
    /// When the store wrote the event.
    pub recorded_at: DateTime<Utc>,
    /// The stored type name.
    pub event_type: EventType,
    /// The payload as stored; shared, so copies of a recorded event
    /// (a store handing out the same event to many readers) do not copy it.
    pub payload: Payload,
    /// Metadata supplied with the append.
    pub metadata: EventMetadata,
}

/// A stored event whose payload does not decode into the type the caller asked for.
///
/// Names the event so it can be found and repaired; the event is not skipped.
#[derive(Debug, thiserror::Error)]
#[error(
    "stored event {event_id} ({event_type}, stream {stream_id} version {version}) does not decode into {target}: {source}"
)]
pub struct DecodeError {
    /// The undecodable event's id.
    pub event_id: EventId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in that stream.
    pub version: StreamVersion,
    /// Its stored type name.
    pub event_type: EventType,
    /// The Rust type it was decoded into.
    pub target: &'static str,
    /// serde_json's error.
    #[source]
    pub source: serde_json::Error,
}

impl RecordedEvent {
    /// Decodes the payload into the caller's event type.
    ///
    /// # Errors
    /// [`DecodeError`] naming the event when the payload does not fit `E`.
    pub fn decode<E: Event>(&self) -> Result<StoredEvent<E>, DecodeError> {
        let payload = self
            .payload
            .decode::<E>()
            .map_err(|source| self.decode_error::<E>(source))?;
        Ok(StoredEvent {
            id: self.id,
            stream_id: self.stream_id.clone(),
            version: self.version,
            position: self.position,
            recorded_at: self.recorded_at,
            event_type: self.event_type.clone(),
            metadata: self.metadata.clone(),
            payload,
        })
    }

    /// Decodes the payload, consuming the event (no copies of its id, stream or metadata).
    ///
    /// # Errors
    /// [`DecodeError`] naming the event when the payload does not fit `E`.
    pub fn into_decoded<E: Event>(self) -> Result<StoredEvent<E>, DecodeError> {
        let payload = self
            .payload
            .decode::<E>()
            .map_err(|source| self.decode_error::<E>(source))?;
        Ok(StoredEvent {
            id: self.id,
            stream_id: self.stream_id,
            version: self.version,
            position: self.position,
            recorded_at: self.recorded_at,
            event_type: self.event_type,
            metadata: self.metadata,
            payload,
        })
    }

    fn decode_error<E>(&self, source: serde_json::Error) -> DecodeError {
        DecodeError {
            event_id: self.id,
            stream_id: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.clone(),
            target: std::any::type_name::<E>(),
            source,
        }
    }
}

/// A stored event with its payload decoded into the domain type `E`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent<E> {
    /// Unique id, assigned at write time.
    pub id: EventId,
    /// The stream the event belongs to.
    pub stream_id: StreamId,
    /// The event's version inside its stream.
    pub version: StreamVersion,
    /// The event's place in the store-wide order.
    pub position: GlobalPosition,
    /// When the store wrote the event.
    pub recorded_at: DateTime<Utc>,
    /// The stored type name.
    pub event_type: EventType,
    /// Metadata supplied with the append.
    pub metadata: EventMetadata,
    /// The decoded domain event.
    pub payload: E,
}
