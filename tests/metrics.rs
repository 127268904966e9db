//! The metrics a scripted run records, counted exactly, on both stores: a
//! store wrapper forces conflicts, a transient failure, a stuck read (a
//! timeout) and a lost commit (an unknown outcome); a command refuses once;
//! a snapshotting command runs twice; a projection skips one event. Every
//! metric name of `eventcore::telemetry` must appear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use eventcore::{
    CheckpointStore, CommandExecutor, CommandLogic, CommandStreams, ErrorPolicy, Event,
    EventMetadata, EventStore, ExecutionOptions, NewEvent, Projection, ProjectionOptions,
    ProjectionRunner, ProjectionState, ReadAllQuery, RecordedEvent, RetryPolicy, SnapshotPolicy,
    StoredEvent, StreamId, Writes, telemetry,
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_tests::scripted::Scripted;
use metrics_util::{
    MetricKind,
    debugging::{DebugValue, DebuggingRecorder},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Event)]
enum Tick {
    Ticked { n: u64 },
}

/// Appends one tick to its stream, or refuses when told to.
struct TickOnce {
    stream: StreamId,
    refuse: bool,
    snapshots: bool,
}

impl CommandStreams for TickOnce {
    fn declared_streams(&self) -> Vec<StreamId> {
        vec![self.stream.clone()]
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

impl CommandLogic for TickOnce {
    type State = u64;
    type Event = Tick;
    type Error = Refused;

    fn apply(&self, state: &mut u64, _: &StoredEvent<Tick>) {
        *state += 1;
    }

    fn handle(
        &self,
        state: u64,
        _: &mut eventcore::HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Refused> {
        if self.refuse {
            return Err(Refused);
        }
        let stream = eventcore::__private::declared(&self.stream);
        Ok(Writes::new().emit(stream, Tick::Ticked { n: state + 1 }))
    }

    fn snapshots(&self) -> Option<SnapshotPolicy<u64>> {
        self.snapshots
            .then(|| SnapshotPolicy::new("ticks", 1).every(1))
    }
}

/// Counts events and refuses the first one of the `lost-` stream.
struct Counter {
    applied: Arc<AtomicU32>,
}

impl Projection for Counter {
    type Error = Refused;

    fn name(&self) -> &str {
        "metrics-counter"
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Refused> {
        if event.stream_id.as_ref().starts_with("lost-") {
            return Err(Refused);
        }
        self.applied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), Refused> {
        Ok(())
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

/// Runs the script on `store` and returns the metrics recorded, by name
/// and labels, and the number of events the store holds.
async fn script<S, K>(store: S, checkpoints: K) -> (Vec<Sample>, usize)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let store = Scripted::new(store, || {
        NewEvent::from_event(&Tick::Ticked { n: 0 }, EventMetadata::default()).unwrap()
    });
    let executor = CommandExecutor::new(store.clone());
    let fast = RetryPolicy::default()
        .with_base_delay(Duration::from_millis(1))
        .with_max_attempts(3);
    let options = || ExecutionOptions::default().with_retry_policy(fast);
    let run = |name: &str, refuse: bool, snapshots: bool| TickOnce {
        stream: stream(name),
        refuse,
        snapshots,
    };
    for n in 0..3 {
        executor
            .execute(&run(&format!("plain-{n}"), false, false), options())
            .await
            .unwrap();
    }
    let once = executor
        .execute(&run("conflict-once-1", false, false), options())
        .await
        .unwrap();
    assert_eq!(once.attempts, 2);
    let transient = executor
        .execute(&run("transient-once-1", false, false), options())
        .await
        .unwrap();
    assert_eq!(transient.attempts, 2);
    let exhausted = executor
        .execute(&run("conflict-always-1", false, false), options())
        .await;
    assert!(
        matches!(
            exhausted,
            Err(eventcore::ExecutionError::RetriesExhausted { attempts: 3, .. })
        ),
        "{exhausted:?}"
    );
    let rejected = executor
        .execute(&run("plain-0", true, false), options())
        .await;
    assert!(matches!(
        rejected,
        Err(eventcore::ExecutionError::Rejected(_))
    ));
    let timed_out = executor
        .execute(
            &run("stuck-1", false, false),
            options().with_timeout(Duration::from_millis(50)),
        )
        .await;
    assert!(
        matches!(timed_out, Err(eventcore::ExecutionError::Timeout { .. })),
        "{timed_out:?}"
    );
    let lost = executor
        .execute(&run("lost-1", false, false), options())
        .await;
    assert!(
        lost.as_ref().is_err_and(|e| e.is_unknown_outcome()),
        "{lost:?}"
    );
    for _ in 0..3 {
        executor
            .execute(&run("snapshotted-1", false, true), options())
            .await
            .unwrap();
    }

    let stored = store
        .read_all(&ReadAllQuery::from_start())
        .await
        .unwrap()
        .len();
    let applied = Arc::new(AtomicU32::new(0));
    let counter = Counter {
        applied: Arc::clone(&applied),
    };
    let handle = ProjectionRunner::new(store.clone(), counter, checkpoints)
        .with_options(
            ProjectionOptions::default()
                .on_error(ErrorPolicy::Skip)
                .checkpoint_every_events(1),
        )
        .start();
    let expected = u64::try_from(stored).unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        handle.wait_for(|s| s.events_processed + s.events_skipped >= expected),
    )
    .await
    .expect("the projection applies every stored event")
    .expect("the projection runs");
    assert_eq!(handle.lag(&store, None).await.unwrap(), 0);
    handle.stop().await.unwrap();
    (samples(), stored)
}

/// One recorded metric: kind, name, labels and value.
#[derive(Debug)]
struct Sample {
    kind: MetricKind,
    name: String,
    labels: BTreeMap<String, String>,
    value: DebugValue,
}

thread_local! {
    static SNAPSHOTTER: std::cell::RefCell<Option<metrics_util::debugging::Snapshotter>> =
        const { std::cell::RefCell::new(None) };
}

fn samples() -> Vec<Sample> {
    let snapshot = SNAPSHOTTER.with(|s| s.borrow().as_ref().unwrap().snapshot());
    snapshot
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let kind = key.kind();
            let key = key.key();
            Sample {
                kind,
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value,
            }
        })
        .collect()
}

/// The counter `name` with exactly `labels`, 0 if never recorded.
fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> u64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .filter(|s| s.kind == MetricKind::Counter && s.name == name && s.labels == wanted)
        .map(|s| match s.value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// How many values the histogram `name` holds, over every label set
/// matching `labels`.
fn observations(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> usize {
    samples
        .iter()
        .filter(|s| s.kind == MetricKind::Histogram && s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| match &s.value {
            DebugValue::Histogram(values) => values.len(),
            _ => 0,
        })
        .sum()
}

fn gauge(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.kind == MetricKind::Gauge
                && s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .and_then(|s| match s.value {
            DebugValue::Gauge(v) => Some(v.into_inner()),
            _ => None,
        })
}

/// Runs the script under a debugging recorder of this thread only, on a
/// runtime of this thread, and checks what it counted.
fn check<S, K, F, Fut>(what: &str, make: F, adapter_metrics: &[&str])
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
    F: FnOnce() -> Fut,
    Fut: Future<Output = (S, K)>,
{
    let recorder = DebuggingRecorder::new();
    SNAPSHOTTER.with(|s| *s.borrow_mut() = Some(recorder.snapshotter()));
    let _local = metrics::set_default_local_recorder(&recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (samples, stored) = runtime.block_on(async {
        let (store, checkpoints) = make().await;
        script(store, checkpoints).await
    });
    let command = std::any::type_name::<TickOnce>();
    let commands = |outcome| {
        counter(
            &samples,
            telemetry::COMMANDS_TOTAL,
            &[("command", command), ("outcome", outcome)],
        )
    };
    let counted: Vec<(&str, u64)> = [
        "ok",
        "rejected",
        "conflict_exhausted",
        "timeout",
        "unknown_outcome",
    ]
    .into_iter()
    .map(|outcome| (outcome, commands(outcome)))
    .collect();
    println!("{what}: commands by outcome {counted:?}, {stored} events stored");
    // 3 plain, the conflicted one, the transient one, 3 snapshotted.
    assert_eq!(commands("ok"), 8, "{what}");
    assert_eq!(commands("rejected"), 1, "{what}");
    assert_eq!(commands("conflict_exhausted"), 1, "{what}");
    assert_eq!(commands("timeout"), 1, "{what}");
    assert_eq!(commands("unknown_outcome"), 1, "{what}");
    assert_eq!(commands("error"), 0, "{what}");
    let by_command = [("command", command)];
    // One conflict on the first try of `conflict-once`, three on `conflict-always`.
    assert_eq!(
        counter(&samples, telemetry::COMMAND_CONFLICTS_TOTAL, &by_command),
        4,
        "{what}"
    );
    assert_eq!(
        counter(
            &samples,
            telemetry::COMMAND_TRANSIENT_FAILURES_TOTAL,
            &by_command
        ),
        1,
        "{what}"
    );
    // Retries: one each for conflict-once and transient-once, two for conflict-always.
    assert_eq!(
        observations(&samples, telemetry::COMMAND_BACKOFF_SECONDS, &by_command),
        4,
        "{what}"
    );
    assert_eq!(
        observations(&samples, telemetry::COMMAND_ATTEMPTS, &by_command),
        12,
        "{what}"
    );
    assert_eq!(
        observations(&samples, telemetry::COMMAND_DURATION_SECONDS, &by_command),
        12,
        "{what}"
    );
    // The ok commands' events, one each; the lost commit's is not known to be written.
    assert_eq!(
        counter(&samples, telemetry::EVENTS_WRITTEN_TOTAL, &by_command),
        8,
        "{what}"
    );
    assert!(
        counter(&samples, telemetry::BYTES_WRITTEN_TOTAL, &by_command) > 7 * 10,
        "{what}"
    );
    // The snapshotting command: a key is cached once seen twice, so two
    // misses, then the snapshot its second execution left.
    assert_eq!(
        counter(&samples, telemetry::SNAPSHOT_CACHE_MISSES_TOTAL, &[]),
        2,
        "{what}"
    );
    assert_eq!(
        counter(&samples, telemetry::SNAPSHOT_CACHE_HITS_TOTAL, &[]),
        1,
        "{what}"
    );
    assert!(gauge(&samples, telemetry::SNAPSHOT_CACHE_BYTES, &[]).is_some_and(|b| b > 0.0));
    // 9 appends reached the store (conflicts and the transient failure excluded) plus
    // 4 competing writes; one event, the lost commit's, is refused by the projection.
    assert_eq!(stored, 13, "{what}");
    let projection = [("projection", "metrics-counter")];
    assert_eq!(
        counter(&samples, telemetry::PROJECTION_EVENTS_TOTAL, &projection),
        12,
        "{what}"
    );
    assert_eq!(
        counter(
            &samples,
            telemetry::PROJECTION_ERRORS_TOTAL,
            &[
                ("projection", "metrics-counter"),
                ("policy_outcome", "skipped")
            ]
        ),
        1,
        "{what}"
    );
    assert!(
        observations(
            &samples,
            telemetry::PROJECTION_BATCH_DURATION_SECONDS,
            &projection
        ) >= 1
    );
    assert_eq!(
        gauge(
            &samples,
            telemetry::PROJECTION_STATE,
            &[
                ("projection", "metrics-counter"),
                ("state", ProjectionState::Stopped.as_str())
            ]
        ),
        Some(1.0),
        "{what}"
    );
    assert_eq!(
        gauge(
            &samples,
            telemetry::PROJECTION_STATE,
            &[
                ("projection", "metrics-counter"),
                ("state", ProjectionState::Running.as_str())
            ]
        ),
        Some(0.0),
        "{what}"
    );
    assert!(
        gauge(
            &samples,
            telemetry::PROJECTION_CHECKPOINT_SAVED_TIMESTAMP_SECONDS,
            &projection
        )
        .is_some_and(|t| t > 1.7e9),
        "{what}"
    );
    assert_eq!(
        gauge(&samples, telemetry::PROJECTION_LAG_EVENTS, &projection),
        Some(0.0),
        "{what}"
    );
    for operation in [
        "read_streams",
        "read_from_snapshot",
        "append",
        "save_snapshot",
        "read_all",
    ] {
        assert!(
            observations(
                &samples,
                telemetry::STORE_OPERATION_DURATION_SECONDS,
                &[("operation", operation)]
            ) > 0,
            "{what}: {operation}"
        );
    }
    for name in telemetry::ALL.iter().chain(adapter_metrics) {
        assert!(
            samples.iter().any(|s| s.name == *name),
            "{what}: {name} was never recorded"
        );
    }
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(
                !value.contains("plain-") && !value.contains("conflict-"),
                "{what}: a stream id in a label: {sample:?}"
            );
        }
    }
}

#[test]
fn a_scripted_run_is_counted_exactly_on_the_memory_store() {
    check(
        "memory",
        || async { (InMemoryEventStore::new(), InMemoryCheckpointStore::new()) },
        &[],
    );
}

#[test]
fn a_scripted_run_is_counted_exactly_on_postgres() {
    check(
        "postgres",
        || async {
            let store = eventcore_postgres::testing::fresh_store()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // A lease taken and given back: its connection is counted.
            let leadership = store.leadership(Duration::from_secs(1));
            let lease = eventcore::Leadership::acquire(&leadership, "metrics-lease")
                .await
                .unwrap();
            drop(lease);
            // The watermark measures what old transactions hold back.
            store.watermark().await.unwrap();
            // A subscription that has caught up listens: wait for its
            // connection to be counted.
            let mut subscription = store.subscribe(ReadAllQuery::from_start());
            let listening = |samples: &[Sample]| {
                samples
                    .iter()
                    .any(|s| s.name == eventcore_postgres::telemetry::LISTENER_CONNECTIONS)
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !listening(&samples()) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no listener connection"
                );
                let _ = tokio::time::timeout(
                    Duration::from_millis(50),
                    futures::StreamExt::next(&mut subscription),
                )
                .await;
            }
            drop(subscription);
            let checkpoints = store.checkpoints();
            (store, checkpoints)
        },
        // Group commit is off in this run, whose appends come one at a time
        // (its metrics are checked in eventcore-postgres/tests/group_commit.rs).
        &eventcore_postgres::telemetry::ALL[..6],
    );
}
