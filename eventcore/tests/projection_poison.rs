//! A runner meets a stored row that cannot be read, on the memory store
//! (which cannot hold such a row itself: a wrapper plays the database that
//! returns one). Every error policy applies to it as to a refused event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    AppendNotifier, AppendRequest, AppendResult, CheckpointStore, ErrorPolicy, EventMetadata,
    EventStore, EventType, ExpectedVersion, GlobalPosition, IdempotencyKey, NewEvent, Projection,
    ProjectionError, ProjectionOptions, ProjectionRunner, ProjectionState, ReadAllQuery,
    RecordedEvent, RetryPolicy, Snapshot, SnapshotKey, StoreError, StreamId, StreamsRead,
    Subscription,
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The memory store, except that the event at `poison` cannot be read
/// (until `heal`), as a row with foreign metadata in a database would be.
#[derive(Debug, Clone)]
struct Poisoned {
    inner: InMemoryEventStore,
    poison: Arc<Mutex<Option<GlobalPosition>>>,
}

impl Poisoned {
    fn poison(&self) -> Option<GlobalPosition> {
        *self.poison.lock().unwrap()
    }
}

/// Wakes subscriptions every few milliseconds: the wrapper has no append signal of its own.
struct Polling;

impl AppendNotifier for Polling {
    fn mark_seen(&mut self) {}
    async fn appended(&mut self) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl EventStore for Poisoned {
    async fn read_streams(&self, ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        self.inner.read_streams(ids).await
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        self.inner.append(request).await
    }
    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut page = self.inner.read_all(query).await?;
        let Some(poison) = self.poison() else {
            return Ok(page);
        };
        match page.iter().position(|e| e.position == poison) {
            Some(0) => Err(StoreError::Undecodable {
                position: poison,
                reason: "metadata of the planted row is not EventCore metadata".to_owned(),
            }),
            Some(at) => {
                page.truncate(at);
                Ok(page)
            }
            None => Ok(page),
        }
    }
    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        Subscription::follow(self.clone(), query, Polling)
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
        self.inner.read_streams_after(after).await
    }
    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_snapshot(key).await
    }
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
}

/// Six events; the fourth (n = 3) is the poisoned one.
async fn store_with_poison() -> Poisoned {
    let inner = InMemoryEventStore::new();
    let mut positions = Vec::new();
    for n in 0..6 {
        let event = NewEvent::from_parts(
            EventType::try_new("Counted").unwrap(),
            json!({ "n": n }),
            EventMetadata::default(),
        )
        .unwrap();
        let written = inner
            .append(AppendRequest::single(
                StreamId::try_new("counted").unwrap(),
                ExpectedVersion::Any,
                vec![event],
            ))
            .await
            .unwrap();
        positions.push(written.events[0].position);
    }
    Poisoned {
        inner,
        poison: Arc::new(Mutex::new(Some(positions[3]))),
    }
}

#[derive(Debug)]
struct Counting(Arc<Mutex<Vec<u64>>>);

impl Projection for Counting {
    type Error = Infallible;
    fn name(&self) -> &str {
        "counting"
    }
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Infallible> {
        let n = event.payload.to_value().unwrap()["n"].as_u64().unwrap();
        self.0.lock().unwrap().push(n);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), Infallible> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

#[tokio::test]
async fn stop_fails_at_the_unreadable_event_after_the_good_ones_before_it() {
    let store = store_with_poison().await;
    let checkpoints = InMemoryCheckpointStore::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle =
        ProjectionRunner::new(store.clone(), Counting(seen.clone()), checkpoints.clone()).start();
    let error = tokio::time::timeout(WAIT, handle.join())
        .await
        .unwrap()
        .unwrap_err();
    let ProjectionError::Unreadable { position, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(Some(*position), store.poison());
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
    let saved = checkpoints.load("counting").await.unwrap().unwrap();
    assert_eq!(saved.state, ProjectionState::Failed);
    assert_eq!(saved.events_processed, 3);
    assert!(
        saved
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot be read") && e.contains(&position.to_string())),
        "{saved:?}"
    );
}

#[tokio::test]
async fn skip_records_the_unreadable_event_and_goes_on() {
    let store = store_with_poison().await;
    let checkpoints = InMemoryCheckpointStore::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle = ProjectionRunner::new(store.clone(), Counting(seen.clone()), checkpoints.clone())
        .with_options(ProjectionOptions::default().on_error(ErrorPolicy::Skip))
        .start();
    let status = tokio::time::timeout(WAIT, handle.wait_for(|s| s.events_processed >= 5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.events_skipped, 1);
    assert!(status.last_error.is_some());
    handle.stop().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 4, 5]);
    let saved = checkpoints.load("counting").await.unwrap().unwrap();
    assert!(saved.last_error.is_some(), "last_error is always set");
}

#[tokio::test]
async fn retry_reads_the_event_again_and_applies_it_once_readable() {
    let store = store_with_poison().await;
    let checkpoints = InMemoryCheckpointStore::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let policy = RetryPolicy::default()
        .with_max_attempts(1000)
        .with_base_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
        .with_time_budget(None);
    let handle = ProjectionRunner::new(store.clone(), Counting(seen.clone()), checkpoints.clone())
        .with_options(ProjectionOptions::default().on_error(ErrorPolicy::Retry(policy)))
        .start();
    let stuck = tokio::time::timeout(WAIT, handle.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stuck.events_processed, 3, "the good events first");
    assert_eq!(stuck.state, ProjectionState::Running, "still retrying");
    // The operator repairs the row.
    *store.poison.lock().unwrap() = None;
    tokio::time::timeout(WAIT, handle.wait_for(|s| s.events_processed >= 6))
        .await
        .unwrap()
        .unwrap();
    handle.stop().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn retry_gives_up_when_its_attempts_run_out() {
    let store = store_with_poison().await;
    let policy = RetryPolicy::default()
        .with_max_attempts(3)
        .with_base_delay(Duration::from_millis(1));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle = ProjectionRunner::new(
        store.clone(),
        Counting(seen.clone()),
        InMemoryCheckpointStore::new(),
    )
    .with_options(ProjectionOptions::default().on_error(ErrorPolicy::Retry(policy)))
    .start();
    let error = tokio::time::timeout(WAIT, handle.join())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, ProjectionError::Unreadable { .. }),
        "{error:?}"
    );
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
}

#[tokio::test]
async fn a_subscription_goes_on_after_being_told_to_skip() {
    let store = store_with_poison().await;
    let mut subscription = store.subscribe(ReadAllQuery::from_start());
    let mut delivered = Vec::new();
    let poison = loop {
        match tokio::time::timeout(WAIT, subscription.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Ok(event) => delivered.push(event.payload.to_value().unwrap()["n"].as_u64().unwrap()),
            Err(error) => break error.undecodable_position().unwrap(),
        }
    };
    // Without the skip it reports the same row again.
    let again = tokio::time::timeout(WAIT, subscription.next_event())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(again.undecodable_position(), Some(poison));
    subscription.skip_past(poison);
    for _ in 0..2 {
        let event = tokio::time::timeout(WAIT, subscription.next_event())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        delivered.push(event.payload.to_value().unwrap()["n"].as_u64().unwrap());
    }
    assert_eq!(delivered, [0, 1, 2, 4, 5]);
    assert!(subscription.is_caught_up());
}

/// A name that no checkpoint store can keep (NUL, control characters,
/// nothing) ends the runner at once with a typed error, before it touches a store.
#[tokio::test]
async fn a_projection_name_that_cannot_be_stored_is_refused_at_start() {
    #[derive(Debug)]
    struct Named(&'static str);
    impl Projection for Named {
        type Error = Infallible;
        fn name(&self) -> &str {
            self.0
        }
        async fn apply(&mut self, _: &RecordedEvent) -> Result<(), Infallible> {
            Ok(())
        }
        async fn reset(&mut self) -> Result<(), Infallible> {
            Ok(())
        }
    }
    for name in ["with\0nul", "", "line\nbreak", "\u{1b}[31mred"] {
        let checkpoints = InMemoryCheckpointStore::new();
        let handle =
            ProjectionRunner::new(InMemoryEventStore::new(), Named(name), checkpoints.clone())
                .start();
        let error = tokio::time::timeout(WAIT, handle.join())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(error, ProjectionError::InvalidName { .. }),
            "{name:?}: {error:?}"
        );
        assert!(
            checkpoints.list().await.unwrap().is_empty(),
            "nothing saved"
        );
    }
}
