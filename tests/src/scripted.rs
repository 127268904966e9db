//! A store wrapper that injects faults into calls on streams named for
//! them, and passes everything else on: what the metrics and tracing tests
//! script their runs with.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use eventcore::{
    AppendRequest, AppendResult, EventStore, ExpectedVersion, IdempotencyKey, KeyPurpose, NewEvent,
    ReadAllQuery, RecordedEvent, Snapshot, SnapshotKey, StoreError, StreamId, StreamsRead,
    Subscription,
};

/// What the wrapper does to calls touching a stream, by its name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `conflict-once-`: another writer appends just before the first append: one conflict.
    ConflictOnce,
    /// `conflict-always-`: another writer appends before every append.
    ConflictAlways,
    /// `transient-once-`: the first append fails as a serialization failure would.
    TransientOnce,
    /// `stuck-`: reads never return.
    Stuck,
    /// `lost-`: the append is written, but its answer is lost.
    LostCommit,
}

impl Fault {
    /// The fault a stream's name asks for, if any.
    pub fn of(stream: &StreamId) -> Option<Self> {
        let name = stream.as_ref();
        [
            ("conflict-once-", Self::ConflictOnce),
            ("conflict-always-", Self::ConflictAlways),
            ("transient-once-", Self::TransientOnce),
            ("stuck-", Self::Stuck),
            ("lost-", Self::LostCommit),
        ]
        .into_iter()
        .find_map(|(prefix, fault)| name.starts_with(prefix).then_some(fault))
    }
}

/// The wrapper; the other writer's event comes from `rival`.
#[derive(Clone)]
pub struct Scripted<S> {
    inner: S,
    rival: Arc<dyn Fn() -> NewEvent + Send + Sync>,
    appends: Arc<Mutex<HashMap<StreamId, u32>>>,
}

impl<S: EventStore> Scripted<S> {
    /// Wraps `inner`; another writer appends `rival()` where a fault says so.
    pub fn new(inner: S, rival: impl Fn() -> NewEvent + Send + Sync + 'static) -> Self {
        Self {
            inner,
            rival: Arc::new(rival),
            appends: Arc::default(),
        }
    }

    async fn competing_write(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.inner
            .append(AppendRequest::single(
                stream.clone(),
                ExpectedVersion::Any,
                vec![(self.rival)()],
            ))
            .await
            .map(|_| ())
    }
}

impl<S: EventStore> EventStore for Scripted<S> {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        if stream_ids
            .iter()
            .any(|s| Fault::of(s) == Some(Fault::Stuck))
        {
            std::future::pending::<()>().await;
        }
        self.inner.read_streams(stream_ids).await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let Some(stream) = request.streams().first().map(|s| s.stream_id.clone()) else {
            return self.inner.append(request).await;
        };
        let nth = {
            let mut appends = self.appends.lock().unwrap_or_else(PoisonError::into_inner);
            let count = appends.entry(stream.clone()).or_default();
            *count += 1;
            *count
        };
        match Fault::of(&stream) {
            Some(Fault::ConflictOnce) if nth == 1 => self.competing_write(&stream).await?,
            Some(Fault::ConflictAlways) => self.competing_write(&stream).await?,
            Some(Fault::TransientOnce) if nth == 1 => {
                return Err(StoreError::Transient {
                    reason: "a serialization failure, injected".into(),
                    source: None,
                });
            }
            Some(Fault::LostCommit) => {
                self.inner.append(request).await?;
                return Err(StoreError::UnknownOutcome {
                    source: "the answer to COMMIT was lost, injected".into(),
                });
            }
            _ => {}
        }
        self.inner.append(request).await
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
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        self.inner.idempotent_result(key, purpose).await
    }

    async fn read_streams_after(
        &self,
        after: &eventcore::StreamVersions,
    ) -> Result<StreamsRead, StoreError> {
        self.inner.read_streams_after(after).await
    }

    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(key).await
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}
