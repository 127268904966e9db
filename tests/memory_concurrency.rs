//! Concurrent property test: random tasks read streams, then append with the
//! exact versions they read. Afterwards every stream's versions are
//! contiguous, every acknowledged append is present exactly once where the
//! store said it put it, every refused append wrote nothing, and every
//! acknowledged append found each stream it read (written or check-only)
//! still at the version it read: no lost updates.

use std::collections::{BTreeMap, HashMap};

use eventcore::{
    AppendRequest, EventStore, ExpectedVersion, GlobalPosition, StoreError, StreamAppend, StreamId,
    StreamVersion, StreamsRead,
};
use eventcore_memory::InMemoryEventStore;
use eventcore_tests::{marked, marker_of};
use proptest::prelude::*;

/// One step of a task: which streams it reads, and which of those it writes (bit masks).
type Step = (u8, u8);

#[derive(Debug)]
enum Outcome {
    Written {
        events: Vec<(u64, StreamId, StreamVersion, GlobalPosition)>,
        /// Every stream read, with the version it was read at.
        read: Vec<(StreamId, StreamVersion)>,
    },
    Refused(Vec<u64>),
}

fn stream_id(index: u32) -> StreamId {
    StreamId::try_new(format!("shared-{index}")).unwrap()
}

fn streams_in(mask: u8, streams: u32) -> Vec<u32> {
    (0..streams).filter(|i| mask & (1 << i) != 0).collect()
}

async fn run_task<S: EventStore + Clone>(
    store: S,
    task: u64,
    steps: Vec<Step>,
    streams: u32,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for (n, (read_mask, write_mask)) in steps.into_iter().enumerate() {
        let mut read_set = streams_in(read_mask, streams);
        if read_set.is_empty() {
            read_set.push(n as u32 % streams);
        }
        let ids: Vec<StreamId> = read_set.iter().map(|&i| stream_id(i)).collect();
        let read = store.read_streams(&ids).await.unwrap();
        // Let other tasks move the streams between this read and the append.
        tokio::task::yield_now().await;
        let mut markers = Vec::new();
        let request = ids.iter().enumerate().map(|(k, id)| {
            let writes = write_mask & (1 << k) != 0;
            let events = if writes {
                let marker = task * 1_000_000 + n as u64 * 10 + k as u64;
                markers.push(marker);
                vec![marked(marker)]
            } else {
                Vec::new()
            };
            StreamAppend::new(id.clone(), ExpectedVersion::Exact(read.version(id)), events)
        });
        let request = AppendRequest::new(request.collect::<Vec<_>>()).unwrap();
        match store.append(request).await {
            Ok(result) => outcomes.push(Outcome::Written {
                events: result
                    .events
                    .iter()
                    .zip(&markers)
                    .map(|(e, &m)| (m, e.stream_id.clone(), e.version, e.position))
                    .collect(),
                read: read.versions.into_iter().collect(),
            }),
            Err(StoreError::Conflict { conflicts }) => {
                assert!(!conflicts.is_empty());
                for conflict in &conflicts {
                    assert_ne!(read.version(&conflict.stream_id), conflict.actual);
                }
                outcomes.push(Outcome::Refused(markers));
            }
            // PostgreSQL may refuse an append for a concurrent transaction
            // without naming a stream: nothing was written either.
            Err(StoreError::Transient { .. }) => outcomes.push(Outcome::Refused(markers)),
            Err(other) => panic!("unexpected store error: {other}"),
        }
    }
    outcomes
}

/// Runs the tasks' `plans` on `store`, then reads every stream.
async fn run<S: EventStore + Clone + 'static>(
    store: S,
    plans: Vec<Vec<Step>>,
    streams: u32,
) -> (Vec<Outcome>, StreamsRead) {
    let tasks: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(task, steps)| tokio::spawn(run_task(store.clone(), task as u64, steps, streams)))
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    let ids: Vec<StreamId> = (0..streams).map(stream_id).collect();
    let read = store.read_streams(&ids).await.unwrap();
    (outcomes, read)
}

fn check(read: &StreamsRead, outcomes: Vec<Outcome>) -> Result<(), TestCaseError> {
    let mut per_stream: BTreeMap<StreamId, Vec<u64>> = BTreeMap::new();
    let mut found: HashMap<u64, (StreamId, StreamVersion, GlobalPosition)> = HashMap::new();
    for event in &read.events {
        per_stream
            .entry(event.stream_id.clone())
            .or_default()
            .push(event.version.value());
        let marker = marker_of(event).unwrap();
        let previous = found.insert(
            marker,
            (event.stream_id.clone(), event.version, event.position),
        );
        prop_assert!(previous.is_none(), "marker {} stored twice", marker);
    }
    for (id, versions) in &per_stream {
        let contiguous: Vec<u64> = (1..=versions.len() as u64).collect();
        prop_assert_eq!(versions, &contiguous, "versions of {} are contiguous", id);
        prop_assert_eq!(read.version(id).value(), versions.len() as u64);
    }
    let mut acknowledged = 0;
    for outcome in outcomes {
        match outcome {
            Outcome::Written {
                events,
                read: read_versions,
            } => {
                let Some(&(_, _, _, written_at)) = events.first() else {
                    continue;
                };
                for (stream, version) in read_versions {
                    let before = read
                        .events
                        .iter()
                        .filter(|e| e.stream_id == stream && e.position < written_at)
                        .count() as u64;
                    prop_assert_eq!(
                        before,
                        version.value(),
                        "{} moved between the read and an acknowledged append",
                        stream
                    );
                }
                for (marker, stream, version, position) in events {
                    acknowledged += 1;
                    prop_assert_eq!(found.get(&marker), Some(&(stream, version, position)));
                }
            }
            Outcome::Refused(markers) => {
                for marker in markers {
                    prop_assert!(
                        !found.contains_key(&marker),
                        "refused marker {} stored",
                        marker
                    );
                }
            }
        }
    }
    prop_assert_eq!(
        acknowledged,
        found.len(),
        "nothing stored that was not acknowledged"
    );
    Ok(())
}

fn plans() -> impl Strategy<Value = (u32, Vec<Vec<Step>>)> {
    (
        2_u32..=5,
        proptest::collection::vec(
            proptest::collection::vec((any::<u8>(), any::<u8>()), 1..40),
            2..=8,
        ),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn concurrent_exact_version_appends_lose_and_double_nothing((streams, plans) in plans()) {
        let (outcomes, read) =
            runtime().block_on(run(InMemoryEventStore::new(), plans, streams));
        check(&read, outcomes)?;
    }
}

proptest! {
    // Each case is a fresh schema on a real server: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(10))]

    /// The same property on PostgreSQL with group commit on: concurrent
    /// appends share transactions, overlapping ones never.
    #[test]
    fn with_group_commit_on_postgres_concurrent_appends_lose_and_double_nothing(
        (streams, plans) in plans()
    ) {
        let (outcomes, read) = runtime().block_on(async move {
            let config = eventcore_postgres::testing::fresh_config()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .group_commit(eventcore_postgres::GroupCommit::new());
            let store = eventcore_postgres::testing::store_with(config)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            run(store, plans, streams).await
        });
        check(&read, outcomes)?;
    }
}
