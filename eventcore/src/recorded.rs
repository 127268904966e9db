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
///
/// ```
/// use eventcore::{EventMetadata, NewEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { cents: u64 }
/// # impl eventcore::Event for Deposited { fn event_type(&self) -> &'static str { "Deposited" } }
/// let event = NewEvent::from_event(&Deposited { cents: 500 }, EventMetadata::default())?;
/// assert_eq!(event.event_type().as_ref(), "Deposited");
/// assert_eq!(event.schema_version(), 1);
/// # Ok::<(), eventcore::EncodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    event_type: EventType,
    schema_version: u32,
    payload: Payload,
    metadata: EventMetadata,
}

/// A domain event that could not be turned into a [`NewEvent`].
///
/// ```
/// use eventcore::{EncodeError, EventMetadata, NewEvent};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Measured { celsius: f64 }
/// impl eventcore::Event for Measured {
///     fn event_type(&self) -> &'static str { "Measured" }
/// }
/// let refused = NewEvent::from_event(&Measured { celsius: f64::INFINITY }, EventMetadata::default());
/// assert!(matches!(refused, Err(EncodeError::NonFinite { .. })));
/// ```
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
    /// The event reported schema version 0; versions start at 1.
    #[error("a {event_type} event reports schema version 0; schema versions start at 1")]
    ZeroSchemaVersion {
        /// The event's type name.
        event_type: String,
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
        Self::encoded(event_type, event, metadata)?.with_schema_version(event.schema_version())
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

    /// Sets the schema version the event is stored with (1 unless set):
    /// for tools that move raw events, and for tests that write events as
    /// old code did.
    ///
    /// ```
    /// use eventcore::{EventMetadata, EventType, NewEvent};
    ///
    /// let old = NewEvent::from_parts(
    ///     EventType::try_new("MoneyDeposited")?,
    ///     serde_json::json!({ "cents": 5 }),
    ///     EventMetadata::default(),
    /// )?
    /// .with_schema_version(1)?;
    /// assert_eq!(old.schema_version(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`EncodeError::ZeroSchemaVersion`] for version 0.
    pub fn with_schema_version(mut self, schema_version: u32) -> Result<Self, EncodeError> {
        if schema_version == 0 {
            return Err(EncodeError::ZeroSchemaVersion {
                event_type: self.event_type.to_string(),
            });
        }
        self.schema_version = schema_version;
        Ok(self)
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
        check_metadata(&metadata, &event_type)?;
        Ok(Self {
            event_type,
            schema_version: 1,
            payload,
            metadata,
        })
    }

    /// The stored type name.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The schema version of the payload's shape.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
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

/// Checks `metadata` can be stored: no NUL, no nesting past [`MAX_JSON_DEPTH`].
pub(crate) fn check_metadata(
    metadata: &EventMetadata,
    event_type: &EventType,
) -> Result<(), EncodeError> {
    if metadata.user_id.as_ref().is_some_and(|u| u.contains('\0')) {
        return Err(refusal(JsonProblem::Nul, event_type, "metadata"));
    }
    for (key, value) in &metadata.custom {
        if key.contains('\0') {
            return Err(refusal(JsonProblem::Nul, event_type, "metadata"));
        }
        // Custom values sit two levels down in the stored metadata object.
        check_json(value, 3).map_err(|p| refusal(p, event_type, "metadata"))?;
    }
    Ok(())
}

/// A stored event as the store returns it, with its payload still JSON.
///
/// Turn it into a typed [`StoredEvent`] with [`RecordedEvent::decode`].
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent, StreamId};
/// use eventcore_memory::InMemoryEventStore;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { cents: u64 }
/// # impl eventcore::Event for Deposited { fn event_type(&self) -> &'static str { "Deposited" } }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let account = StreamId::try_new("account-1")?;
/// let deposit = NewEvent::from_event(&Deposited { cents: 500 }, EventMetadata::default())?;
/// store.append(AppendRequest::single(account.clone(), ExpectedVersion::Any, vec![deposit])).await?;
///
/// let read = store.read_streams(std::slice::from_ref(&account)).await?;
/// let recorded = &read.events[0];
/// assert_eq!(recorded.version.value(), 1);
/// assert_eq!(recorded.event_type.as_ref(), "Deposited");
/// let typed = recorded.decode::<Deposited>()?; // a `StoredEvent<Deposited>`
/// assert_eq!(typed.payload, Deposited { cents: 500 });
/// # Ok(())
/// # }
/// ```
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
    /// The type name: as stored, or the current name when the store's
    /// [`Upcasters`](crate::Upcasters) rename it.
    pub event_type: EventType,
    /// The schema version of the payload's shape: as stored (1 for events
    /// written before schema versions existed), or the version the store's
    /// upcasters brought it to.
    #[serde(default = "first_schema_version")]
    pub schema_version: u32,
    /// The payload as stored (or as upcast); shared, so copies of a recorded event
    /// (a store handing out the same event to many readers) do not copy it.
    pub payload: Payload,
    /// Metadata supplied with the append.
    pub metadata: EventMetadata,
}

/// The schema version of events stored before schema versions existed.
fn first_schema_version() -> u32 {
    1
}

/// A stored event that does not decode into the type the caller asked for.
///
/// Names the event so it can be found and repaired; the event is not skipped.
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamId};
/// use eventcore_memory::InMemoryEventStore;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # struct Deposited { cents: u64 }
/// # impl eventcore::Event for Deposited { fn event_type(&self) -> &'static str { "Deposited" } }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let account = StreamId::try_new("account-1")?;
/// // Stored by other code, in a shape `Deposited` does not have.
/// let odd = NewEvent::from_parts(
///     EventType::try_new("Deposited")?,
///     serde_json::json!({ "amount": "five" }),
///     EventMetadata::default(),
/// )?;
/// store.append(AppendRequest::single(account.clone(), ExpectedVersion::Any, vec![odd])).await?;
/// let read = store.read_streams(std::slice::from_ref(&account)).await?;
/// let error = read.events[0].decode::<Deposited>().unwrap_err();
/// assert_eq!(error.stream_id, account);
/// assert_eq!(error.version.value(), 1);
/// println!("{error}"); // names the event, its stream and version, and what does not fit
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error(
    "stored event {event_id} ({event_type} at schema version {schema_version}, stream \
     {stream_id} version {version}) does not decode into {target}: {problem}"
)]
pub struct DecodeError {
    /// The undecodable event's id.
    pub event_id: EventId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in that stream.
    pub version: StreamVersion,
    /// Its type name (current, if the store's upcasters renamed it).
    pub event_type: EventType,
    /// The schema version it was read at (after the store's upcasters).
    pub schema_version: u32,
    /// The Rust type it was decoded into.
    pub target: &'static str,
    /// What does not fit (part of this error's text, so not also its source).
    pub problem: DecodeProblem,
}

/// Why a stored event does not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeProblem {
    /// The payload does not fit the Rust type.
    #[error("{0}")]
    Payload(serde_json::Error),
    /// The event was read at an older schema version than the Rust type
    /// declares, and no upcaster brought it further.
    #[error(
        "the type declares schema version {declared}: register an upcaster from version \
         {read} on the store (Upcasters::builder().step(..)) so old events are read in the \
         current shape"
    )]
    NoUpcaster {
        /// The version the event was read at.
        read: u32,
        /// The version the Rust type declares ([`Event::schema_version`]).
        declared: u32,
    },
    /// The event was written at a newer schema version than the Rust type
    /// declares: code older than the code that wrote it is reading it.
    #[error(
        "the type declares schema version {declared}, older than the stored one: this code \
         is older than the code that wrote the event; deploy the newer code"
    )]
    NewerThanCode {
        /// The version the event was read at.
        read: u32,
        /// The version the Rust type declares ([`Event::schema_version`]).
        declared: u32,
    },
}

impl RecordedEvent {
    /// Decodes the payload into the caller's event type.
    ///
    /// The event must be at the schema version `E` declares for it
    /// ([`Event::schema_version`]): a store with upcasters
    /// ([`Upcasters`](crate::Upcasters)) has already brought it there.
    ///
    /// # Errors
    /// [`DecodeError`] naming the event when the payload does not fit `E`,
    /// or was read at another schema version than `E` declares.
    pub fn decode<E: Event>(&self) -> Result<StoredEvent<E>, DecodeError> {
        let payload = self.decode_payload::<E>()?;
        Ok(StoredEvent {
            id: self.id,
            stream_id: self.stream_id.clone(),
            version: self.version,
            position: self.position,
            recorded_at: self.recorded_at,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            metadata: self.metadata.clone(),
            payload,
        })
    }

    /// Decodes the payload, consuming the event (no copies of its id,
    /// stream or metadata); checked as [`decode`](Self::decode) is.
    ///
    /// # Errors
    /// [`DecodeError`] naming the event when the payload does not fit `E`,
    /// or was read at another schema version than `E` declares.
    pub fn into_decoded<E: Event>(self) -> Result<StoredEvent<E>, DecodeError> {
        let payload = self.decode_payload::<E>()?;
        Ok(StoredEvent {
            id: self.id,
            stream_id: self.stream_id,
            version: self.version,
            position: self.position,
            recorded_at: self.recorded_at,
            event_type: self.event_type,
            schema_version: self.schema_version,
            metadata: self.metadata,
            payload,
        })
    }

    /// The payload as `E`, checked against the schema version `E` declares.
    fn decode_payload<E: Event>(&self) -> Result<E, DecodeError> {
        let payload = self
            .payload
            .decode::<E>()
            .map_err(|source| self.decode_error::<E>(DecodeProblem::Payload(source)))?;
        let declared = payload.schema_version();
        let read = self.schema_version;
        if read < declared {
            return Err(self.decode_error::<E>(DecodeProblem::NoUpcaster { read, declared }));
        }
        if read > declared {
            return Err(self.decode_error::<E>(DecodeProblem::NewerThanCode { read, declared }));
        }
        Ok(payload)
    }

    fn decode_error<E>(&self, problem: DecodeProblem) -> DecodeError {
        DecodeError {
            event_id: self.id,
            stream_id: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            target: std::any::type_name::<E>(),
            problem,
        }
    }
}

/// A stored event with its payload decoded into the domain type `E`.
///
/// See [`RecordedEvent::decode`]; commands receive their events as
/// `StoredEvent`s in `apply`.
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
    /// The type name (current, if the store's upcasters renamed it).
    pub event_type: EventType,
    /// The schema version the event was read at.
    pub schema_version: u32,
    /// Metadata supplied with the append.
    pub metadata: EventMetadata,
    /// The decoded domain event.
    pub payload: E,
}
