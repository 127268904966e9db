//! Snapshots: kept by reach, read with what follows, and used by the executor.

use std::sync::Arc;

use super::{TestEvent, append_ok, created, markers, read_one, stream, v};
use crate::{EventStore, StreamId};

fn snapshot_at(
    key: &crate::SnapshotKey,
    state_version: u32,
    at: &[(&StreamId, u64)],
    state: serde_json::Value,
) -> crate::Snapshot {
    crate::Snapshot {
        key: key.clone(),
        state_version,
        versions: at.iter().map(|(id, n)| ((*id).clone(), v(*n))).collect(),
        state: crate::Payload::encode(&state).unwrap().unwrap(),
    }
}

/// A saved snapshot loads back equal; a save that reaches less far than the
/// stored one (same state version) is ignored, one that reaches further or
/// carries another state version replaces it; keys do not mix.
pub async fn snapshots_keep_the_one_reaching_furthest<S: EventStore>(store: S) {
    let (a, b) = (stream("snap-a"), stream("snap-b"));
    let key = crate::SnapshotKey::new("balances", &[a.clone(), b.clone()]);
    let reversed = crate::SnapshotKey::new("balances", &[b.clone(), a.clone()]);
    assert_eq!(store.load_snapshot(&key).await.unwrap(), None);

    let first = snapshot_at(&key, 1, &[(&a, 2), (&b, 1)], serde_json::json!({ "n": 3 }));
    store.save_snapshot(&first).await.unwrap();
    assert_eq!(
        store.load_snapshot(&key).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.load_snapshot(&reversed).await.unwrap(), None);

    let behind = snapshot_at(&key, 1, &[(&a, 1), (&b, 1)], serde_json::json!({ "n": 2 }));
    store.save_snapshot(&behind).await.unwrap();
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(first));

    let ahead = snapshot_at(&key, 1, &[(&a, 4), (&b, 3)], serde_json::json!({ "n": 7 }));
    store.save_snapshot(&ahead).await.unwrap();
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(ahead));

    let reshaped = snapshot_at(
        &key,
        2,
        &[(&a, 1), (&b, 0)],
        serde_json::json!(["new", "shape"]),
    );
    store.save_snapshot(&reshaped).await.unwrap();
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(reshaped));
}

/// Reading after versions returns only the later events, in global order,
/// and every listed stream's current version, also when it is below the
/// version given.
pub async fn read_streams_after_returns_only_later_events<S: EventStore>(store: S) {
    let (a, b, absent) = (stream("after-a"), stream("after-b"), stream("after-none"));
    append_ok(&store, &a, vec![created(1), created(2)]).await;
    append_ok(&store, &b, vec![created(3)]).await;
    append_ok(&store, &a, vec![created(4)]).await;
    append_ok(&store, &b, vec![created(5)]).await;

    let after = [(a.clone(), v(1)), (b.clone(), v(1)), (absent.clone(), v(0))].into();
    let read = store.read_streams_after(&after).await.unwrap();
    assert_eq!(markers(&read.events), vec![2, 4, 5]);
    assert_eq!(read.version(&a), v(3));
    assert_eq!(read.version(&b), v(2));
    assert_eq!(read.version(&absent), v(0));
    assert_eq!(read.versions.len(), 3);

    let beyond = [(a.clone(), v(9))].into();
    let read = store.read_streams_after(&beyond).await.unwrap();
    assert!(read.events.is_empty());
    assert_eq!(
        read.version(&a),
        v(3),
        "the real version, below the one given"
    );
}

/// Reading from a snapshot returns the stored snapshot of the asked state
/// version and only the events after it; without one (or of another state
/// version), every event.
pub async fn read_from_snapshot_returns_the_snapshot_and_what_follows<S: EventStore>(store: S) {
    let (a, b) = (stream("from-snap-a"), stream("from-snap-b"));
    let streams = [a.clone(), b.clone()];
    let key = crate::SnapshotKey::new("pair", &streams);
    append_ok(&store, &a, vec![created(1), created(2)]).await;
    append_ok(&store, &b, vec![created(3)]).await;

    let (none, read) = store.read_from_snapshot(&key, 1, &streams).await.unwrap();
    assert_eq!(none, None);
    assert_eq!(markers(&read.events), vec![1, 2, 3]);
    assert_eq!((read.version(&a), read.version(&b)), (v(2), v(1)));

    let saved = snapshot_at(
        &key,
        1,
        &[(&a, 1), (&b, 1)],
        serde_json::json!({ "seen": 2 }),
    );
    store.save_snapshot(&saved).await.unwrap();
    append_ok(&store, &b, vec![created(4)]).await;
    append_ok(&store, &a, vec![created(5)]).await;

    let (found, read) = store.read_from_snapshot(&key, 1, &streams).await.unwrap();
    assert_eq!(found, Some(saved));
    assert_eq!(
        markers(&read.events),
        vec![2, 4, 5],
        "only after the snapshot, in global order"
    );
    assert_eq!((read.version(&a), read.version(&b)), (v(3), v(2)));

    let (other_version, read) = store.read_from_snapshot(&key, 2, &streams).await.unwrap();
    assert_eq!(other_version, None);
    assert_eq!(markers(&read.events), vec![1, 2, 3, 4, 5]);
}

/// A counter command that records how many events its executions folded.
struct CountingCommand {
    stream: StreamId,
    folded: Arc<std::sync::atomic::AtomicU64>,
    snapshots: bool,
}

impl crate::CommandStreams for CountingCommand {
    fn declared_streams(&self) -> Vec<StreamId> {
        vec![self.stream.clone()]
    }
}

impl crate::CommandLogic for CountingCommand {
    type State = u64;
    type Event = TestEvent;
    type Error = std::convert::Infallible;

    fn apply(&self, state: &mut u64, event: &crate::StoredEvent<TestEvent>) {
        self.folded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            event.payload.marker(),
            *state,
            "events fold in version order"
        );
        *state += 1;
    }

    fn handle(
        &self,
        state: u64,
        _: &mut crate::HandleContext<'_, Self>,
    ) -> Result<crate::Writes<Self>, Self::Error> {
        let stream = crate::__private::declared(&self.stream);
        Ok(crate::Writes::new().emit(stream, TestEvent::Created { marker: state }))
    }

    fn snapshots(&self) -> Option<crate::SnapshotPolicy<u64>> {
        self.snapshots
            .then(|| crate::SnapshotPolicy::new("counting", 1).every(4))
    }
}

/// Runs the counting command `times` times; every decision must have seen
/// exactly the events before it (its marker equals its version minus one).
async fn count_up<S: EventStore>(
    executor: &crate::CommandExecutor<S>,
    command: &CountingCommand,
    times: u64,
) {
    for _ in 0..times {
        let result = executor
            .execute(command, crate::ExecutionOptions::default())
            .await
            .unwrap();
        assert_eq!(result.events.len(), 1);
    }
    let (events, version) = read_one(executor.store(), &command.stream).await;
    assert_eq!(markers(&events), (0..version.value()).collect::<Vec<_>>());
}

/// With snapshots the executor folds only the events after the newest
/// snapshot and decides exactly as without them.
pub async fn snapshots_shorten_folds_without_changing_decisions<S: EventStore>(store: S) {
    let executor = crate::CommandExecutor::new(store);
    let folded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let command = CountingCommand {
        stream: stream("snapshotted-counter"),
        folded: folded.clone(),
        snapshots: true,
    };
    count_up(&executor, &command, 40).await;
    let with_snapshots = folded.load(std::sync::atomic::Ordering::Relaxed);
    // Without snapshots: 0 + 1 + ... + 39 = 780 folds. With one every 4
    // events, each execution folds at most 4 events past the last one.
    assert!(
        with_snapshots <= 40 * 4,
        "{with_snapshots} events folded in 40 executions"
    );
    let key = crate::SnapshotKey::new("counting", std::slice::from_ref(&command.stream));
    let saved = executor
        .store()
        .load_snapshot(&key)
        .await
        .unwrap()
        .expect("a snapshot was saved");
    assert_eq!(saved.state_version, 1);
    assert!(saved.versions.get(&command.stream) >= Some(v(36)));
}

/// An executor folds its own new events into the state it decided on, so
/// its next command on the same streams reads nothing it wrote itself; what
/// another executor (another process) wrote meanwhile is still read and
/// folded, and every decision sees exactly the events before it.
pub async fn own_appends_keep_the_executors_snapshot_current<S: EventStore>(store: S) {
    use std::sync::atomic::Ordering::Relaxed;
    let store = Arc::new(store);
    let id = stream("self-current-counter");
    let counting = |folded: &Arc<std::sync::atomic::AtomicU64>| CountingCommand {
        stream: id.clone(),
        folded: folded.clone(),
        snapshots: true,
    };
    let (here_folded, there_folded) = (Arc::default(), Arc::default());
    let (here, there) = (counting(&here_folded), counting(&there_folded));
    let this_process = crate::CommandExecutor::new(store.clone());
    let other_process = crate::CommandExecutor::new(store.clone());

    count_up(&this_process, &here, 10).await;
    // One fold per execution: its own new event, never a read one.
    assert_eq!(here_folded.load(Relaxed), 10);

    count_up(&other_process, &there, 3).await;
    count_up(&this_process, &here, 5).await;
    // The 3 events written elsewhere are read and folded once, then 5 own ones.
    assert_eq!(here_folded.load(Relaxed), 10 + 3 + 5);
    let (_, version) = read_one(&store, &id).await;
    assert_eq!(version, v(18));

    // The store was given snapshots along the way (every 4 events).
    let key = crate::SnapshotKey::new("counting", std::slice::from_ref(&id));
    let saved = store
        .load_snapshot(&key)
        .await
        .unwrap()
        .expect("a snapshot was saved");
    assert!(
        saved.versions.get(&id) >= Some(v(14)),
        "stored snapshot at {:?}",
        saved.versions.get(&id)
    );
}

/// A snapshot that is undecodable, of another state version, or ahead of its
/// stream is ignored: the command folds from the start and decides right.
pub async fn unusable_snapshots_are_ignored<S: EventStore>(store: S) {
    // A fresh executor per planted snapshot: executors keep the snapshots
    // they saved in memory, and each plant must be loaded from the store.
    let store = Arc::new(store);
    let folded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let command = CountingCommand {
        stream: stream("distrusted-counter"),
        folded: folded.clone(),
        snapshots: true,
    };
    count_up(&crate::CommandExecutor::new(store.clone()), &command, 3).await;
    let key = crate::SnapshotKey::new("counting", std::slice::from_ref(&command.stream));
    let id = &command.stream;
    let planted = [
        snapshot_at(&key, 1, &[(id, 3)], serde_json::json!("not a number")),
        snapshot_at(&key, 7, &[(id, 4)], serde_json::json!(1_000)),
        snapshot_at(&key, 1, &[(id, 50)], serde_json::json!(1_000)),
    ];
    for (n, snapshot) in planted.iter().enumerate() {
        store.save_snapshot(snapshot).await.unwrap();
        let stored = store.load_snapshot(&key).await.unwrap();
        assert_eq!(stored.as_ref(), Some(snapshot), "snapshot {n} was planted");
        count_up(&crate::CommandExecutor::new(store.clone()), &command, 1).await;
        let (_, version) = read_one(&store, id).await;
        assert_eq!(version, v(4 + n as u64), "snapshot {n} was not trusted");
    }
}
