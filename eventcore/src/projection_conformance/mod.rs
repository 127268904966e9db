//! The behaviour every store and checkpoint store must show under a
//! [`ProjectionRunner`], as a reusable test suite (feature `conformance`).
//!
//! Run every case as a `#[test]` with
//! [`projection_conformance_tests!`](crate::projection_conformance_tests),
//! giving it a factory that returns a future of a fresh, empty event store
//! and a checkpoint store that belongs to it.
//!
//! ```text
//! eventcore::projection_conformance_tests!(|| async {
//!     (MyStore::fresh().await, MyCheckpoints::fresh().await)
//! });
//! ```
// A test suite reports failure by panicking; nothing here runs in production.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    AppendRequest, CheckpointStore, ErrorPolicy, EventId, EventMetadata, EventStore, EventType,
    ExpectedVersion, NewEvent, Projection, ProjectionError, ProjectionHandle, ProjectionOptions,
    ProjectionRunner, ProjectionState, ProjectionStatus, RecordedEvent, RetryPolicy, StreamId,
    conformance::TestEvent,
};

mod faults;

pub use faults::{
    a_newer_leader_fences_out_the_old_one, a_runner_that_lost_its_lease_applies_nothing_more,
    a_runner_waits_out_a_checkpoint_store_outage,
    an_operator_steers_a_projection_through_the_checkpoint_store,
};

/// How long a case waits for a runner to reach a state before failing.
pub const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Generates one `#[test]` per projection case, each on fresh stores from `$factory`.
#[macro_export]
macro_rules! projection_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__projection_cases!(
            $factory;
            catches_up_then_follows_live_appends,
            a_crash_reapplies_only_what_followed_the_saved_checkpoint,
            a_graceful_stop_saves_the_checkpoint_and_a_restart_continues,
            rebuild_from_zero_gives_the_same_read_model,
            pause_holds_events_until_resume,
            the_stop_policy_fails_before_the_bad_event,
            the_skip_policy_records_the_error_and_goes_on,
            the_retry_policy_applies_after_transient_failures,
            the_event_type_filter_delivers_only_wanted_types,
            lag_counts_the_events_not_yet_applied,
            a_newer_leader_fences_out_the_old_one,
            a_runner_waits_out_a_checkpoint_store_outage,
            a_runner_that_lost_its_lease_applies_nothing_more,
            an_operator_steers_a_projection_through_the_checkpoint_store,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __projection_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run($factory, |(store, checkpoints)| {
                    $crate::projection_conformance::$case(store, checkpoints)
                });
            }
        )*
    };
}

/// A durable read model the suite's projection writes: which events it saw,
/// how often `apply` ran, and the markers in order. Survives the runner.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<LedgerState>>);

/// What a [`Ledger`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerState {
    /// Markers of the events applied, in order, each once (apply is idempotent by event id).
    pub markers: Vec<u64>,
    /// The ids of the events applied.
    pub seen: BTreeSet<EventId>,
    /// How many times `apply` ran successfully, repeats included.
    pub applications: u64,
}

impl Ledger {
    /// A copy of what the ledger holds now.
    pub fn snapshot(&self) -> LedgerState {
        self.0.lock().unwrap().clone()
    }
}

/// The error the suite's projection fails with.
#[derive(Debug, thiserror::Error)]
#[error("refused marker {0}")]
pub struct Refused(u64);

/// The suite's projection: records events in a [`Ledger`], idempotently.
#[derive(Debug)]
pub struct Recorder {
    name: String,
    ledger: Ledger,
    poison: Option<u64>,
    failures_left: u32,
    types: Option<Vec<EventType>>,
}

impl Recorder {
    fn new(ledger: &Ledger) -> Self {
        Self {
            name: "conformance-recorder".to_owned(),
            ledger: ledger.clone(),
            poison: None,
            failures_left: 0,
            types: None,
        }
    }

    /// Refuses the event with this marker (`failures` times, or always with `u32::MAX`).
    fn refusing(mut self, marker: u64, failures: u32) -> Self {
        self.poison = Some(marker);
        self.failures_left = failures;
        self
    }
}

impl Projection for Recorder {
    type Error = Refused;

    fn name(&self) -> &str {
        &self.name
    }

    fn event_types(&self) -> Option<Vec<EventType>> {
        self.types.clone()
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Refused> {
        let decoded = event
            .decode::<TestEvent>()
            .expect("the suite's events decode");
        let marker = decoded.payload.marker();
        if self.poison == Some(marker) && self.failures_left > 0 {
            self.failures_left = self.failures_left.saturating_sub(1);
            return Err(Refused(marker));
        }
        let mut ledger = self.ledger.0.lock().unwrap();
        ledger.applications += 1;
        if ledger.seen.insert(event.id) {
            ledger.markers.push(marker);
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), Refused> {
        *self.ledger.0.lock().unwrap() = LedgerState::default();
        Ok(())
    }
}

fn created(marker: u64) -> NewEvent {
    NewEvent::from_event(&TestEvent::Created { marker }, EventMetadata::default()).unwrap()
}

fn noted(marker: u64) -> NewEvent {
    let event = TestEvent::Noted {
        marker,
        text: String::new(),
    };
    NewEvent::from_event(&event, EventMetadata::default()).unwrap()
}

/// Appends events with `markers`, one append per event, spread over three streams.
async fn append_markers<S: EventStore>(store: &S, markers: impl IntoIterator<Item = u64>) {
    for marker in markers {
        let stream = StreamId::try_new(format!("projected-{}", marker % 3)).unwrap();
        store
            .append(AppendRequest::single(
                stream,
                ExpectedVersion::Any,
                vec![created(marker)],
            ))
            .await
            .unwrap();
    }
}

/// A runner of a fresh [`Recorder`] writing to `ledger`.
fn recording<S, K>(store: &S, ledger: &Ledger, checkpoints: &K) -> ProjectionRunner<S, Recorder, K>
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    ProjectionRunner::new(store.clone(), Recorder::new(ledger), checkpoints.clone())
}

/// No time-based checkpoints: only the event count and stops save.
fn by_count(events: u64) -> ProjectionOptions {
    ProjectionOptions::default()
        .checkpoint_every_events(events)
        .checkpoint_interval(Duration::from_secs(3600))
}

async fn wait_until<P>(
    handle: &ProjectionHandle<P>,
    what: &str,
    condition: impl FnMut(&ProjectionStatus) -> bool,
) -> ProjectionStatus {
    match tokio::time::timeout(WAIT_LIMIT, handle.wait_for(condition)).await {
        Ok(Ok(status)) => status,
        Ok(Err(last)) => panic!("the runner ended before {what}: {last:?}"),
        Err(_) => panic!("timed out waiting for {what}: {:?}", handle.status()),
    }
}

async fn processed<P>(handle: &ProjectionHandle<P>, n: u64) -> ProjectionStatus {
    wait_until(handle, &format!("{n} events processed"), |s| {
        s.events_processed >= n
    })
    .await
}

/// Catch-up over stored events, then live ones, in global order, each once.
pub async fn catches_up_then_follows_live_appends<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..250).await;
    let ledger = Ledger::default();
    let handle = recording(&store, &ledger, &checkpoints)
        .with_options(by_count(100))
        .start();
    processed(&handle, 250).await;
    append_markers(&store, 250..300).await;
    let status = processed(&handle, 300).await;
    assert_eq!(status.state, ProjectionState::Running);
    handle.stop().await.unwrap();
    let state = ledger.snapshot();
    assert_eq!(state.markers, (0..300).collect::<Vec<_>>());
    assert_eq!(state.applications, 300, "each event applied once");
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.events_processed, 300);
    assert_eq!(saved.state, ProjectionState::Stopped);
    assert_eq!(saved.position, status.position);
}

/// Killed without a graceful stop: the restart applies again exactly the
/// events after the last saved checkpoint; with an idempotent read model the
/// result equals a run without the crash.
pub async fn a_crash_reapplies_only_what_followed_the_saved_checkpoint<S, K>(
    store: S,
    checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..35).await;
    let ledger = Ledger::default();
    let handle = recording(&store, &ledger, &checkpoints)
        .with_options(by_count(10))
        .start();
    processed(&handle, 35).await;
    handle.abort();
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.events_processed, 30, "checkpoints at 10, 20, 30");

    let handle = recording(&store, &ledger, &checkpoints)
        .with_options(by_count(10))
        .start();
    processed(&handle, 35).await;
    append_markers(&store, 35..40).await;
    processed(&handle, 40).await;
    handle.stop().await.unwrap();
    let state = ledger.snapshot();
    assert_eq!(state.markers, (0..40).collect::<Vec<_>>());
    assert_eq!(
        state.applications, 45,
        "events 31 to 35 applied twice, no other"
    );
}

/// A graceful stop saves the position; a new runner goes on from there.
pub async fn a_graceful_stop_saves_the_checkpoint_and_a_restart_continues<S, K>(
    store: S,
    checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..7).await;
    let ledger = Ledger::default();
    let handle = recording(&store, &ledger, &checkpoints)
        .with_options(by_count(1000))
        .start();
    processed(&handle, 7).await;
    handle.stop().await.unwrap();
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (saved.events_processed, saved.state),
        (7, ProjectionState::Stopped)
    );

    append_markers(&store, 7..10).await;
    let handle = recording(&store, &ledger, &checkpoints)
        .with_options(by_count(1000))
        .start();
    processed(&handle, 10).await;
    handle.stop().await.unwrap();
    let state = ledger.snapshot();
    assert_eq!(state.markers, (0..10).collect::<Vec<_>>());
    assert_eq!(
        state.applications, 10,
        "nothing applied twice after a graceful stop"
    );
}

/// Rebuilding resets the read model and applies everything again.
pub async fn rebuild_from_zero_gives_the_same_read_model<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..20).await;
    let ledger = Ledger::default();
    let handle = recording(&store, &ledger, &checkpoints).start();
    processed(&handle, 20).await;
    handle.stop().await.unwrap();
    let before = ledger.snapshot();

    let handle = recording(&store, &ledger, &checkpoints)
        .rebuild_from_zero()
        .start();
    processed(&handle, 20).await;
    wait_until(&handle, "the rebuild caught up with the head", |s| {
        s.state == ProjectionState::Running
    })
    .await;
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        saved.state,
        ProjectionState::Running,
        "saved once caught up"
    );
    handle.stop().await.unwrap();
    let after = ledger.snapshot();
    assert_eq!(after.markers, before.markers);
    assert_eq!(after.seen, before.seen);
    assert_eq!(
        after.applications, 20,
        "the reset cleared the read model first"
    );
}

/// While paused, nothing is applied; resume picks up where it paused.
pub async fn pause_holds_events_until_resume<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..5).await;
    let ledger = Ledger::default();
    let handle = recording(&store, &ledger, &checkpoints).start();
    processed(&handle, 5).await;
    handle.pause();
    wait_until(&handle, "paused", |s| s.state == ProjectionState::Paused).await;
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (saved.state, saved.events_processed),
        (ProjectionState::Paused, 5)
    );
    append_markers(&store, 5..8).await;
    assert_eq!(ledger.snapshot().applications, 5, "applied while paused");
    handle.resume();
    processed(&handle, 8).await;
    handle.stop().await.unwrap();
    assert_eq!(ledger.snapshot().markers, (0..8).collect::<Vec<_>>());
}

/// The default policy stops at a failing event, with the checkpoint before it.
pub async fn the_stop_policy_fails_before_the_bad_event<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..10).await;
    let ledger = Ledger::default();
    let recorder = Recorder::new(&ledger).refusing(6, u32::MAX);
    let handle = ProjectionRunner::new(store.clone(), recorder, checkpoints.clone()).start();
    let failed = match tokio::time::timeout(WAIT_LIMIT, handle.wait_for(|s| s.state.is_terminal()))
        .await
        .expect("the runner stops on the error")
    {
        Ok(status) | Err(status) => status,
    };
    assert_eq!(failed.state, ProjectionState::Failed, "{failed:?}");
    assert!(failed.last_error.is_some(), "{failed:?}");
    let error = tokio::time::timeout(WAIT_LIMIT, handle.join())
        .await
        .expect("the runner stops on the error")
        .unwrap_err();
    assert!(matches!(error, ProjectionError::Apply { .. }), "{error:?}");
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.state, ProjectionState::Failed);
    assert_eq!(saved.events_processed, 6);
    assert_eq!(saved.last_error.as_deref(), Some("refused marker 6"));
    assert_eq!(ledger.snapshot().markers, (0..6).collect::<Vec<_>>());

    // Fixed and restarted, it goes on from the failing event.
    let handle = recording(&store, &ledger, &checkpoints).start();
    processed(&handle, 10).await;
    handle.stop().await.unwrap();
    assert_eq!(ledger.snapshot().markers, (0..10).collect::<Vec<_>>());
}

/// The skip policy records the failure and applies the rest.
pub async fn the_skip_policy_records_the_error_and_goes_on<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..10).await;
    let ledger = Ledger::default();
    let recorder = Recorder::new(&ledger).refusing(3, u32::MAX);
    let handle = ProjectionRunner::new(store.clone(), recorder, checkpoints.clone())
        .with_options(ProjectionOptions::default().on_error(ErrorPolicy::Skip))
        .start();
    let status = processed(&handle, 9).await;
    assert_eq!(status.events_skipped, 1);
    assert_eq!(status.last_error.as_deref(), Some("refused marker 3"));
    handle.stop().await.unwrap();
    let markers = ledger.snapshot().markers;
    assert_eq!(markers, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    let saved = checkpoints
        .load("conformance-recorder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.last_error.as_deref(), Some("refused marker 3"));
}

/// The retry policy tries the failing event again until it applies.
pub async fn the_retry_policy_applies_after_transient_failures<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..5).await;
    let ledger = Ledger::default();
    let recorder = Recorder::new(&ledger).refusing(2, 3);
    let policy = RetryPolicy::default()
        .with_base_delay(Duration::from_millis(1))
        .with_max_attempts(5);
    let handle = ProjectionRunner::new(store.clone(), recorder, checkpoints.clone())
        .with_options(ProjectionOptions::default().on_error(ErrorPolicy::Retry(policy)))
        .start();
    processed(&handle, 5).await;
    handle.stop().await.unwrap();
    assert_eq!(ledger.snapshot().markers, (0..5).collect::<Vec<_>>());
}

/// A projection that wants some types gets only those.
pub async fn the_event_type_filter_delivers_only_wanted_types<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let stream = StreamId::try_new("mixed").unwrap();
    let events = (0..10)
        .map(|m| if m % 2 == 0 { created(m) } else { noted(m) })
        .collect();
    store
        .append(AppendRequest::single(stream, ExpectedVersion::Any, events))
        .await
        .unwrap();
    let ledger = Ledger::default();
    let mut recorder = Recorder::new(&ledger);
    recorder.types = Some(vec![EventType::try_new("conformance.Noted").unwrap()]);
    let handle = ProjectionRunner::new(store.clone(), recorder, checkpoints.clone()).start();
    processed(&handle, 5).await;
    handle.stop().await.unwrap();
    assert_eq!(ledger.snapshot().markers, [1, 3, 5, 7, 9]);
}

/// `lag` counts what the runner has not applied yet.
pub async fn lag_counts_the_events_not_yet_applied<S, K>(store: S, checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    append_markers(&store, 0..4).await;
    let ledger = Ledger::default();
    let handle = recording(&store, &ledger, &checkpoints).start();
    processed(&handle, 4).await;
    assert_eq!(handle.lag(&store, None).await.unwrap(), 0);
    handle.pause();
    wait_until(&handle, "paused", |s| s.state == ProjectionState::Paused).await;
    append_markers(&store, 4..10).await;
    assert_eq!(handle.lag(&store, None).await.unwrap(), 6);
    handle.resume();
    processed(&handle, 10).await;
    assert_eq!(handle.lag(&store, None).await.unwrap(), 0);
    handle.stop().await.unwrap();
}

/// Two runners of one projection name under `leadership`: only the leader
/// applies; when it stops, the standby takes over from its checkpoint; when
/// the new leader dies, a third takes over. Not in the macro: adapters call
/// it with their own [`Leadership`](crate::Leadership).
pub async fn one_leader_per_projection_name<S, K, L>(store: S, checkpoints: K, leadership: L)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
    L: crate::Leadership + Clone,
{
    append_markers(&store, 0..5).await;
    let (first, second, third) = (Ledger::default(), Ledger::default(), Ledger::default());
    let start = |ledger: &Ledger| {
        ProjectionRunner::new(store.clone(), Recorder::new(ledger), checkpoints.clone())
            .with_leadership(leadership.clone())
            .start()
    };
    let leader = start(&first);
    processed(&leader, 5).await;
    let standby = start(&second);
    append_markers(&store, 5..8).await;
    processed(&leader, 8).await;
    assert_eq!(standby.status().state, ProjectionState::Standby);
    assert_eq!(
        second.snapshot().applications,
        0,
        "the standby applied events"
    );

    let stopped_at = tokio::time::Instant::now();
    leader.stop().await.unwrap();
    wait_until(&standby, "the standby takes over", |s| {
        s.state == ProjectionState::Running
    })
    .await;
    let takeover = stopped_at.elapsed();
    append_markers(&store, 8..10).await;
    processed(&standby, 10).await;
    assert_eq!(
        second.snapshot().markers,
        [8, 9],
        "the new leader continues from the old leader's checkpoint"
    );

    let third_runner = start(&third);
    assert_eq!(third_runner.status().state, ProjectionState::Standby);
    standby.abort();
    wait_until(&third_runner, "a takeover after a crash", |s| {
        s.state == ProjectionState::Running
    })
    .await;
    processed(&third_runner, 10).await;
    third_runner.stop().await.unwrap();
    assert_eq!(first.snapshot().markers, (0..8).collect::<Vec<_>>());
    assert!(
        third.snapshot().markers.iter().all(|m| (8..10).contains(m)),
        "after the crash only events since the last checkpoint are applied again"
    );
    println!(
        "takeover after a graceful stop: {} ms",
        takeover.as_millis()
    );
}
