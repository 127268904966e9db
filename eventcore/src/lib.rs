//! Event sourcing where the consistency boundary is whatever set of streams a command reads.
//!
//! New here? Read the [guide]: quick start, concepts, writing and
//! testing commands, projections, production, troubleshooting.
//!
//! # Concepts
//!
//! - A **stream** ([`StreamId`]) is an ordered, append-only sequence of
//!   events: an account, an order, a product's stock. Streams are cheap.
//! - A stream's **version** ([`StreamVersion`]) is the number of events in
//!   it; an absent stream is at version 0 and its first event gets version 1.
//!   Versions are contiguous.
//! - Every event also has a **global position** ([`GlobalPosition`]), its
//!   place in one store-wide order that readers of all events
//!   (projections, subscriptions) follow.
//! - An **event** is a serde type implementing [`Event`], which gives it a
//!   stable type name ([`EventType`]). Stored events come back as
//!   [`RecordedEvent`] (JSON payload) and decode into [`StoredEvent<E>`].
//! - Every event is stored with a **schema version** of its shape
//!   ([`Event::schema_version`]); [`Upcasters`] attached to the store read
//!   events stored in older shapes (or under older names) in the current
//!   one, on every read path. See [`upcast`] and its [guide](upcast::guide).
//!
//! # The store contract
//!
//! [`EventStore`] is implemented by `eventcore-memory` and
//! `eventcore-postgres`, with the same observable behaviour:
//!
//! - [`read_streams`](EventStore::read_streams): the events of a set of
//!   streams and each one's version, in one call;
//! - [`append`](EventStore::append): an [`AppendRequest`] writing to several
//!   streams atomically, each with an [`ExpectedVersion`]; streams may be
//!   listed with no events as a pure version check. A failed check is a
//!   [`StoreError::Conflict`] naming each stream with its expected and
//!   actual version, and nothing is written;
//! - [`read_all`](EventStore::read_all): pages of the global order after a
//!   position, optionally filtered by event type ([`ReadAllQuery`]);
//! - [`subscribe`](EventStore::subscribe): catch up from a position, then
//!   follow live appends ([`Subscription`]).
//!
//! # Reading all events
//!
//! A reader that has passed position `P` never later finds a committed event
//! below `P`. Positions have two parts (transaction, sequence) so that an
//! adapter on a concurrent database can order events by the writing
//! transaction and deliver them only once no older transaction can still
//! commit; they are totally ordered, match delivery order and round-trip
//! through a checkpoint.
//!
//! # Contention
//!
//! [`CommandExecutor`] runs a command optimistically: read, decide, append
//! with the versions read, and on a conflict back off (exponentially, with
//! jitter; [`RetryPolicy`]) and start over. Within one process it also makes
//! commands on the same declared streams take turns, so a hot stream sees
//! one command at a time from this executor (and its clones) instead of a
//! crowd of which all but one must fail and retry. A waiting command starts
//! as soon as all its streams are free; one overtaken too often (16
//! scheduling passes) reserves its streams, so no command waits forever.
//! Commands on other streams run in parallel; commands from other processes are still
//! caught by the store's version check. Streams discovered while a command
//! runs are not part of its turn. [`CommandExecutor::without_coordination`]
//! turns this off.
//!
//! # Testing an adapter
//!
// The links resolve only where the feature is on (docs.rs builds with all
// features); without it they would be broken links in a plain `cargo doc`.
#![cfg_attr(
    feature = "conformance",
    doc = "With the `conformance` feature, [`conformance`] holds the suite every \
           adapter must pass and [`conformance_tests!`] turns it into `#[test]`s."
)]
#![cfg_attr(
    not(feature = "conformance"),
    doc = "With the `conformance` feature, `conformance` holds the suite every \
           adapter must pass and `conformance_tests!` turns it into `#[test]`s."
)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod archive;
mod command;
mod coordination;
mod error_chain;
mod event;
mod executor;
mod finite;
pub mod guide;
mod idempotency;
mod limits;
mod metadata;
mod name;
mod payload;
mod position;
pub mod projection;
mod recorded;
mod retry;
pub mod snapshot;
mod store;
mod stream_id;
mod stream_page;
pub mod stream_versions;
mod subscription;
pub mod telemetry;
pub mod upcast;
mod version;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod projection_conformance;

#[doc(hidden)]
pub use command::__private;
pub use command::{
    CommandLogic, CommandStreams, DeclaredStream, HandleContext, WriteTarget, Writes,
};

pub use error_chain::error_chain;
pub use event::{EVENT_TYPE_MAX_CHARS, Event, EventId, EventType, InvalidEventType};
/// Derives [`CommandStreams`] for a struct whose `#[stream]` fields name the streams it reads.
///
/// A `#[stream]` field is a [`StreamId`], a typed id of the application's
/// (any type implementing [`AsStreamId`], such as `AccountId(StreamId)`),
/// or a collection of either (`Vec<_>`, `Option<_>`, `BTreeSet<_>`,
/// `[_; N]`, `&[_]`, ...), or a reference to one. Repeated stream values
/// are read once. A field that holds a `StreamId` must say what it is:
/// `#[stream]`, or `#[stream(skip)]` for an id the command carries but
/// does not read (a forgotten `#[stream]` would otherwise compile and
/// leave the stream unread). For each field the derive also generates a write-target accessor
/// with the field's visibility: `<field>_stream()` returning a
/// [`DeclaredStream`] for a single id, `<field>_streams()` returning a `Vec`
/// of them for a collection. Those accessors (and
/// [`HandleContext::discover`]) are the only way to name a write target, so
/// writing to a stream the command did not declare does not compile.
///
/// Generics and lifetimes on the struct are supported. Misuse (no
/// `#[stream]` field, an unmarked `StreamId` field, a `#[stream]` field of a
/// type that is no stream id, unknown arguments to `#[stream]`, enums,
/// tuple structs, unions) is a compile error at the offending span that
/// says what to write instead, and so is writing to a stream the command
/// did not declare ([`WriteTarget`]).
///
/// ```
/// use eventcore::{Command, CommandStreams, StreamId};
///
/// #[derive(Command)]
/// struct Transfer {
///     #[stream]
///     from: StreamId,
///     #[stream]
///     to: StreamId,
///     cents: u64,
///     /// Who asked: carried along, not a stream this command reads.
///     #[stream(skip)]
///     requested_by: StreamId,
/// }
///
/// #[derive(Command)]
/// struct CloseAll<'a> {
///     #[stream]
///     accounts: Vec<StreamId>,
///     reason: &'a str,
/// }
///
/// let a = StreamId::try_new("a")?;
/// let t = Transfer { from: a.clone(), to: a.clone(), cents: 5, requested_by: a.clone() };
/// assert_eq!(t.declared_streams(), vec![a.clone()], "read once");
/// assert_eq!(t.from_stream().id(), &a);
/// let c = CloseAll { accounts: vec![a.clone()], reason: "audit" };
/// assert_eq!(c.accounts_streams().len(), 1);
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
pub use eventcore_macros::Command;
/// Derives [`Event`](trait@Event) for a serde struct or enum: its stored
/// type name and [schema version](trait@Event#method.schema_version).
///
/// A struct is stored under its own name, an enum's variants each under
/// theirs; `#[event(name = "...")]` sets another name, `#[event(version =
/// N)]` the schema version (1 when not given), on the struct or on each
/// variant. Names are checked as [`EventType`] checks them, and no two
/// variants may share one, at compile time. Register the upcasters from
/// older versions on the store ([`Upcasters`]).
///
/// ```
/// use eventcore::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Event)]
/// enum AccountEvent {
///     #[event(name = "AccountOpened")]
///     Opened { owner: String },
///     #[event(name = "MoneyDeposited", version = 2)]
///     Deposited { cents: u64, reference: Option<String> },
///     Closed,
/// }
///
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(version = 3)]
/// struct PriceChanged { amount: u64, currency: String }
///
/// let deposit = AccountEvent::Deposited { cents: 5, reference: None };
/// assert_eq!((deposit.event_type(), deposit.schema_version()), ("MoneyDeposited", 2));
/// assert_eq!(AccountEvent::Closed.event_type(), "Closed");
/// let price = PriceChanged { amount: 1, currency: "EUR".into() };
/// assert_eq!((price.event_type(), price.schema_version()), ("PriceChanged", 3));
/// ```
pub use eventcore_macros::Event;
pub use executor::{
    CommandExecutor, DEFAULT_MAX_DISCOVERY_ROUNDS, ExecutionError, ExecutionOptions,
    ExecutionResult,
};
pub use idempotency::{
    DEFAULT_IDEMPOTENCY_RETENTION, IDEMPOTENCY_KEY_MAX_CHARS, IdempotencyKey,
    InvalidIdempotencyKey, KeyPurpose,
};
pub use limits::{DEFAULT_MAX_APPEND_BYTES, LimitExceeded, Limits};
pub use metadata::{CausationId, CorrelationId, EventMetadata, InvalidUserId, UserId};
pub use payload::{MAX_JSON_DEPTH, Payload};
pub use position::{GlobalPosition, InvalidGlobalPosition};
pub use projection::{
    Checkpoint, CheckpointStore, ErrorPolicy, FencingToken, Leadership, PendingRequest, Projection,
    ProjectionError, ProjectionHandle, ProjectionOptions, ProjectionRequest, ProjectionRunner,
    ProjectionState, ProjectionStatus, SoleRunner,
};
pub use recorded::{DecodeError, DecodeProblem, EncodeError, NewEvent, RecordedEvent, StoredEvent};
pub use retry::RetryPolicy;
pub use snapshot::{
    DEFAULT_SNAPSHOT_CACHE_BYTES, DEFAULT_SNAPSHOT_EVERY, Snapshot, SnapshotKey, SnapshotPolicy,
};
pub use store::{
    AppendRequest, AppendResult, BoxError, DEFAULT_PAGE_SIZE, EventStore, InvalidAppend,
    ReadAllQuery, StoreError, StreamAppend, StreamsRead, VersionConflict, WrittenEvent,
};
pub use stream_id::{AsStreamId, InvalidStreamId, STREAM_ID_MAX_CHARS, StreamId};
pub use stream_page::{Direction, StreamPage, StreamQuery};
pub use stream_versions::StreamVersions;
pub use subscription::{AppendNotifier, Subscription};
pub use upcast::{
    InvalidUpcasters, Outdated, OutdatedEvent, UpcastError, UpcastProblem, Upcasters,
    UpcastersBuilder,
};
pub use version::{ExpectedVersion, StreamVersion};
