//! The executor's behaviour on the memory store, with store wrappers that
//! inject conflicts, move streams between read and write, or stall.
//! Time is paused (tokio's test clock), so backoff and timeouts are exact.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use eventcore::{
    AppendRequest, AppendResult, Command, CommandExecutor, CommandLogic, CorrelationId,
    DeclaredStream, Event, EventMetadata, EventStore, ExecutionError, ExecutionOptions,
    ExpectedVersion, HandleContext, IdempotencyKey, LimitExceeded, Limits, NewEvent, ReadAllQuery,
    RecordedEvent, RetryPolicy, StoreError, StoredEvent, StreamId, StreamVersion, StreamsRead,
    Subscription, UserId, VersionConflict, Writes,
};
use eventcore_memory::InMemoryEventStore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Ev {
    Added(u32),
    Frozen,
    Points(String),
}

impl Event for Ev {
    fn event_type(&self) -> &'static str {
        match self {
            Ev::Added(_) => "Added",
            Ev::Frozen => "Frozen",
            Ev::Points(_) => "Points",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
enum Refused {
    #[error("the watched stream is frozen")]
    Frozen,
    #[error("always refused")]
    Always,
}

fn id(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

/// Adds to `target` unless the read-only `watched` stream says frozen.
#[derive(Command)]
struct Add {
    #[stream]
    target: StreamId,
    #[stream]
    watched: StreamId,
    amount: u32,
}

#[derive(Default)]
struct AddState {
    total: u32,
    frozen: bool,
}

impl CommandLogic for Add {
    type State = AddState;
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, state: &mut AddState, event: &StoredEvent<Ev>) {
        match event.payload {
            Ev::Added(n) => state.total += n,
            Ev::Frozen => state.frozen = true,
            Ev::Points(_) => {}
        }
    }

    fn handle(
        &self,
        state: AddState,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Refused> {
        if state.frozen {
            return Err(Refused::Frozen);
        }
        Ok(Writes::new().emit(self.target_stream(), Ev::Added(self.amount)))
    }
}

/// Follows the pointer stored in `index` and writes to the stream it names.
#[derive(Command)]
struct FollowPointer {
    #[stream]
    index: StreamId,
}

impl CommandLogic for FollowPointer {
    type State = Option<String>;
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, state: &mut Option<String>, event: &StoredEvent<Ev>) {
        if let Ev::Points(to) = &event.payload {
            *state = Some(to.clone());
        }
    }

    fn handle(
        &self,
        state: Option<String>,
        ctx: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Refused> {
        let Some(pointer) = state else {
            return Ok(Writes::new());
        };
        let Some(target) = ctx.discover(&id(&pointer)) else {
            return Ok(Writes::new());
        };
        Ok(Writes::new().emit(target, Ev::Added(1)))
    }
}

/// Asks for a new stream every time it is called.
#[derive(Command)]
struct Runaway {
    #[stream]
    start: StreamId,
    calls: AtomicU32,
}

impl CommandLogic for Runaway {
    type State = ();
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, _: &mut (), _: &StoredEvent<Ev>) {}

    fn handle(&self, _: (), ctx: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Refused> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        ctx.discover(&id(&format!("runaway-{n}")));
        Ok(Writes::new())
    }
}

/// Always refuses.
#[derive(Command)]
struct Refuse {
    #[stream]
    target: StreamId,
}

impl CommandLogic for Refuse {
    type State = ();
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, _: &mut (), _: &StoredEvent<Ev>) {}

    fn handle(&self, _: (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Refused> {
        Err(Refused::Always)
    }
}

/// Writes to a target it kept from an earlier execution, without reading it now.
#[derive(Command)]
struct StaleTarget {
    #[stream]
    own: StreamId,
    kept: Mutex<Option<DeclaredStream<StaleTarget>>>,
    /// Found while handling, not declared.
    #[stream(skip)]
    discover: Option<StreamId>,
}

impl CommandLogic for StaleTarget {
    type State = ();
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, _: &mut (), _: &StoredEvent<Ev>) {}

    fn handle(&self, _: (), ctx: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Refused> {
        let mut kept = self.kept.lock().unwrap();
        if let Some(stream) = &self.discover {
            let Some(target) = ctx.discover(stream) else {
                return Ok(Writes::new());
            };
            *kept = Some(target);
            return Ok(Writes::new());
        }
        let target = kept.clone().expect("a kept target");
        Ok(Writes::new().emit(target, Ev::Added(1)))
    }
}

/// A store that injects conflicts, moves a stream before the first append, or stalls reads.
#[derive(Clone, Default)]
struct Wrapped {
    inner: InMemoryEventStore,
    conflicts_to_inject: Arc<AtomicU32>,
    appends: Arc<AtomicU32>,
    reads: Arc<AtomicU32>,
    snapshot_saves: Arc<AtomicU32>,
    move_before_first_append: Arc<Mutex<Option<(StreamId, Ev)>>>,
    read_delay: Option<Duration>,
    /// Appends that are written but answered with an unknown outcome, as
    /// when the connection drops during commit.
    lost_acknowledgements: Arc<AtomicU32>,
    /// Reads (and key lookups) that fail as if the store were unreachable.
    unreachable_reads: Arc<AtomicU32>,
    /// Appends refused as if the store were unreachable (nothing written).
    unreachable_appends: Arc<AtomicU32>,
    /// Whether key lookups hang, as on a connection that never answers.
    lookups_hang: Arc<std::sync::atomic::AtomicBool>,
    /// Appends answered with an unknown outcome without being written.
    unwritten_unknowns: Arc<AtomicU32>,
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

fn unreachable() -> StoreError {
    StoreError::Unavailable {
        reason: "connection refused by the test".to_owned(),
        source: None,
    }
}

impl Wrapped {
    fn injecting(conflicts: u32) -> Self {
        let store = Self::default();
        store.conflicts_to_inject.store(conflicts, Ordering::SeqCst);
        store
    }
}

impl EventStore for Wrapped {
    async fn read_streams(&self, stream_ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.unreachable_reads) {
            return Err(unreachable());
        }
        if let Some(delay) = self.read_delay {
            tokio::time::sleep(delay).await;
        }
        self.inner.read_streams(stream_ids).await
    }

    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.unreachable_appends) {
            return Err(unreachable());
        }
        if take_one(&self.unwritten_unknowns) {
            return Err(StoreError::UnknownOutcome {
                source: "connection lost before the commit reached the server".into(),
            });
        }
        let moved = self.move_before_first_append.lock().unwrap().take();
        if let Some((stream, event)) = moved {
            let event = NewEvent::from_event(&event, EventMetadata::default()).unwrap();
            self.inner
                .append(AppendRequest::single(
                    stream,
                    ExpectedVersion::Any,
                    vec![event],
                ))
                .await?;
        }
        let inject = self
            .conflicts_to_inject
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if inject {
            let first = &request.streams()[0];
            return Err(StoreError::Conflict {
                conflicts: vec![VersionConflict {
                    stream_id: first.stream_id.clone(),
                    expected: first.expected,
                    actual: StreamVersion::new(999),
                }],
            });
        }
        let result = self.inner.append(request).await?;
        let lose = self
            .lost_acknowledgements
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lose {
            return Err(StoreError::UnknownOutcome {
                source: "connection lost during commit".into(),
            });
        }
        Ok(result)
    }

    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(query).await
    }

    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        self.inner.subscribe(query)
    }

    async fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&eventcore::KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        if self.lookups_hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if take_one(&self.unreachable_reads) {
            return Err(unreachable());
        }
        self.inner.idempotent_result(key, purpose).await
    }

    async fn read_streams_after(
        &self,
        after: &eventcore::StreamVersions,
    ) -> Result<StreamsRead, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.unreachable_reads) {
            return Err(unreachable());
        }
        self.inner.read_streams_after(after).await
    }

    async fn load_snapshot(
        &self,
        key: &eventcore::SnapshotKey,
    ) -> Result<Option<eventcore::Snapshot>, StoreError> {
        self.inner.load_snapshot(key).await
    }

    async fn save_snapshot(&self, snapshot: &eventcore::Snapshot) -> Result<(), StoreError> {
        self.snapshot_saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save_snapshot(snapshot).await
    }
}

fn add(amount: u32) -> Add {
    Add {
        target: id("target"),
        watched: id("watched"),
        amount,
    }
}

fn exact_policy() -> RetryPolicy {
    RetryPolicy::default()
        .with_base_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100))
        .with_max_attempts(5)
        .with_time_budget(None)
        .with_jitter(false)
}

#[tokio::test]
async fn writes_to_declared_streams_and_checks_every_stream_read() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone());
    let result = executor
        .execute(&add(5), ExecutionOptions::default())
        .await
        .unwrap();
    assert_eq!(result.attempts, 1);
    assert_eq!(result.events.len(), 1);
    assert_eq!(result.events[0].stream_id, id("target"));
    assert_eq!(result.events[0].version, StreamVersion::new(1));
    assert_eq!(
        result.versions.get(&id("target")),
        Some(StreamVersion::new(1))
    );
    assert_eq!(
        result.versions.get(&id("watched")),
        Some(StreamVersion::new(0)),
        "the read-only stream was part of the append"
    );
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events[0].id, result.events[0].id);
    assert_eq!(read.events[0].position, result.events[0].position);
}

#[tokio::test(start_paused = true)]
async fn injected_conflicts_are_retried_with_exponential_backoff() {
    let store = Wrapped::injecting(3);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let result = executor
        .execute(&add(1), ExecutionOptions::default())
        .await
        .unwrap();
    assert_eq!(result.attempts, 4);
    assert_eq!(store.appends.load(Ordering::SeqCst), 4);
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        4,
        "every attempt re-reads"
    );
    let backoff_ms = (result.backoff.as_secs_f64() * 1000.0).round();
    assert_eq!(backoff_ms, 70.0, "10 + 20 + 40 ms");
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events.len(), 1, "written once");
}

#[tokio::test(start_paused = true)]
async fn constant_conflicts_exhaust_the_attempts_with_a_named_error() {
    let store = Wrapped::injecting(u32::MAX);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let started = tokio::time::Instant::now();
    let error = executor
        .execute(&add(1), ExecutionOptions::default())
        .await
        .unwrap_err();
    match &error {
        ExecutionError::RetriesExhausted {
            command,
            attempts,
            conflicting_streams,
            last_error,
            outcome_unknown,
        } => {
            assert!(!outcome_unknown, "only conflicts: nothing was written");
            assert!(command.ends_with("Add"), "{command}");
            assert_eq!(*attempts, 5);
            assert_eq!(conflicting_streams, &vec![id("target")]);
            assert!(last_error.is_retryable());
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("5 attempts") && message.contains("target"),
        "{message}"
    );
    assert_eq!(store.appends.load(Ordering::SeqCst), 5);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "10+20+40+80 ms of backoff"
    );
    assert!(
        store
            .inner
            .read_streams(&[id("target")])
            .await
            .unwrap()
            .events
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn the_time_budget_stops_retries_early() {
    let store = Wrapped::injecting(u32::MAX);
    let policy = exact_policy()
        .with_max_attempts(100)
        .with_time_budget(Some(Duration::from_millis(50)));
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(policy);
    let started = tokio::time::Instant::now();
    let error = executor
        .execute(&add(1), ExecutionOptions::default())
        .await
        .unwrap_err();
    // Delays 10, 20 fit in 50 ms; the next (40) would not.
    assert!(
        matches!(error, ExecutionError::RetriesExhausted { attempts: 3, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() <= Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn per_call_policy_overrides_the_executor_policy() {
    let store = Wrapped::injecting(u32::MAX);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let options = ExecutionOptions::default().with_retry_policy(RetryPolicy::no_retries());
    let error = executor.execute(&add(1), options).await.unwrap_err();
    assert!(matches!(
        error,
        ExecutionError::RetriesExhausted { attempts: 1, .. }
    ));
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn business_errors_are_not_retried_and_write_nothing() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone());
    let error = executor
        .execute(&Refuse { target: id("t") }, ExecutionOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ExecutionError::Rejected(Refused::Always)));
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_read_only_stream_moved_before_the_write_is_retried_and_re_decided() {
    let store = Wrapped::default();
    *store.move_before_first_append.lock().unwrap() = Some((id("watched"), Ev::Frozen));
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let error = executor
        .execute(&add(3), ExecutionOptions::default())
        .await
        .unwrap_err();
    // First attempt: conflict on `watched`; second attempt sees the freeze and refuses.
    assert!(
        matches!(error, ExecutionError::Rejected(Refused::Frozen)),
        "{error:?}"
    );
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
    assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    assert!(
        store
            .inner
            .read_streams(&[id("target")])
            .await
            .unwrap()
            .events
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn the_timeout_covers_stalled_reads() {
    let store = Wrapped {
        read_delay: Some(Duration::from_secs(10)),
        ..Wrapped::default()
    };
    let executor = CommandExecutor::new(store.clone());
    let options = ExecutionOptions::default().with_timeout(Duration::from_millis(100));
    let error = executor.execute(&add(1), options).await.unwrap_err();
    match error {
        ExecutionError::Timeout {
            attempts, elapsed, ..
        } => {
            assert_eq!(attempts, 1);
            assert!(elapsed >= Duration::from_millis(100) && elapsed < Duration::from_secs(1));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_covers_backoff_between_attempts() {
    let store = Wrapped::injecting(u32::MAX);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(
        exact_policy()
            .with_max_attempts(50)
            .with_base_delay(Duration::from_millis(40)),
    );
    let options = ExecutionOptions::default().with_timeout(Duration::from_millis(100));
    let error = executor.execute(&add(1), options).await.unwrap_err();
    // 40 ms, then 80 ms would pass the 100 ms deadline.
    assert!(
        matches!(error, ExecutionError::Timeout { attempts: 2, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn discovered_streams_are_read_folded_and_version_checked() {
    let store = Wrapped::default();
    let seed =
        NewEvent::from_event(&Ev::Points("account-7".into()), EventMetadata::default()).unwrap();
    store
        .inner
        .append(AppendRequest::single(
            id("index"),
            ExpectedVersion::Any,
            vec![seed],
        ))
        .await
        .unwrap();
    let executor = CommandExecutor::new(store.clone());
    let result = executor
        .execute(
            &FollowPointer { index: id("index") },
            ExecutionOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(result.events.len(), 1);
    assert_eq!(result.events[0].stream_id, id("account-7"));
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        2,
        "one extra read round"
    );
    assert_eq!(
        result.versions.len(),
        2,
        "both streams were version-checked"
    );
}

#[tokio::test]
async fn the_discovery_round_limit_stops_runaway_commands() {
    let executor = CommandExecutor::new(Wrapped::default());
    let command = Runaway {
        start: id("start"),
        calls: AtomicU32::new(0),
    };
    let options = ExecutionOptions::default().with_max_discovery_rounds(3);
    let error = executor.execute(&command, options).await.unwrap_err();
    match error {
        ExecutionError::TooManyDiscoveryRounds {
            rounds, requested, ..
        } => {
            assert_eq!(rounds, 3);
            assert_eq!(requested, vec![id("runaway-3")]);
        }
        other => panic!("expected the discovery limit, got {other:?}"),
    }
    assert_eq!(command.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn writing_to_a_stream_not_read_in_this_execution_is_a_typed_error() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone());
    let discovering = StaleTarget {
        own: id("own"),
        kept: Mutex::new(None),
        discover: Some(id("elsewhere")),
    };
    executor
        .execute(&discovering, ExecutionOptions::default())
        .await
        .unwrap();
    let stale = StaleTarget {
        own: id("own"),
        kept: Mutex::new(discovering.kept.lock().unwrap().take()),
        discover: None,
    };
    let error = executor
        .execute(&stale, ExecutionOptions::default())
        .await
        .unwrap_err();
    match error {
        ExecutionError::UndeclaredStream { stream_id, .. } => {
            assert_eq!(stream_id, id("elsewhere"))
        }
        other => panic!("expected UndeclaredStream, got {other:?}"),
    }
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn metadata_is_stored_and_the_correlation_id_survives_retries() {
    let store = Wrapped::injecting(2);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let result = executor
        .execute(&add(1), ExecutionOptions::default())
        .await
        .unwrap();
    assert_eq!(result.attempts, 3);
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(
        read.events[0].metadata.correlation_id,
        Some(result.correlation_id)
    );

    let correlation = CorrelationId::new_v7();
    let metadata = EventMetadata::default()
        .with_correlation_id(correlation)
        .with_user_id(UserId::try_new("alice").unwrap())
        .with_entry("request", "r-1");
    let result = executor
        .execute(
            &add(2),
            ExecutionOptions::default().with_metadata(metadata.clone()),
        )
        .await
        .unwrap();
    assert_eq!(result.correlation_id, correlation);
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events[1].metadata, metadata);
}

#[tokio::test]
async fn a_command_with_no_streams_is_refused_before_any_read() {
    #[derive(Command)]
    struct Nothing {
        #[stream]
        streams: Vec<StreamId>,
    }
    impl CommandLogic for Nothing {
        type State = ();
        type Event = Ev;
        type Error = Refused;
        fn apply(&self, _: &mut (), _: &StoredEvent<Ev>) {}
        fn handle(&self, _: (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Refused> {
            Ok(Writes::new())
        }
    }
    let store = Wrapped::default();
    let error = CommandExecutor::new(store.clone())
        .execute(&Nothing { streams: vec![] }, ExecutionOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ExecutionError::NoStreams { .. }));
    assert_eq!(store.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_undecodable_event_in_a_stream_is_a_typed_error() {
    let store = Wrapped::default();
    let foreign = NewEvent::from_parts(
        eventcore::EventType::try_new("Alien").unwrap(),
        serde_json::json!({"not": "an Ev"}),
        EventMetadata::default(),
    )
    .unwrap();
    let written = store
        .inner
        .append(AppendRequest::single(
            id("target"),
            ExpectedVersion::Any,
            vec![foreign],
        ))
        .await
        .unwrap();
    let error = CommandExecutor::new(store.clone())
        .execute(&add(1), ExecutionOptions::default())
        .await
        .unwrap_err();
    match error {
        ExecutionError::Decode(decode) => assert_eq!(decode.event_id, written.events[0].id),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
}

#[test]
fn execution_futures_are_send() {
    fn assert_send<T: Send>(_: T) {}
    let executor = CommandExecutor::new(InMemoryEventStore::new());
    let command = add(1);
    assert_send(executor.execute(&command, ExecutionOptions::default()));
}

/// Writes `count` notes of `text` to `target`.
#[derive(Command)]
struct Notes {
    #[stream]
    target: StreamId,
    text: String,
    count: usize,
}

impl CommandLogic for Notes {
    type State = ();
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, _: &mut (), _: &StoredEvent<Ev>) {}

    fn handle(&self, _: (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Refused> {
        let mut writes = Writes::new();
        for _ in 0..self.count {
            writes = writes.emit(self.target_stream(), Ev::Points(self.text.clone()));
        }
        Ok(writes)
    }
}

fn notes(text: &str, count: usize) -> Notes {
    Notes {
        target: id("notes"),
        text: text.to_owned(),
        count,
    }
}

#[tokio::test]
async fn an_oversize_payload_is_refused_before_the_store() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone())
        .with_limits(Limits::default().with_max_payload_bytes(100));
    // {"Points":"..."}: 13 bytes around the text.
    executor
        .execute(&notes(&"x".repeat(87), 1), ExecutionOptions::default())
        .await
        .expect("exactly at the limit is allowed");
    let error = executor
        .execute(&notes(&"x".repeat(88), 1), ExecutionOptions::default())
        .await
        .unwrap_err();
    match error {
        ExecutionError::LimitExceeded(LimitExceeded::PayloadTooLarge {
            stream_id,
            size,
            limit,
            ..
        }) => {
            assert_eq!((stream_id, size, limit), (id("notes"), 101, 100));
        }
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        1,
        "the store saw only the first"
    );
    let read = store.inner.read_streams(&[id("notes")]).await.unwrap();
    assert_eq!(read.events.len(), 1);
}

#[tokio::test]
async fn too_many_events_in_one_append_are_refused_before_the_store() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone())
        .with_limits(Limits::default().with_max_events_per_append(3));
    executor
        .execute(&notes("n", 3), ExecutionOptions::default())
        .await
        .unwrap();
    let error = executor
        .execute(&notes("n", 4), ExecutionOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ExecutionError::LimitExceeded(LimitExceeded::TooManyEvents { count: 4, limit: 3 })
        ),
        "{error:?}"
    );
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn too_many_streams_are_refused_before_they_are_read() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone())
        .with_limits(Limits::default().with_max_streams_per_command(3));
    let command = Runaway {
        start: id("start"),
        calls: AtomicU32::new(0),
    };
    let error = executor
        .execute(&command, ExecutionOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ExecutionError::LimitExceeded(LimitExceeded::TooManyStreams { count: 4, limit: 3 })
        ),
        "{error:?}"
    );
    // Reads of 1, 2 and 3 streams; the fourth stream was never read.
    assert_eq!(store.reads.load(Ordering::SeqCst), 3);
    assert_eq!(store.appends.load(Ordering::SeqCst), 0);
}

fn key(name: &str) -> IdempotencyKey {
    IdempotencyKey::try_new(name).unwrap()
}

async fn freeze_watched(store: &Wrapped) {
    let frozen = NewEvent::from_event(&Ev::Frozen, EventMetadata::default()).unwrap();
    store
        .inner
        .append(AppendRequest::single(
            id("watched"),
            ExpectedVersion::Any,
            vec![frozen],
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_repeated_key_returns_the_first_result_without_deciding_again() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone());
    let options = || ExecutionOptions::default().with_idempotency_key(key("add-5"));
    let first = executor.execute(&add(5), options()).await.unwrap();
    assert!(!first.replayed);
    // The command would now be refused; the key's result stands.
    freeze_watched(&store).await;
    let second = executor.execute(&add(5), options()).await.unwrap();
    assert!(second.replayed);
    assert_eq!(second.events, first.events);
    assert_eq!(second.versions, first.versions);
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events.len(), 1, "written once");
    // Another key runs the command again (and now it is refused).
    let other = executor
        .execute(
            &add(5),
            ExecutionOptions::default().with_idempotency_key(key("add-5-again")),
        )
        .await;
    assert!(matches!(
        other,
        Err(ExecutionError::Rejected(Refused::Frozen))
    ));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_with_a_key_is_retried_and_found_written() {
    let store = Wrapped::default();
    store.lost_acknowledgements.store(1, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let result = executor
        .execute(
            &add(3),
            ExecutionOptions::default().with_idempotency_key(key("add-3")),
        )
        .await
        .unwrap();
    assert_eq!(result.attempts, 2);
    assert!(
        result.replayed,
        "the second attempt found the first one's result"
    );
    assert_eq!(
        store.appends.load(Ordering::SeqCst),
        1,
        "not appended twice"
    );
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].id, result.events[0].id);
}

#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_without_a_key_is_returned_to_the_caller() {
    let store = Wrapped::default();
    store.lost_acknowledgements.store(1, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let error = executor
        .execute(&add(3), ExecutionOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ExecutionError::Store {
                source: StoreError::UnknownOutcome { .. },
                ..
            }
        ),
        "{error:?}"
    );
    // It was in fact written: retrying blindly would have doubled it.
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events.len(), 1);
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
}

/// Counts the events it folds; snapshots every 1,000 events, so only the
/// state kept after appends can spare it folding.
#[derive(Command)]
struct Tally {
    #[stream]
    counter: StreamId,
    keep_after_appends: bool,
    folded: Arc<AtomicU32>,
}

impl CommandLogic for Tally {
    type State = u32;
    type Event = Ev;
    type Error = Refused;

    fn apply(&self, state: &mut u32, _: &StoredEvent<Ev>) {
        self.folded.fetch_add(1, Ordering::SeqCst);
        *state += 1;
    }

    fn handle(&self, state: u32, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Refused> {
        Ok(Writes::new().emit(self.counter_stream(), Ev::Added(state)))
    }

    fn snapshots(&self) -> Option<eventcore::SnapshotPolicy<u32>> {
        Some(
            eventcore::SnapshotPolicy::new("tally", 1)
                .every(1_000)
                .after_appends(self.keep_after_appends),
        )
    }
}

#[tokio::test]
async fn the_state_kept_after_appends_can_be_turned_off() {
    // Events folded by each of five executions on one stream.
    for (keep, expected_folds) in [(true, [0, 2, 1, 1, 1]), (false, [0, 1, 2, 3, 4])] {
        let executor = CommandExecutor::new(InMemoryEventStore::new());
        let tally = Tally {
            counter: id("tally"),
            keep_after_appends: keep,
            folded: Arc::default(),
        };
        let mut folds = Vec::new();
        for n in 0..5 {
            let before = tally.folded.load(Ordering::SeqCst);
            let result = executor
                .execute(&tally, ExecutionOptions::default())
                .await
                .unwrap();
            assert_eq!(
                result.versions.get(&tally.counter),
                Some(StreamVersion::new(n + 1))
            );
            folds.push(tally.folded.load(Ordering::SeqCst) - before);
        }
        // Kept: the first execution on streams not seen before keeps
        // nothing; the second reads the first's event and keeps the state
        // with its own; from then on each folds only its own new event.
        // Not kept: each reads and folds every earlier event.
        assert_eq!(folds, expected_folds, "keep_after_appends = {keep}");
        let (events, _) = read_all_added(executor.store(), &tally.counter).await;
        assert_eq!(
            events,
            vec![0, 1, 2, 3, 4],
            "every decision saw all events before it"
        );
    }
}

#[tokio::test]
async fn the_state_kept_for_busy_streams_outlives_many_streams_used_once() {
    let executor = CommandExecutor::new(InMemoryEventStore::new());
    let tally = |name: &str| Tally {
        counter: id(name),
        keep_after_appends: true,
        folded: Arc::default(),
    };
    let busy = tally("busy");
    for _ in 0..3 {
        executor
            .execute(&busy, ExecutionOptions::default())
            .await
            .unwrap();
    }
    // Three times as many streams as the executor keeps keys for, once each.
    for n in 0..30_000 {
        let once = tally(&format!("once-{n}"));
        executor
            .execute(&once, ExecutionOptions::default())
            .await
            .unwrap();
        assert_eq!(
            once.folded.load(Ordering::SeqCst),
            0,
            "nothing kept for {n}"
        );
    }
    let before = busy.folded.load(Ordering::SeqCst);
    executor
        .execute(&busy, ExecutionOptions::default())
        .await
        .unwrap();
    assert_eq!(
        busy.folded.load(Ordering::SeqCst) - before,
        1,
        "only its own new event: the state kept for the busy stream is still there"
    );
}

async fn read_all_added(
    store: &InMemoryEventStore,
    stream: &StreamId,
) -> (Vec<u32>, StreamVersion) {
    let read = store
        .read_streams(std::slice::from_ref(stream))
        .await
        .unwrap();
    let added = read
        .events
        .iter()
        .filter_map(|e| match e.decode::<Ev>().unwrap().payload {
            Ev::Added(n) => Some(n),
            _ => None,
        })
        .collect();
    (added, read.version(stream))
}

/// A subscriber that keeps every span field recorded, as `name=value`.
#[derive(Default, Clone)]
struct SpanFields(Arc<Mutex<Vec<String>>>);

impl tracing::field::Visit for SpanFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let recorded = format!("{}={value:?}", field.name());
        self.0.lock().unwrap().push(recorded);
    }
}

impl tracing::Subscriber for SpanFields {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut self.clone());
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut self.clone());
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn the_execution_span_names_the_command_its_streams_and_attempts() {
    let fields = SpanFields::default();
    let _subscriber = tracing::subscriber::set_default(fields.clone());
    let executor = CommandExecutor::new(InMemoryEventStore::new());
    let add = Add {
        target: id("span-target"),
        watched: id("span-watched"),
        amount: 1,
    };
    executor
        .execute(&add, ExecutionOptions::default())
        .await
        .unwrap();
    let recorded = fields.0.lock().unwrap().clone();
    assert!(
        recorded
            .iter()
            .any(|f| f.starts_with("command=") && f.ends_with("Add\"")),
        "{recorded:?}"
    );
    assert!(
        recorded.contains(&"stream_count=2".to_owned()),
        "{recorded:?}"
    );
    assert!(
        recorded.contains(&"streams=span-target, span-watched".to_owned()),
        "{recorded:?}"
    );
    assert!(
        recorded.contains(&"outcome=\"ok\"".to_owned()),
        "{recorded:?}"
    );
    assert!(recorded.contains(&"attempt=1".to_owned()), "{recorded:?}");
}

#[tokio::test]
async fn a_command_that_saves_a_snapshot_saves_it_once() {
    let store = Wrapped::default();
    let counter = id("long-tally");
    let events = (0..1_000)
        .map(|n| NewEvent::from_event(&Ev::Added(n), EventMetadata::default()).unwrap())
        .collect();
    store
        .inner
        .append(AppendRequest::single(
            counter.clone(),
            ExpectedVersion::NoStream,
            events,
        ))
        .await
        .unwrap();
    let executor = CommandExecutor::new(store.clone());
    let tally = Tally {
        counter,
        keep_after_appends: true,
        folded: Arc::default(),
    };
    executor
        .execute(&tally, ExecutionOptions::default())
        .await
        .unwrap();
    // Folding 1,000 events (the policy's `every`) saves a snapshot; the
    // state kept after the append is one event beyond it, not worth another.
    assert_eq!(store.snapshot_saves.load(Ordering::SeqCst), 1);
    assert_eq!(tally.folded.load(Ordering::SeqCst), 1_001);
}

/// Every way an execution can end after an attempt whose outcome is unknown
/// reports it as unknown, until a later attempt proves what happened; a
/// later execution with the same key finds the command written.
#[tokio::test(start_paused = true)]
async fn an_unknown_outcome_is_remembered_whatever_ends_the_execution() {
    let options = || ExecutionOptions::default().with_idempotency_key(key("remembered"));

    // No attempts left.
    let store = Wrapped::default();
    store.lost_acknowledgements.store(1, Ordering::SeqCst);
    let executor =
        CommandExecutor::new(store.clone()).with_retry_policy(exact_policy().with_max_attempts(1));
    let error = executor.execute(&add(3), options()).await.unwrap_err();
    println!("no attempts left: {error}");
    assert!(error.is_unknown_outcome(), "{error:?}");
    let again = executor.execute(&add(3), options()).await.unwrap();
    assert!(again.replayed, "the same key finds the command written");

    // The store unreachable for every retry.
    let store = Wrapped::default();
    store.lost_acknowledgements.store(1, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let command = add(3);
    let cut_after_the_append = async {
        while store.appends.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        store.unreachable_reads.store(u32::MAX, Ordering::SeqCst);
    };
    let (outcome, ()) = tokio::join!(executor.execute(&command, options()), cut_after_the_append);
    let error = outcome.unwrap_err();
    println!("store unreachable: {error}");
    assert!(error.is_unknown_outcome(), "{error:?}");
    store.unreachable_reads.store(0, Ordering::SeqCst);
    assert!(executor.execute(&add(3), options()).await.unwrap().replayed);

    // The timeout passes while the retry cannot learn anything.
    let store = Wrapped::default();
    store.lost_acknowledgements.store(1, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let hang = store.lookups_hang.clone();
    let first_lookup_done = async {
        // The first attempt's lookup runs before its append; hang from then on.
        while store.appends.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        hang.store(true, Ordering::SeqCst);
    };
    let command = add(3);
    let (outcome, ()) = tokio::join!(
        executor.execute(&command, options().with_timeout(Duration::from_secs(2))),
        first_lookup_done
    );
    let error = outcome.unwrap_err();
    println!("timeout: {error}");
    assert!(matches!(error, ExecutionError::Timeout { .. }), "{error:?}");
    assert!(error.is_unknown_outcome(), "{error:?}");
    store.lookups_hang.store(false, Ordering::SeqCst);
    assert!(executor.execute(&add(3), options()).await.unwrap().replayed);
    let read = store.inner.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events.len(), 1, "written once");
}

/// Once a retry proves the earlier attempt absent (its key is not
/// recorded), a later failure is definite again.
#[tokio::test(start_paused = true)]
async fn an_outcome_proven_absent_is_no_longer_unknown() {
    let store = Wrapped::default();
    // The first append is lost before the server saw it, as an unknown
    // outcome; the second attempt's lookup finds no key, and every append
    // after that conflicts.
    store.unwritten_unknowns.store(1, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let command = add(3);
    let executing = executor.execute(
        &command,
        ExecutionOptions::default().with_idempotency_key(key("proven")),
    );
    let conflicting = async {
        while store.appends.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        store.conflicts_to_inject.store(u32::MAX, Ordering::SeqCst);
    };
    let (outcome, ()) = tokio::join!(executing, conflicting);
    let error = outcome.unwrap_err();
    assert!(
        matches!(error, ExecutionError::RetriesExhausted { .. }),
        "{error:?}"
    );
    assert!(
        !error.is_unknown_outcome(),
        "the lookup proved the first attempt absent: {error:?}"
    );
}

/// A store that cannot be reached while the command reads is retried within
/// the policy: nothing can have been written.
#[tokio::test(start_paused = true)]
async fn an_unreachable_store_while_reading_is_retried() {
    let store = Wrapped::default();
    store.unreachable_reads.store(2, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let result = executor
        .execute(&add(3), ExecutionOptions::default())
        .await
        .unwrap();
    assert_eq!(result.attempts, 3);

    // Past the policy's attempts, the last error says what happened.
    store.unreachable_reads.store(u32::MAX, Ordering::SeqCst);
    let error = executor
        .execute(&add(3), ExecutionOptions::default())
        .await
        .unwrap_err();
    let ExecutionError::RetriesExhausted {
        attempts,
        last_error,
        ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(*attempts, 5);
    assert!(matches!(last_error, StoreError::Unavailable { .. }));
    assert!(!error.is_unknown_outcome());
}

/// Unavailable from an append without a key is returned at once: the caller decides.
#[tokio::test(start_paused = true)]
async fn an_unreachable_store_during_an_append_without_a_key_is_returned_at_once() {
    let store = Wrapped::default();
    store.unreachable_appends.store(1, Ordering::SeqCst);
    let executor = CommandExecutor::new(store.clone()).with_retry_policy(exact_policy());
    let error = executor
        .execute(&add(3), ExecutionOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ExecutionError::Store {
                source: StoreError::Unavailable { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
}

/// A key reused by another command (another type, or the same type on
/// other streams) is refused, not answered with the first command's result.
#[tokio::test]
async fn a_key_reused_by_another_command_is_refused() {
    let store = Wrapped::default();
    let executor = CommandExecutor::new(store.clone());
    let options = || ExecutionOptions::default().with_idempotency_key(key("request-1"));
    executor.execute(&add(3), options()).await.unwrap();

    let other_type = FollowPointer { index: id("index") };
    let other_streams = Add {
        target: id("elsewhere"),
        watched: id("watched"),
        amount: 3,
    };
    for error in [
        executor.execute(&other_type, options()).await.unwrap_err(),
        executor
            .execute(&other_streams, options())
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(
                &error,
                ExecutionError::Store {
                    source: StoreError::KeyReused { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.is_unknown_outcome());
        println!("{error}");
    }
    let read = store
        .inner
        .read_streams(&[id("elsewhere"), id("index")])
        .await
        .unwrap();
    assert!(
        read.events.is_empty(),
        "nothing written for the other commands"
    );
    assert!(executor.execute(&add(3), options()).await.unwrap().replayed);
}

/// Keys are kept for the retention period: a retry within it replays; once
/// it has passed (and a newer key was recorded) the command runs again.
#[tokio::test]
async fn idempotency_keys_expire_after_the_retention_period() {
    let retention = Duration::from_millis(200);
    let store = InMemoryEventStore::new().with_idempotency_retention(retention);
    let executor = CommandExecutor::new(store.clone());
    let options = |name| ExecutionOptions::default().with_idempotency_key(key(name));
    executor.execute(&add(1), options("old")).await.unwrap();
    assert!(
        executor
            .execute(&add(1), options("old"))
            .await
            .unwrap()
            .replayed
    );
    tokio::time::sleep(retention * 2).await;
    // Recording another key purges the expired one.
    executor.execute(&add(1), options("new")).await.unwrap();
    let again = executor.execute(&add(1), options("old")).await.unwrap();
    assert!(!again.replayed, "an expired key runs the command again");
    let read = store.read_streams(&[id("target")]).await.unwrap();
    assert_eq!(read.events.len(), 3);
}
