//! The in-memory store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use eventcore::archive::{ArchivedEvent, BatchError, ImportProblem, ImportTarget, ImportedBatch};
use eventcore::{
    AppendRequest, AppendResult, DEFAULT_IDEMPOTENCY_RETENTION, Direction, EventId, EventStore,
    GlobalPosition, IdempotencyKey, KeyPurpose, NewEvent, ReadAllQuery, RecordedEvent, Snapshot,
    SnapshotKey, StoreError, StreamId, StreamPage, StreamQuery, StreamVersion, StreamVersions,
    StreamsRead, Subscription, Upcasters, VersionConflict, WrittenEvent,
};
use smallvec::SmallVec;
use tokio::sync::watch;
use uuid::{ContextV7, Timestamp, Uuid};

/// An event store held in memory; clones share the same events.
///
/// All state sits behind one mutex that is never held across an `.await`,
/// so every call is atomic and linearizable.
///
/// It keeps events as checked values, not rows, so it never holds one that
/// cannot be read back: [`StoreError::Undecodable`](eventcore::StoreError::Undecodable)
/// comes only from adapters over a database someone can write to by hand.
/// Test a runner's handling of such rows with a wrapping store that yields
/// the error (as `eventcore`'s own tests do).
///
/// ```
/// use eventcore::{
///     AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent,
///     ReadAllQuery, StreamId, StreamQuery,
/// };
/// use eventcore_memory::InMemoryEventStore;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let store = InMemoryEventStore::new();
/// let clone = store.clone(); // the same events
/// let counted = EventType::try_new("Counted")?;
/// let event = |n: u32| {
///     NewEvent::from_parts(counted.clone(), serde_json::json!({ "n": n }), EventMetadata::default())
/// };
/// let counter = StreamId::try_new("counter-1")?;
/// store
///     .append(AppendRequest::single(counter.clone(), ExpectedVersion::NoStream, vec![event(1)?, event(2)?]))
///     .await?;
/// // A second writer that expected an empty stream is refused.
/// let late = AppendRequest::single(counter.clone(), ExpectedVersion::NoStream, vec![event(3)?]);
/// assert!(clone.append(late).await.is_err());
/// assert_eq!(clone.read_all(&ReadAllQuery::from_start()).await?.len(), 2);
/// let last = clone.read_stream(&StreamQuery::last(counter, 1.try_into()?)).await?;
/// assert_eq!(last.events[0].version.value(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct InMemoryEventStore {
    shared: Arc<Shared>,
    /// What every read brings old events through; none by default.
    upcasters: Upcasters,
}

#[derive(Debug)]
struct Shared {
    log: Mutex<Log>,
    /// Carries the number of stored events; subscriptions wait on it.
    head: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Log {
    /// Every event in global order; an event's index is its sequence minus one.
    /// Shared so that readers copy pointers under the lock and events after it.
    events: Vec<Arc<RecordedEvent>>,
    /// For every stream, the indexes of its events in `events`, in version
    /// order. foldhash: several lookups per command, each cheaper than with
    /// SipHash, still seeded at random per map.
    streams: HashMap<StreamId, Vec<usize>, foldhash::quality::RandomState>,
    appends: u64,
    /// The result of every append that carried an idempotency key, still
    /// within the retention period.
    idempotent: HashMap<IdempotencyKey, RecordedKey>,
    /// The recorded keys, oldest first, for purging expired ones.
    key_ages: std::collections::VecDeque<(Instant, IdempotencyKey)>,
    /// How long keys are kept; `None` until set: the default.
    key_retention: Option<Duration>,
    /// The snapshot reaching furthest under each key.
    snapshots: HashMap<SnapshotKey, Snapshot>,
    ids: EventIds,
    /// Where each event is in `events`, by id: built for imports only (an
    /// append needs no lookup by id), up to `indexed` events.
    by_id: HashMap<EventId, usize, foldhash::quality::RandomState>,
    indexed: usize,
}

/// An idempotency key's record: the result it replays, what it was used for, when.
#[derive(Debug)]
struct RecordedKey {
    result: AppendResult,
    purpose: Option<KeyPurpose>,
    at: Instant,
}

/// Keeps the ids of events written in the same millisecond in write order.
#[derive(Debug)]
struct EventIds(ContextV7);

impl Default for EventIds {
    fn default() -> Self {
        Self(ContextV7::new())
    }
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                log: Mutex::new(Log::default()),
                head: watch::Sender::new(0),
            }),
            upcasters: Upcasters::none(),
        }
    }

    /// Reads stored events through `upcasters`, so every reader sees them
    /// in their current shape, and refuses appends of outdated shapes (see
    /// [`eventcore::upcast`]).
    ///
    /// The upcasters belong to this handle and the clones made from it
    /// afterwards; an earlier clone shares the events but reads them as
    /// stored.
    ///
    /// ```
    /// use eventcore::{
    ///     AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent,
    ///     StreamId, Upcasters,
    /// };
    /// use eventcore_memory::InMemoryEventStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let upcasters = Upcasters::builder().rename("AccountCredited", "Deposited").build()?;
    /// let store = InMemoryEventStore::new().with_upcasters(upcasters);
    /// let stream = StreamId::try_new("account-1")?;
    /// let old = NewEvent::from_parts(
    ///     EventType::try_new("AccountCredited")?,
    ///     serde_json::json!({ "cents": 5 }),
    ///     EventMetadata::default(),
    /// )?;
    /// let append = AppendRequest::single(stream.clone(), ExpectedVersion::Any, vec![old]);
    ///
    /// // This code no longer writes the old name...
    /// assert!(store.append(append.clone()).await.is_err());
    /// // ...but what older code wrote is read under the new one.
    /// store.without_upcasters().append(append).await?;
    /// let read = store.read_streams(&[stream]).await?;
    /// assert_eq!(read.events[0].event_type.as_ref(), "Deposited");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// A handle on the same events that reads them as stored (no upcasters):
    /// for tools and tests that need the stored shapes.
    #[must_use]
    pub fn without_upcasters(&self) -> Self {
        self.clone().with_upcasters(Upcasters::none())
    }

    /// Keeps idempotency keys for `retention` instead of
    /// [`DEFAULT_IDEMPOTENCY_RETENTION`] (24 hours): a retry within it finds
    /// its key; older keys are purged as new ones are recorded.
    #[must_use]
    pub fn with_idempotency_retention(self, retention: Duration) -> Self {
        self.log().key_retention = Some(retention);
        self
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while the lock was held cannot leave the log half-written:
        // appends check everything before they change anything.
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Log {
    fn version(&self, stream_id: &StreamId) -> StreamVersion {
        let len = self.streams.get(stream_id).map_or(0, Vec::len);
        StreamVersion::new(len as u64)
    }

    fn read_streams(&self, stream_ids: &[StreamId]) -> (ReadEvents, StreamVersions) {
        self.read_after(stream_ids.iter().map(|id| (id, StreamVersion::INITIAL)))
    }

    fn read_streams_after(&self, after: &StreamVersions) -> (ReadEvents, StreamVersions) {
        self.read_after(after.iter())
    }

    /// Each stream's events after the version given for it, in global
    /// order, and every stream's current version; a repeated stream counts once.
    fn read_after<'a>(
        &self,
        wanted: impl Iterator<Item = (&'a StreamId, StreamVersion)>,
    ) -> (ReadEvents, StreamVersions) {
        let mut wanted = wanted.peekable();
        let first = wanted.next();
        if let (Some((stream_id, known)), None) = (first, wanted.peek()) {
            // One stream (most commands): its events are in order already.
            let indexes = self.streams.get(stream_id).map_or(&[][..], |stream| {
                let skip = usize::try_from(known.value()).unwrap_or(usize::MAX);
                &stream[skip.min(stream.len())..]
            });
            let events = self.events_at(indexes);
            let versions = StreamVersions::one(stream_id.clone(), self.version(stream_id));
            return (events, versions);
        }
        // In stream order, each stream once (the first asked): the versions
        // are then built in order, without insertions in the middle.
        let mut wanted: SmallVec<[(&StreamId, StreamVersion); 4]> =
            first.into_iter().chain(wanted).collect();
        wanted.sort_by(|a, b| a.0.cmp(b.0));
        wanted.dedup_by(|later, earlier| later.0 == earlier.0);
        let mut versions = StreamVersions::new();
        let mut indexes: Vec<usize> = Vec::new();
        for (stream_id, known) in wanted {
            versions.insert(stream_id.clone(), self.version(stream_id));
            if let Some(stream) = self.streams.get(stream_id) {
                let skip = usize::try_from(known.value()).unwrap_or(usize::MAX);
                indexes.extend(stream.iter().skip(skip).copied());
            }
        }
        indexes.sort_unstable();
        (self.events_at(&indexes), versions)
    }

    /// The events at `indexes` of the log, for a reader.
    fn events_at(&self, indexes: &[usize]) -> ReadEvents {
        if indexes.len() <= COPIED_UNDER_LOCK {
            ReadEvents::Copied(indexes.iter().map(|&i| (*self.events[i]).clone()).collect())
        } else {
            ReadEvents::Shared(
                indexes
                    .iter()
                    .map(|&i| Arc::clone(&self.events[i]))
                    .collect(),
            )
        }
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) {
        let keep_stored = self.snapshots.get(&snapshot.key).is_some_and(|stored| {
            stored.state_version == snapshot.state_version && stored.reach() >= snapshot.reach()
        });
        if !keep_stored {
            self.snapshots
                .insert(snapshot.key.clone(), snapshot.clone());
        }
    }

    /// The result recorded under `key` for `purpose`, marked as a replay.
    fn recorded(
        &mut self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        self.purge_expired_keys();
        let Some(recorded) = self.idempotent.get(key) else {
            return Ok(None);
        };
        KeyPurpose::check(key, recorded.purpose.as_ref(), purpose)?;
        Ok(Some(AppendResult {
            replayed: true,
            ..recorded.result.clone()
        }))
    }

    /// Forgets keys older than the retention period. Only those: a retry
    /// within the period always finds its key.
    fn purge_expired_keys(&mut self) {
        let retention = self.key_retention.unwrap_or(DEFAULT_IDEMPOTENCY_RETENTION);
        let now = Instant::now();
        while let Some((at, _)) = self.key_ages.front() {
            if now.saturating_duration_since(*at) <= retention {
                break;
            }
            if let Some((at, key)) = self.key_ages.pop_front()
                && self.idempotent.get(&key).is_some_and(|r| r.at == at)
            {
                self.idempotent.remove(&key);
            }
        }
    }

    fn append(&mut self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        if let Some(key) = request.idempotency_key()
            && let Some(recorded) = self.recorded(key, request.key_purpose())?
        {
            return Ok(recorded);
        }
        let key = request.idempotency_key().cloned();
        let purpose = request.key_purpose().cloned();
        let conflicts: Vec<VersionConflict> = request
            .streams()
            .iter()
            .filter_map(|stream| {
                let actual = self.version(&stream.stream_id);
                (!stream.expected.accepts(actual)).then(|| VersionConflict {
                    stream_id: stream.stream_id.clone(),
                    expected: stream.expected,
                    actual,
                })
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(StoreError::Conflict { conflicts });
        }

        self.appends += 1;
        // Microseconds, as PostgreSQL keeps them: an event reads back the
        // same from both stores, and moves between them unchanged. Event ids
        // are UUIDv7 stamped with the same reading: one per append.
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (seconds, nanos) = (since_epoch.as_secs(), since_epoch.subsec_micros() * 1_000);
        let recorded_at = i64::try_from(seconds)
            .ok()
            .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, nanos))
            .unwrap_or_default();
        let mut result = AppendResult {
            events: Vec::with_capacity(request.event_count()),
            ..AppendResult::default()
        };
        let stamp = Stamp {
            recorded_at,
            seconds,
            nanos,
        };
        if request.has_event_order() {
            let (streams, events) = request.into_events_in_order();
            for (stream_index, event) in events {
                if let Some(stream) = streams.get(stream_index) {
                    let written = self.record(&stream.stream_id, event, &stamp);
                    result.events.push(written);
                }
            }
            result.versions = streams
                .into_iter()
                .map(|stream| {
                    let version = self.version(&stream.stream_id);
                    (stream.stream_id, version)
                })
                .collect();
        } else {
            // Stream by stream, as listed: no reordering to pay for. The
            // versions are gathered, then put in stream order once.
            let events = &mut result.events;
            result.versions = request
                .into_streams()
                .into_iter()
                .map(|stream| {
                    let mut version = None;
                    for event in stream.events {
                        let written = self.record(&stream.stream_id, event, &stamp);
                        version = Some(written.version);
                        events.push(written);
                    }
                    // A written stream's version is its last event's; only
                    // a check-only stream needs a lookup.
                    let version = version.unwrap_or_else(|| self.version(&stream.stream_id));
                    (stream.stream_id, version)
                })
                .collect();
        }
        if let Some(key) = key {
            let at = Instant::now();
            self.key_ages.push_back((at, key.clone()));
            self.idempotent.insert(
                key,
                RecordedKey {
                    result: result.clone(),
                    purpose,
                    at,
                },
            );
        }
        Ok(result)
    }

    /// Stores one event of an append at the end of the log.
    fn record(&mut self, stream_id: &StreamId, event: NewEvent, stamp: &Stamp) -> WrittenEvent {
        let indexes = self.streams.entry(stream_id.clone()).or_default();
        let schema_version = event.schema_version();
        let (event_type, payload, metadata) = event.into_parts();
        let index = self.events.len();
        indexes.push(index);
        let written = WrittenEvent {
            id: EventId::from_uuid(Uuid::new_v7(Timestamp::from_unix(
                &self.ids.0,
                stamp.seconds,
                stamp.nanos,
            ))),
            stream_id: stream_id.clone(),
            version: StreamVersion::new(indexes.len() as u64),
            position: GlobalPosition::new(self.appends, index as u64 + 1),
            recorded_at: stamp.recorded_at,
        };
        self.events.push(Arc::new(RecordedEvent {
            id: written.id,
            stream_id: written.stream_id.clone(),
            version: written.version,
            position: written.position,
            recorded_at: stamp.recorded_at,
            event_type,
            schema_version,
            payload,
            metadata,
        }));
        written
    }

    /// One page of one stream as stored, and the stream's version.
    fn read_stream(&self, query: &StreamQuery) -> (Vec<Arc<RecordedEvent>>, StreamVersion) {
        let Some(indexes) = self.streams.get(&query.stream_id) else {
            return (Vec::new(), StreamVersion::INITIAL);
        };
        let len = indexes.len();
        let position = |v: StreamVersion| usize::try_from(v.value()).unwrap_or(usize::MAX);
        let selected: Box<dyn Iterator<Item = &usize>> = match query.direction {
            Direction::Forwards => {
                let start = query.from.map_or(0, |v| position(v).saturating_sub(1));
                Box::new(indexes.iter().skip(start))
            }
            Direction::Backwards => {
                let end = query.from.map_or(len, |v| position(v).min(len));
                Box::new(indexes[..end].iter().rev())
            }
        };
        let events = selected
            .map(|&i| &self.events[i])
            .filter(|e| query.wants(&e.event_type))
            .take(query.limit.get())
            .cloned()
            .collect();
        (events, StreamVersion::new(len as u64))
    }

    /// Writes archived events as they are, all or none (see
    /// [`ImportTarget::import_batch`]).
    fn import(&mut self, batch: &[ArchivedEvent]) -> Result<ImportedBatch, BatchError> {
        for (index, event) in self.events.iter().enumerate().skip(self.indexed) {
            self.by_id.insert(event.id, index);
        }
        self.indexed = self.events.len();
        // Check everything first: a refused batch changes nothing.
        let mut added: HashMap<&StreamId, u64> = HashMap::new();
        let mut new = Vec::with_capacity(batch.len());
        let mut in_batch = std::collections::HashSet::new();
        for (index, event) in batch.iter().enumerate() {
            if let Some(stored) = self.by_id.get(&event.id).map(|&i| &self.events[i]) {
                if stored.stream_id == event.stream_id && stored.version == event.version {
                    continue;
                }
                let problem = ImportProblem::IdElsewhere {
                    stream_id: stored.stream_id.clone(),
                    version: stored.version,
                };
                return Err(BatchError::Refused { index, problem });
            }
            let added = added.entry(&event.stream_id).or_default();
            let current = self.version(&event.stream_id).value() + *added;
            if event.version.value() != current + 1 || !in_batch.insert(event.id) {
                let problem = ImportProblem::VersionGap {
                    current: StreamVersion::new(current),
                };
                return Err(BatchError::Refused { index, problem });
            }
            *added += 1;
            new.push(event);
        }
        if !new.is_empty() {
            self.appends += 1;
        }
        let written = new.len() as u64;
        for event in new {
            let index = self.events.len();
            self.streams
                .entry(event.stream_id.clone())
                .or_default()
                .push(index);
            self.events.push(Arc::new(RecordedEvent {
                id: event.id,
                stream_id: event.stream_id.clone(),
                version: event.version,
                position: GlobalPosition::new(self.appends, index as u64 + 1),
                recorded_at: event.recorded_at,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                metadata: event.metadata.clone(),
            }));
        }
        Ok(ImportedBatch {
            written,
            skipped: batch.len() as u64 - written,
        })
    }

    fn read_all(&self, query: &ReadAllQuery) -> Vec<Arc<RecordedEvent>> {
        let start = self.events.partition_point(|e| e.position <= query.after);
        self.events[start..]
            .iter()
            .filter(|e| query.wants(&e.event_type))
            .take(query.limit.get())
            .cloned()
            .collect()
    }
}

/// The one clock reading an append's events share.
struct Stamp {
    recorded_at: DateTime<Utc>,
    seconds: u64,
    nanos: u32,
}

/// Copies shared events out for the caller, after the lock is released.
fn owned(events: Vec<Arc<RecordedEvent>>) -> Vec<RecordedEvent> {
    events.into_iter().map(Arc::unwrap_or_clone).collect()
}

/// Reads of at most this many events copy them while holding the lock:
/// one vector and no shared-pointer traffic, for about as long a hold as
/// copying the pointers. Longer reads copy pointers under the lock, and the
/// events after it, so that a big read does not hold up other callers.
const COPIED_UNDER_LOCK: usize = 32;

/// Events a read took from the log.
enum ReadEvents {
    Copied(Vec<RecordedEvent>),
    Shared(Vec<Arc<RecordedEvent>>),
}

impl ReadEvents {
    /// The events as the caller's own, copied if they are not yet.
    fn into_owned(self) -> Vec<RecordedEvent> {
        match self {
            Self::Copied(events) => events,
            Self::Shared(events) => owned(events),
        }
    }
}

impl EventStore for InMemoryEventStore {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        async move {
            // Every call completes at once; spending tokio's cooperative budget
            // makes a task that runs many commands in a row yield now and then,
            // as it would on a real database, instead of starving its neighbours.
            tokio::task::consume_budget().await;
            let (events, versions) = self.log().read_streams(stream_ids);
            Ok(StreamsRead {
                events: self.upcasters.upcast_all(events.into_owned())?,
                versions,
            })
        }
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        async move {
            // Like reads: a task appending back to back yields once its
            // cooperative budget is spent, so its neighbours get turns, without
            // paying for a trip through the scheduler on every append.
            tokio::task::consume_budget().await;
            self.upcasters.check_append(&request)?;
            let (result, head) = {
                let mut log = self.log();
                let result = log.append(request)?;
                (result, log.events.len() as u64)
            };
            // Subscriptions subscribe before they read, so one that starts now
            // finds these events in the log; with no receiver, waking is skipped.
            self.shared.head.send_if_modified(|stored| {
                *stored = head;
                self.shared.head.receiver_count() > 0
            });
            Ok(result)
        }
        .await
    }

    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        async move {
            self.upcasters
                .read_page(query, |stored| {
                    let events = owned(self.log().read_all(&stored));
                    async move { Ok(events) }
                })
                .await
        }
        .await
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        Subscription::follow(self.clone(), query, self.shared.head.subscribe())
    }

    async fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        async move { self.log().recorded(key, purpose) }.await
    }

    async fn read_streams_after(&self, after: &StreamVersions) -> Result<StreamsRead, StoreError> {
        async move {
            tokio::task::consume_budget().await;
            let (events, versions) = self.log().read_streams_after(after);
            Ok(StreamsRead {
                events: self.upcasters.upcast_all(events.into_owned())?,
                versions,
            })
        }
        .await
    }

    async fn read_stream(&self, query: &StreamQuery) -> Result<StreamPage, StoreError> {
        async move {
            tokio::task::consume_budget().await;
            self.upcasters
                .read_stream_page(query, |stored| {
                    let (events, version) = self.log().read_stream(&stored);
                    let page = stored.page(owned(events), version);
                    async move { Ok(page) }
                })
                .await
        }
        .await
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        async move { Ok(self.log().snapshots.get(key).cloned()) }.await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        async move {
            self.log().save_snapshot(snapshot);
            Ok(())
        }
        .await
    }
}

impl ImportTarget for InMemoryEventStore {
    async fn import_batch(&self, events: &[ArchivedEvent]) -> Result<ImportedBatch, BatchError> {
        async move {
            let (done, head) = {
                let mut log = self.log();
                let done = log.import(events)?;
                (done, log.events.len() as u64)
            };
            self.shared.head.send_if_modified(|stored| {
                let grown = *stored != head;
                *stored = head;
                grown && self.shared.head.receiver_count() > 0
            });
            Ok(done)
        }
        .await
    }
}
