//! A store decorator that counts what the store answered.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use eventcore::{
    AppendRequest, AppendResult, EventStore, IdempotencyKey, ReadAllQuery, RecordedEvent, Snapshot,
    SnapshotKey, StoreError, StreamId, StreamsRead, Subscription,
};

/// Counts of store answers since the counters were made or last taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    /// `read_streams` calls.
    pub reads: u64,
    /// `append` calls.
    pub appends: u64,
    /// Appends refused because a stream had moved.
    pub conflicts: u64,
    /// Appends that failed as a serialization failure or deadlock with no
    /// stream having moved (`StoreError::Transient`).
    pub serialization_failures: u64,
    /// Any other store error.
    pub other_errors: u64,
    /// Snapshot loads and saves.
    pub snapshot_calls: u64,
}

#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    appends: AtomicU64,
    conflicts: AtomicU64,
    serialization_failures: AtomicU64,
    other_errors: AtomicU64,
    snapshot_calls: AtomicU64,
}

/// Wraps a store and counts its answers; clones share the counts.
///
/// ```
/// use eventcore_benchmarks::counting::CountingStore;
/// use eventcore_memory::InMemoryEventStore;
///
/// let store = CountingStore::new(InMemoryEventStore::new());
/// assert_eq!(store.take().appends, 0);
/// ```
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> CountingStore<S> {
    /// Counts the answers of `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The counts so far, resetting them to zero.
    pub fn take(&self) -> StoreCounts {
        let c = &self.counters;
        StoreCounts {
            reads: c.reads.swap(0, Ordering::Relaxed),
            appends: c.appends.swap(0, Ordering::Relaxed),
            conflicts: c.conflicts.swap(0, Ordering::Relaxed),
            serialization_failures: c.serialization_failures.swap(0, Ordering::Relaxed),
            other_errors: c.other_errors.swap(0, Ordering::Relaxed),
            snapshot_calls: c.snapshot_calls.swap(0, Ordering::Relaxed),
        }
    }

    fn count_error(&self, error: &StoreError) {
        let counter = match error {
            StoreError::Conflict { .. } => &self.counters.conflicts,
            StoreError::Transient { .. } => &self.counters.serialization_failures,
            _ => &self.counters.other_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl<S: EventStore> EventStore for CountingStore<S> {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let read = self.inner.read_streams(stream_ids).await;
        if let Err(error) = &read {
            self.count_error(error);
        }
        read
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.append(request).await;
        if let Err(error) = &result {
            self.count_error(error);
        }
        result
    }

    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(query).await
    }

    async fn read_stream(
        &self,
        query: &eventcore::StreamQuery,
    ) -> Result<eventcore::StreamPage, StoreError> {
        self.inner.read_stream(query).await
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        self.inner.subscribe(query)
    }

    async fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&eventcore::KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        self.inner.idempotent_result(key, purpose).await
    }

    async fn read_streams_after(
        &self,
        after: &eventcore::StreamVersions,
    ) -> Result<StreamsRead, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let read = self.inner.read_streams_after(after).await;
        if let Err(error) = &read {
            self.count_error(error);
        }
        read
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        self.counters.snapshot_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.load_snapshot(key).await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.counters.snapshot_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.save_snapshot(snapshot).await
    }

    async fn read_from_snapshot(
        &self,
        key: &SnapshotKey,
        state_version: u32,
        streams: &[StreamId],
    ) -> Result<(Option<Snapshot>, StreamsRead), StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let read = self
            .inner
            .read_from_snapshot(key, state_version, streams)
            .await;
        if let Err(error) = &read {
            self.count_error(error);
        }
        read
    }
}
