//! The store contract every adapter implements.

use std::{fmt, future::Future, num::NonZeroUsize, sync::Arc};

use chrono::{DateTime, Utc};

use crate::{
    EventId, EventType, ExpectedVersion, GlobalPosition, IdempotencyKey, NewEvent, RecordedEvent,
    Snapshot, SnapshotKey, StreamId, StreamVersion, StreamVersions, Subscription,
};

/// Any error an adapter wraps as the cause of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An event store: multi-stream reads, atomic multi-stream appends with
/// version checks, and the store-wide order for readers and subscribers.
///
/// The trait is generic-async rather than object-safe: every method returns
/// `impl Future + Send`, so executors built on it can be awaited from any
/// multi-threaded runtime and from web handlers (axum requires `Send`
/// futures), without boxing a future per call. Code that needs one type for
/// several stores can be generic over `S: EventStore`; `Arc<S>` is a store too.
///
/// Adapters must behave alike; `eventcore::conformance` (feature
/// `conformance`) is the suite that checks it.
///
/// ```
/// use eventcore::{
///     AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent,
///     ReadAllQuery, StreamId,
/// };
/// use eventcore_memory::InMemoryEventStore;
/// # fn event(name: &str) -> Result<NewEvent, Box<dyn std::error::Error>> {
/// #     Ok(NewEvent::from_parts(EventType::try_new(name)?, serde_json::json!({}), EventMetadata::default())?)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let account = StreamId::try_new("account-1")?;
/// let opened = event("Opened")?;
/// store
///     .append(AppendRequest::single(account.clone(), ExpectedVersion::NoStream, vec![opened]))
///     .await?;
///
/// let read = store.read_streams(std::slice::from_ref(&account)).await?;
/// assert_eq!(read.version(&account).value(), 1);
/// let page = store.read_all(&ReadAllQuery::from_start()).await?;
/// assert_eq!(page[0].stream_id, account);
/// # Ok(())
/// # }
/// ```
pub trait EventStore: Send + Sync {
    /// Reads every event of the given streams in one consistent call.
    ///
    /// Events come back in global order (hence in version order within each
    /// stream); every requested stream has an entry in
    /// [`StreamsRead::versions`], absent streams at version 0. Repeated ids
    /// are read once.
    fn read_streams(
        &self,
        stream_ids: &[StreamId],
    ) -> impl Future<Output = Result<StreamsRead, StoreError>> + Send;

    /// Appends events to several streams atomically, checking each stream's expected version.
    ///
    /// Either every event is written or none is. Streams listed with no
    /// events are checked only. If any check fails the result is
    /// [`StoreError::Conflict`] naming every stream whose check failed.
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send;

    /// Reads one page of events in global order, strictly after `query.after`.
    ///
    /// A reader that has passed a position never later finds a committed
    /// event before it. An empty page means the reader has caught up.
    fn read_all(
        &self,
        query: &ReadAllQuery,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Follows the global order from `query.after`: first the events already
    /// stored, then every later append, each once and in order.
    fn subscribe(&self, query: ReadAllQuery) -> Subscription;

    /// The result of the append that recorded `key`, if one did (and it is
    /// still within the store's retention period).
    ///
    /// An append carrying an idempotency key records it atomically with its
    /// events and its [`KeyPurpose`](crate::KeyPurpose); a later append with
    /// the same key writes nothing and returns this same result, whatever its
    /// own expectations. A key recorded for another purpose than `purpose`
    /// is [`StoreError::KeyReused`] (see [`KeyPurpose::check`](crate::KeyPurpose::check)).
    fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&crate::KeyPurpose>,
    ) -> impl Future<Output = Result<Option<AppendResult>, StoreError>> + Send;

    /// The events of each stream in `after` whose version is above the one
    /// given for it, in global order, and every listed stream's current
    /// version (which may be below the given one, for a stream that is
    /// shorter than the caller believed).
    fn read_streams_after(
        &self,
        after: &StreamVersions,
    ) -> impl Future<Output = Result<StreamsRead, StoreError>> + Send;

    /// The snapshot stored under `key`, if any.
    fn load_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Stores `snapshot` under its key unless the stored one, of the same
    /// state version, reaches further ([`Snapshot::reach`]).
    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of one stream: from a version, forwards or backwards, at
    /// most `query.limit` events of the wanted types, and the stream's
    /// current version, from one consistent read.
    ///
    /// For browsing and tools: only the page is read, however long the
    /// stream. Continue with [`StreamPage::next`](crate::StreamPage::next)
    /// until it is `None`; pages neither repeat nor skip an event. An absent
    /// stream is an empty page at version 0. The default reads the whole
    /// stream and cuts the page from it; adapters that can read only the
    /// page should.
    fn read_stream(
        &self,
        query: &crate::StreamQuery,
    ) -> impl Future<Output = Result<crate::StreamPage, StoreError>> + Send {
        async move {
            let read = self
                .read_streams(std::slice::from_ref(&query.stream_id))
                .await?;
            let version = read.version(&query.stream_id);
            let wanted = read
                .events
                .into_iter()
                .filter(|e| query.reaches(e.version) && query.wants(&e.event_type));
            let events: Vec<RecordedEvent> = match query.direction {
                crate::Direction::Forwards => wanted.take(query.limit.get()).collect(),
                crate::Direction::Backwards => {
                    let mut events: Vec<RecordedEvent> = wanted.collect();
                    events.reverse();
                    events.truncate(query.limit.get());
                    events
                }
            };
            Ok(query.page(events, version))
        }
    }

    /// The snapshot under `key`, if it has state version `state_version`,
    /// and the events of `streams` after the versions it covers (all of
    /// them without one), with every stream's current version: what a
    /// command with snapshots reads. Adapters that can answer in one round
    /// trip should; the default loads, then reads.
    fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
        state_version: u32,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<(Option<Snapshot>, StreamsRead), StoreError>> + Send {
        async move {
            let snapshot = self
                .load_snapshot(key)
                .await?
                .filter(|s| s.state_version == state_version);
            let read = match &snapshot {
                Some(snapshot) => self.read_streams_after(&snapshot.versions).await?,
                None => self.read_streams(streams).await?,
            };
            Ok((snapshot, read))
        }
    }
}

impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    fn read_streams(
        &self,
        stream_ids: &[StreamId],
    ) -> impl Future<Output = Result<StreamsRead, StoreError>> + Send {
        (**self).read_streams(stream_ids)
    }

    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        (**self).append(request)
    }

    fn read_all(
        &self,
        query: &ReadAllQuery,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send {
        (**self).read_all(query)
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        (**self).subscribe(query)
    }

    fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&crate::KeyPurpose>,
    ) -> impl Future<Output = Result<Option<AppendResult>, StoreError>> + Send {
        (**self).idempotent_result(key, purpose)
    }

    fn read_streams_after(
        &self,
        after: &StreamVersions,
    ) -> impl Future<Output = Result<StreamsRead, StoreError>> + Send {
        (**self).read_streams_after(after)
    }

    fn load_snapshot(
        &self,
        key: &SnapshotKey,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send {
        (**self).load_snapshot(key)
    }

    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save_snapshot(snapshot)
    }

    fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
        state_version: u32,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<(Option<Snapshot>, StreamsRead), StoreError>> + Send {
        (**self).read_from_snapshot(key, state_version, streams)
    }

    fn read_stream(
        &self,
        query: &crate::StreamQuery,
    ) -> impl Future<Output = Result<crate::StreamPage, StoreError>> + Send {
        (**self).read_stream(query)
    }
}

/// The events of a set of streams and the version each stream was at when read.
///
/// ```
/// use eventcore::{EventStore, StreamId};
/// use eventcore_memory::InMemoryEventStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let never_written = StreamId::try_new("nobody")?;
/// let read = store.read_streams(std::slice::from_ref(&never_written)).await?;
/// assert!(read.events.is_empty());
/// assert_eq!(read.version(&never_written).value(), 0); // absent streams are at version 0
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamsRead {
    /// Every event of the streams, in global order.
    pub events: Vec<RecordedEvent>,
    /// The version of every requested stream (0 for absent streams).
    pub versions: StreamVersions,
}

impl StreamsRead {
    /// The version `stream_id` was at when read; 0 if it was not part of the read or is absent.
    pub fn version(&self, stream_id: &StreamId) -> StreamVersion {
        self.versions
            .get(stream_id)
            .unwrap_or(StreamVersion::INITIAL)
    }
}

/// One stream's part of an append: its expected version and its new events (possibly none).
///
/// ```
/// use eventcore::{
///     AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent,
///     StreamAppend, StreamId, StreamVersion,
/// };
/// use eventcore_memory::InMemoryEventStore;
/// # fn event(name: &str) -> Result<NewEvent, Box<dyn std::error::Error>> {
/// #     Ok(NewEvent::from_parts(EventType::try_new(name)?, serde_json::json!({}), EventMetadata::default())?)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let (from, to) = (StreamId::try_new("account-a")?, StreamId::try_new("account-b")?);
/// // Both streams at the versions the decision was made on, or neither is written.
/// let result = store
///     .append(AppendRequest::new([
///         StreamAppend::new(from.clone(), ExpectedVersion::NoStream, vec![event("Sent")?]),
///         StreamAppend::new(to.clone(), ExpectedVersion::Exact(StreamVersion::new(0)), vec![event("Received")?]),
///     ])?)
///     .await?;
/// assert_eq!(result.versions.get(&from).map(StreamVersion::value), Some(1));
/// assert_eq!(result.versions.get(&to).map(StreamVersion::value), Some(1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream to check and write.
    pub stream_id: StreamId,
    /// The version the stream must be at for the append to happen.
    pub expected: ExpectedVersion,
    /// Events to append, in order; empty for a check-only stream.
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// Appends `events` to `stream_id` if it is at `expected`.
    pub fn new(stream_id: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream_id,
            expected,
            events,
        }
    }

    /// Writes nothing to `stream_id` but fails the whole append unless it is at `expected`.
    pub fn check_only(stream_id: StreamId, expected: ExpectedVersion) -> Self {
        Self::new(stream_id, expected, Vec::new())
    }
}

/// An append request that cannot be carried out as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAppend {
    /// No stream was listed.
    #[error("an append must list at least one stream")]
    NoStreams,
    /// The same stream was listed twice; merge its events into one entry.
    #[error("stream {stream_id} is listed more than once in one append")]
    DuplicateStream {
        /// The repeated stream.
        stream_id: StreamId,
    },
    /// An event order ([`AppendRequest::with_event_order`]) that does not
    /// name each listed stream exactly as often as it has events.
    #[error("the event order does not match the append's streams: {reason}")]
    EventOrder {
        /// What does not match.
        reason: String,
    },
}

/// A validated multi-stream append: at least one stream, each listed once.
///
/// ```
/// use eventcore::{AppendRequest, ExpectedVersion, StreamAppend, StreamId};
///
/// let a = StreamId::try_new("a")?;
/// let request = AppendRequest::new([
///     StreamAppend::new(a.clone(), ExpectedVersion::NoStream, vec![]),
///     StreamAppend::check_only(StreamId::try_new("b")?, ExpectedVersion::Any),
/// ])?;
/// assert_eq!(request.streams().len(), 2);
/// assert!(AppendRequest::new([
///     StreamAppend::check_only(a.clone(), ExpectedVersion::Any),
///     StreamAppend::check_only(a, ExpectedVersion::Any),
/// ])
/// .is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    streams: Vec<StreamAppend>,
    idempotency_key: Option<IdempotencyKey>,
    /// For each event in global order, the index of its stream; `None`:
    /// stream by stream, as listed.
    order: Option<Vec<u32>>,
    /// The longest the store may wait for a lock another session holds.
    max_lock_wait: Option<std::time::Duration>,
    /// What the idempotency key is used for.
    key_purpose: Option<crate::KeyPurpose>,
}

impl AppendRequest {
    /// Checks that at least one stream is listed and none twice.
    ///
    /// # Errors
    /// [`InvalidAppend`] saying which rule the streams break.
    pub fn new(streams: impl IntoIterator<Item = StreamAppend>) -> Result<Self, InvalidAppend> {
        let streams: Vec<StreamAppend> = streams.into_iter().collect();
        if streams.is_empty() {
            return Err(InvalidAppend::NoStreams);
        }
        let repeated = if streams.len() > crate::stream_id::COMPARE_PAIRS_UP_TO {
            let mut seen = std::collections::HashSet::with_capacity(streams.len());
            streams.iter().find(|s| !seen.insert(&s.stream_id))
        } else {
            streams.iter().enumerate().find_map(|(i, s)| {
                streams[..i]
                    .iter()
                    .any(|earlier| earlier.stream_id == s.stream_id)
                    .then_some(s)
            })
        };
        if let Some(stream) = repeated {
            return Err(InvalidAppend::DuplicateStream {
                stream_id: stream.stream_id.clone(),
            });
        }
        Ok(Self {
            streams,
            idempotency_key: None,
            order: None,
            max_lock_wait: None,
            key_purpose: None,
        })
    }

    /// An append to a single stream.
    pub fn single(stream_id: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            streams: vec![StreamAppend::new(stream_id, expected, events)],
            idempotency_key: None,
            order: None,
            max_lock_wait: None,
            key_purpose: None,
        }
    }

    /// Says what the idempotency key is used for; the store records it with
    /// the key and refuses the key for another purpose
    /// ([`StoreError::KeyReused`]). The executor sets it for every command.
    #[must_use]
    pub fn with_key_purpose(mut self, purpose: crate::KeyPurpose) -> Self {
        self.key_purpose = Some(purpose);
        self
    }

    /// What the idempotency key is used for, if said.
    pub fn key_purpose(&self) -> Option<&crate::KeyPurpose> {
        self.key_purpose.as_ref()
    }

    /// Bounds how long the store may wait for a lock another session holds
    /// (a stream row being written); past it the append fails, writing
    /// nothing, with a retryable [`StoreError::Transient`]. The executor sets
    /// it from an execution's remaining time. Stores without locks ignore it.
    #[must_use]
    pub fn with_max_lock_wait(mut self, wait: std::time::Duration) -> Self {
        self.max_lock_wait = Some(wait);
        self
    }

    /// The bound on lock waits, if any.
    pub fn max_lock_wait(&self) -> Option<std::time::Duration> {
        self.max_lock_wait
    }

    /// Gives the events a global order across streams: `order[i]` is the
    /// index (in [`streams`](Self::streams)) of the stream whose next event
    /// comes `i`-th. Each stream's own events keep their order. Without it,
    /// the events are written stream by stream, as listed.
    ///
    /// ```
    /// use eventcore::{AppendRequest, EventMetadata, EventType, ExpectedVersion, NewEvent,
    ///                 StreamAppend, StreamId};
    /// let moved = EventType::try_new("Moved")?;
    /// let event = || NewEvent::from_parts(moved.clone(), serde_json::json!({}),
    ///                                     EventMetadata::default());
    /// let request = AppendRequest::new([
    ///     StreamAppend::new(StreamId::try_new("a")?, ExpectedVersion::Any, vec![event()?]),
    ///     StreamAppend::new(StreamId::try_new("b")?, ExpectedVersion::Any, vec![event()?]),
    /// ])?
    /// .with_event_order(vec![1, 0])?; // b's event first
    /// let order: Vec<&str> = request
    ///     .events_in_order()
    ///     .map(|(i, _)| request.streams()[i].stream_id.as_ref())
    ///     .collect();
    /// assert_eq!(order, ["b", "a"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`InvalidAppend::EventOrder`] unless every stream is named exactly
    /// as often as it has events.
    pub fn with_event_order(mut self, order: Vec<usize>) -> Result<Self, InvalidAppend> {
        let mut left: Vec<usize> = self.streams.iter().map(|s| s.events.len()).collect();
        let invalid = |reason: String| InvalidAppend::EventOrder { reason };
        let mut compact = Vec::with_capacity(order.len());
        for &index in &order {
            let Some(count) = left.get_mut(index) else {
                return Err(invalid(format!("stream index {index} is not listed")));
            };
            if *count == 0 {
                return Err(invalid(format!(
                    "stream {} is named more often than it has events",
                    self.streams[index].stream_id
                )));
            }
            *count -= 1;
            compact.push(u32::try_from(index).map_err(|_| invalid("too many streams".to_owned()))?);
        }
        if let Some(index) = left.iter().position(|&n| n > 0) {
            return Err(invalid(format!(
                "stream {} has events the order does not name",
                self.streams[index].stream_id
            )));
        }
        self.order = Some(compact);
        Ok(self)
    }

    /// Whether the events have an order across streams
    /// ([`with_event_order`](Self::with_event_order)); without one they go
    /// stream by stream, as listed.
    pub fn has_event_order(&self) -> bool {
        self.order.is_some()
    }

    /// Every event with the index of its stream, in the global order the
    /// store must give them.
    pub fn events_in_order(&self) -> Box<dyn Iterator<Item = (usize, &NewEvent)> + '_> {
        let Some(order) = &self.order else {
            return Box::new(
                self.streams
                    .iter()
                    .enumerate()
                    .flat_map(|(i, s)| s.events.iter().map(move |e| (i, e))),
            );
        };
        let mut next = vec![0_usize; self.streams.len()];
        Box::new(order.iter().filter_map(move |&index| {
            let index = index as usize;
            let position = next.get_mut(index)?;
            let event = self.streams.get(index)?.events.get(*position)?;
            *position += 1;
            Some((index, event))
        }))
    }

    /// Splits the request into its streams (without their events) and the
    /// events with the index of their stream, in the global order.
    pub fn into_events_in_order(self) -> (Vec<StreamAppend>, Vec<(usize, NewEvent)>) {
        let mut streams = self.streams;
        let mut queues: Vec<std::vec::IntoIter<NewEvent>> = streams
            .iter_mut()
            .map(|s| std::mem::take(&mut s.events).into_iter())
            .collect();
        let events = match self.order {
            Some(order) => order
                .into_iter()
                .filter_map(|index| {
                    let index = index as usize;
                    Some((index, queues.get_mut(index)?.next()?))
                })
                .collect(),
            None => queues
                .iter_mut()
                .enumerate()
                .flat_map(|(index, queue)| queue.map(move |event| (index, event)))
                .collect(),
        };
        (streams, events)
    }

    /// Records `key` with this append: if an append with the same key was
    /// recorded before, the store writes nothing and returns that append's result.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    /// The idempotency key recorded with this append, if any.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        self.idempotency_key.as_ref()
    }

    /// The streams of the append, in the order given.
    pub fn streams(&self) -> &[StreamAppend] {
        &self.streams
    }

    /// Takes the streams out, for adapters.
    pub fn into_streams(self) -> Vec<StreamAppend> {
        self.streams
    }

    /// How many events the append writes in all.
    pub fn event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }
}

/// Where a newly appended event landed.
///
/// See [`AppendResult`] for an example.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrittenEvent {
    /// The id the store assigned.
    pub id: EventId,
    /// The event's stream.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub version: StreamVersion,
    /// Its place in the global order.
    pub position: GlobalPosition,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// What an append wrote.
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamId};
/// use eventcore_memory::InMemoryEventStore;
/// # fn event(name: &str) -> Result<NewEvent, Box<dyn std::error::Error>> {
/// #     Ok(NewEvent::from_parts(EventType::try_new(name)?, serde_json::json!({}), EventMetadata::default())?)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::try_new("order-7")?;
/// let result = store
///     .append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, vec![event("Placed")?, event("Paid")?]))
///     .await?;
/// assert_eq!(result.events.len(), 2);
/// assert_eq!(result.events[1].version.value(), 2);
/// assert!(result.events[0].position < result.events[1].position);
/// assert!(!result.replayed);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendResult {
    /// Every written event, in the order of the request.
    pub events: Vec<WrittenEvent>,
    /// The version of every listed stream after the append (check-only streams included).
    pub versions: StreamVersions,
    /// Whether this is the stored result of an earlier append with the same
    /// idempotency key (nothing was written this time).
    #[serde(skip)]
    pub replayed: bool,
    /// An adapter's token for the commit, which readers of a replica can
    /// wait for to see this append (PostgreSQL with read replicas: the WAL
    /// position after the commit, see `PostgresEventStore::wait_for`);
    /// `None` where a store has no replicas to wait for.
    #[serde(skip)]
    pub commit_token: Option<String>,
}

/// One stream whose version did not match what an append expected.
///
/// ```
/// use eventcore::{
///     AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StoreError,
///     StreamId,
/// };
/// use eventcore_memory::InMemoryEventStore;
/// # fn event(name: &str) -> Result<NewEvent, Box<dyn std::error::Error>> {
/// #     Ok(NewEvent::from_parts(EventType::try_new(name)?, serde_json::json!({}), EventMetadata::default())?)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::try_new("account-1")?;
/// store.append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, vec![event("Opened")?])).await?;
/// let again = store
///     .append(AppendRequest::single(stream.clone(), ExpectedVersion::NoStream, vec![event("Opened")?]))
///     .await;
/// match again {
///     Err(StoreError::Conflict { conflicts }) => {
///         assert_eq!(conflicts[0].stream_id, stream);
///         assert_eq!(conflicts[0].actual.value(), 1);
///     }
///     other => panic!("expected a conflict, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionConflict {
    /// The stream.
    pub stream_id: StreamId,
    /// What the append expected.
    pub expected: ExpectedVersion,
    /// The version the stream was actually at.
    pub actual: StreamVersion,
}

impl fmt::Display for VersionConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} expected {} but is at version {}",
            self.stream_id, self.expected, self.actual
        )
    }
}

fn list_conflicts(conflicts: &[VersionConflict]) -> String {
    let parts: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Why a store call failed.
///
/// [`StoreError::is_retryable`] tells whether re-reading and trying again can succeed.
///
/// ```
/// use eventcore::StoreError;
///
/// /// What an HTTP handler might answer for a store failure.
/// fn status_for(error: &StoreError) -> u16 {
///     match error {
///         StoreError::Conflict { .. } => 409,
///         // Written or not: a retry with the same idempotency key finds out.
///         StoreError::UnknownOutcome { .. } => 503,
///         StoreError::Unavailable { .. } | StoreError::Transient { .. } => 503,
///         _ => 500,
///     }
/// }
/// # let _ = status_for;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// One or more streams were not at the expected version; nothing was written.
    #[error("version conflict: {}", list_conflicts(.conflicts))]
    Conflict {
        /// Every stream whose check failed (empty when the database could not say which).
        conflicts: Vec<VersionConflict>,
    },
    /// A concurrent transaction got in the way (serialization failure, deadlock); nothing was written.
    #[error("transient store failure, nothing was written: {reason}")]
    Transient {
        /// What happened, in a few words.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The append may or may not have been written (for example the connection was lost during commit).
    #[error("the outcome of the append is unknown: it may or may not have been written")]
    UnknownOutcome {
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The store could not be reached; nothing was written and the caller may try again later.
    #[error("the event store is unavailable: {reason}")]
    Unavailable {
        /// What happened, in a few words.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A stored row at `position` cannot be turned into an event (its
    /// metadata, event type or stream id is not valid EventCore data; the
    /// database accepted it from a hand-written INSERT or another tool).
    /// Everything before it was delivered; readers of the global order can
    /// go on after it ([`ReadAllQuery::after`], [`Subscription::skip_past`](crate::Subscription::skip_past))
    /// or repair the row.
    #[error(
        "the stored event at position {position} cannot be read: {reason}; repair the row, \
         or skip it (ErrorPolicy::Skip, Subscription::skip_past)"
    )]
    Undecodable {
        /// The row's place in the global order.
        position: GlobalPosition,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored event could not be brought to its current shape by the
    /// store's [`Upcasters`](crate::Upcasters): one is missing or failed.
    /// Like [`StoreError::Undecodable`], everything before it was delivered
    /// and readers of the global order can go on after it
    /// ([`undecodable_position`](Self::undecodable_position)).
    #[error(transparent)]
    Upcast(Box<crate::UpcastError>),
    /// The append writes an event in a shape the store's upcasters treat as
    /// outdated (a renamed type, or a schema version upcast on every read);
    /// nothing was written.
    #[error(transparent)]
    Outdated(crate::OutdatedEvent),
    /// A projection's checkpoint was claimed by a newer leader
    /// ([`FencingToken`](crate::FencingToken)); this runner no longer leads
    /// it, and nothing was saved.
    #[error(
        "the checkpoint of projection {name} belongs to a newer leader (fence {stored}, this \
         runner's {offered}); nothing was saved"
    )]
    Fenced {
        /// The projection's name.
        name: String,
        /// The fence stored with the checkpoint.
        stored: crate::FencingToken,
        /// The fence this save offered.
        offered: crate::FencingToken,
    },
    /// The idempotency key was recorded for another purpose (another command
    /// type or other streams): nothing was written, and nothing is replayed.
    #[error(
        "idempotency key {key} was first used for {recorded}, not for {offered}: give each \
         command its own key"
    )]
    KeyReused {
        /// The key.
        key: IdempotencyKey,
        /// What it was recorded for.
        recorded: crate::KeyPurpose,
        /// What this append or lookup offered it for.
        offered: crate::KeyPurpose,
    },
    /// Any other failure of the storage backend.
    #[error("event store failure: {reason}")]
    Backend {
        /// What happened, in a few words.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// Whether re-reading the streams and deciding again may succeed (conflicts and transient failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::Transient { .. })
    }

    /// A short, stable name of the variant (`conflict`, `transient`,
    /// `unknown_outcome`, `unavailable`, `undecodable`, `upcast`,
    /// `outdated`, `fenced`, `key_reused`, `backend`): for metrics labels
    /// and the `error.type` of a span, with nothing from the data in it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conflict { .. } => "conflict",
            Self::Transient { .. } => "transient",
            Self::UnknownOutcome { .. } => "unknown_outcome",
            Self::Unavailable { .. } => "unavailable",
            Self::Undecodable { .. } => "undecodable",
            Self::Upcast(_) => "upcast",
            Self::Outdated(_) => "outdated",
            Self::Fenced { .. } => "fenced",
            Self::KeyReused { .. } => "key_reused",
            Self::Backend { .. } => "backend",
        }
    }

    /// The position of the stored row that could not be read, if this is
    /// [`StoreError::Undecodable`] or [`StoreError::Upcast`].
    pub fn undecodable_position(&self) -> Option<GlobalPosition> {
        match self {
            Self::Undecodable { position, .. } => Some(*position),
            Self::Upcast(error) => Some(error.position),
            _ => None,
        }
    }

    /// The conflicting streams, if this is a version conflict.
    pub fn conflicts(&self) -> Option<&[VersionConflict]> {
        match self {
            Self::Conflict { conflicts } => Some(conflicts),
            _ => None,
        }
    }
}

impl From<Box<crate::UpcastError>> for StoreError {
    fn from(error: Box<crate::UpcastError>) -> Self {
        Self::Upcast(error)
    }
}

/// Default page size of [`ReadAllQuery`].
pub const DEFAULT_PAGE_SIZE: NonZeroUsize = match NonZeroUsize::new(1000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// Which events to read from the global order: after a position, a page size, optionally some types only.
///
/// ```
/// use std::num::NonZeroUsize;
/// use eventcore::{EventType, GlobalPosition, ReadAllQuery};
///
/// let query = ReadAllQuery::from_start()
///     .page_size(NonZeroUsize::new(100).unwrap())
///     .event_types([EventType::try_new("MoneyDeposited")?]);
/// assert_eq!(query.after, GlobalPosition::START);
/// # Ok::<(), eventcore::InvalidEventType>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAllQuery {
    /// Read events strictly after this position.
    pub after: GlobalPosition,
    /// At most this many events per page.
    pub limit: NonZeroUsize,
    /// Only events of these types; `None` reads every type.
    pub event_types: Option<Vec<EventType>>,
}

impl ReadAllQuery {
    /// Every event from the beginning, in pages of [`DEFAULT_PAGE_SIZE`].
    pub fn from_start() -> Self {
        Self::after(GlobalPosition::START)
    }

    /// Every event strictly after `position` (a checkpoint), in pages of [`DEFAULT_PAGE_SIZE`].
    pub fn after(position: GlobalPosition) -> Self {
        Self {
            after: position,
            limit: DEFAULT_PAGE_SIZE,
            event_types: None,
        }
    }

    /// Sets the page size.
    #[must_use]
    pub fn page_size(mut self, limit: NonZeroUsize) -> Self {
        self.limit = limit;
        self
    }

    /// Reads only events of these types.
    #[must_use]
    pub fn event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.event_types = Some(types.into_iter().collect());
        self
    }

    /// Whether an event of type `event_type` passes the type filter.
    pub fn wants(&self, event_type: &EventType) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.contains(event_type))
    }
}
