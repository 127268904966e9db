//! Running commands: read, fold, decide, append atomically, retry on conflict.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::telemetry::{Meter, Outcome};

use crate::{
    AppendRequest, AppendResult, CommandLogic, CorrelationId, DecodeError, EncodeError,
    EventMetadata, EventStore, EventType, ExpectedVersion, HandleContext, IdempotencyKey,
    KeyPurpose, LimitExceeded, Limits, NewEvent, Payload, RetryPolicy, Snapshot, SnapshotKey,
    SnapshotPolicy, StoreError, StoredEvent, StreamAppend, StreamId, StreamVersion, StreamsRead,
    VersionConflict, Writes, WrittenEvent,
    coordination::StreamLocks,
    snapshot::{Lookup, SnapshotCache},
};

/// Default limit on discovery rounds; see [`ExecutionOptions::with_max_discovery_rounds`].
pub const DEFAULT_MAX_DISCOVERY_ROUNDS: u32 = 8;

/// Per-call settings of [`CommandExecutor::execute`].
///
/// ```
/// use std::time::Duration;
/// use eventcore::{CorrelationId, EventMetadata, ExecutionOptions, RetryPolicy};
///
/// let options = ExecutionOptions::default()
///     .with_metadata(EventMetadata::default().with_correlation_id(CorrelationId::new_v7()))
///     .with_timeout(Duration::from_secs(2))
///     .with_retry_policy(RetryPolicy::no_retries());
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionOptions {
    metadata: EventMetadata,
    timeout: Option<Duration>,
    max_discovery_rounds: u32,
    retry: Option<RetryPolicy>,
    idempotency_key: Option<IdempotencyKey>,
}

impl Default for ExecutionOptions {
    fn default() -> Self {
        Self {
            metadata: EventMetadata::default(),
            timeout: None,
            max_discovery_rounds: DEFAULT_MAX_DISCOVERY_ROUNDS,
            retry: None,
            idempotency_key: None,
        }
    }
}

impl ExecutionOptions {
    /// Metadata stored with every event this execution writes. A correlation
    /// id is generated when absent, and kept the same across retries.
    #[must_use]
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// A limit on the whole execution, every attempt and backoff included.
    ///
    /// The limit is checked while reading, deciding and waiting; an append
    /// already sent to the store is allowed to finish, so that a timeout
    /// never leaves its own outcome unknown, but the time left bounds how
    /// long the append may wait for a stream row another session holds
    /// ([`AppendRequest::with_max_lock_wait`]): the execution ends in time
    /// with [`ExecutionError::Timeout`], nothing written (unless an earlier
    /// attempt's outcome was already unknown: see
    /// [`ExecutionError::is_unknown_outcome`]).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times `handle` may ask for more streams before the execution
    /// fails with [`ExecutionError::TooManyDiscoveryRounds`] (default
    /// [`DEFAULT_MAX_DISCOVERY_ROUNDS`]).
    #[must_use]
    pub fn with_max_discovery_rounds(mut self, rounds: u32) -> Self {
        self.max_discovery_rounds = rounds;
        self
    }

    /// Overrides the executor's retry policy for this call.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Runs the command at most once per `key`.
    ///
    /// The key is recorded with the events, atomically. An execution that
    /// finds its key recorded writes nothing and returns the recorded result
    /// ([`ExecutionResult::replayed`]), without deciding again. This is what
    /// makes retrying safe after [`StoreError::UnknownOutcome`] (a connection
    /// lost during commit): with a key the executor retries such an outcome
    /// itself; without one it returns it, since the command may or may not
    /// have been written.
    ///
    /// A key belongs to one command: it is recorded with the command's type
    /// and declared streams ([`KeyPurpose`]), and an execution of another
    /// command with the same key fails with [`StoreError::KeyReused`],
    /// writing nothing. Stores keep keys for a retention period (24 hours
    /// by default, [`DEFAULT_IDEMPOTENCY_RETENTION`](crate::DEFAULT_IDEMPOTENCY_RETENTION));
    /// a retry whose lookup comes within it is safe, a later one may run the
    /// command again.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// What a successful execution wrote; serializable, for an API to return
/// it or a client to keep it.
///
/// ```
/// # use std::{collections::BTreeMap, time::Duration};
/// # use eventcore::{CorrelationId, ExecutionResult};
/// let result = ExecutionResult {
///     events: Vec::new(),
///     versions: BTreeMap::new(),
///     attempts: 1,
///     backoff: Duration::ZERO,
///     correlation_id: CorrelationId::new_v7(),
///     replayed: false,
///     commit_token: None,
/// };
/// let json = serde_json::to_string(&result)?;
/// assert_eq!(serde_json::from_str::<ExecutionResult>(&json)?, result);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionResult {
    /// Every event written, with its stream, version and global position.
    pub events: Vec<WrittenEvent>,
    /// The version of every stream the command read, after the append.
    pub versions: BTreeMap<StreamId, StreamVersion>,
    /// Attempts made, the successful one included (1 means no retry).
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub backoff: Duration,
    /// The correlation id stored with the events.
    pub correlation_id: CorrelationId,
    /// Whether this is the result of an earlier execution with the same
    /// idempotency key, returned without writing anything.
    pub replayed: bool,
    /// The store's token for the commit ([`AppendResult::commit_token`]):
    /// on PostgreSQL with read replicas, what a replica reader waits for
    /// to read this write (`PostgresEventStore::wait_for`).
    #[serde(default)]
    pub commit_token: Option<String>,
}

/// Why an execution failed.
///
/// Nothing was written, unless [`is_unknown_outcome`](Self::is_unknown_outcome)
/// says otherwise: an attempt's append was lost in flight (a connection
/// dropped during commit) and nothing the execution did afterwards proved
/// whether it was written. That holds whatever variant ended the execution:
/// [`Store`](Self::Store) with [`StoreError::UnknownOutcome`], or
/// [`RetriesExhausted`](Self::RetriesExhausted), [`Timeout`](Self::Timeout)
/// or [`Store`](Self::Store) after such an attempt (their `outcome_unknown`
/// is `true`). Execute again with the same idempotency key to find out: a
/// written command is found and replayed, an unwritten one runs.
///
/// Mapping the outcome for a caller, the unknown outcome first (any variant
/// may carry it):
///
/// ```
/// use eventcore::ExecutionError;
///
/// fn http_status<E>(error: &ExecutionError<E>) -> u16 {
///     if error.is_unknown_outcome() {
///         return 503; // may be written: retry with the same idempotency key to find out
///     }
///     match error {
///         ExecutionError::Rejected(_) => 422,
///         ExecutionError::RetriesExhausted { .. } => 409,
///         ExecutionError::Timeout { .. } => 504,
///         _ => 500,
///     }
/// }
/// # let _ = http_status::<std::convert::Infallible>;
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError<E> {
    /// `handle` refused the command with a business error; never retried.
    /// Prints as the business error itself (its source is the error's own).
    #[error(transparent)]
    Rejected(E),
    /// Every attempt ran into a conflict, a transient failure or an
    /// unreachable store. Nothing was written unless `outcome_unknown`.
    #[error(
        "{command} gave up after {attempts} attempts; conflicting streams: {}{}",
        list_streams(.conflicting_streams),
        unknown_note(*.outcome_unknown)
    )]
    RetriesExhausted {
        /// The command's type name.
        command: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Every stream that was found moved, over all attempts.
        conflicting_streams: Vec<StreamId>,
        /// The last attempt's error.
        #[source]
        last_error: StoreError,
        /// An earlier attempt's append may have been written (see the type's docs).
        outcome_unknown: bool,
    },
    /// The execution's timeout passed before it could complete. Nothing was
    /// written unless `outcome_unknown`.
    #[error(
        "{command} timed out after {elapsed:?} and {attempts} attempts{}",
        unknown_note(*.outcome_unknown)
    )]
    Timeout {
        /// The command's type name.
        command: &'static str,
        /// Attempts started.
        attempts: u32,
        /// Time since the execution started.
        elapsed: Duration,
        /// An earlier attempt's append may have been written (see the type's docs).
        outcome_unknown: bool,
    },
    /// `handle` kept asking for more streams.
    #[error("{command} still asked for more streams after {rounds} discovery rounds: {}", list_streams(.requested))]
    TooManyDiscoveryRounds {
        /// The command's type name.
        command: &'static str,
        /// The configured limit.
        rounds: u32,
        /// The streams asked for in the last round.
        requested: Vec<StreamId>,
    },
    /// A write targeted a stream this execution did not read.
    #[error("{command} tried to write to stream {stream_id}, which it did not read")]
    UndeclaredStream {
        /// The command's type name.
        command: &'static str,
        /// The stream written to.
        stream_id: StreamId,
    },
    /// The command declared no stream at all (for example an empty `Vec<StreamId>` field).
    #[error("{command} declares no stream; a command must read at least one")]
    NoStreams {
        /// The command's type name.
        command: &'static str,
    },
    /// A stored event in one of the command's streams does not decode into its event type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A decided event could not be serialized.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The command went beyond one of the executor's [`Limits`]; never retried.
    #[error(transparent)]
    LimitExceeded(#[from] LimitExceeded),
    /// The store failed in a way retrying here cannot fix. Nothing was
    /// written unless the source is [`StoreError::UnknownOutcome`] or
    /// `outcome_unknown` is set.
    #[error("{command}: the event store failed{}", unknown_note(*.outcome_unknown))]
    Store {
        /// The command's type name.
        command: &'static str,
        /// The store's error; [`StoreError::UnknownOutcome`] means the
        /// append may have been written.
        #[source]
        source: StoreError,
        /// An earlier attempt's append may have been written (see the type's docs).
        outcome_unknown: bool,
    },
}

impl<E> ExecutionError<E> {
    /// A short, stable name of the variant (`rejected`,
    /// `retries_exhausted`, `timeout`, `too_many_discovery_rounds`,
    /// `undeclared_stream`, `no_streams`, `decode`, `encode`,
    /// `limit_exceeded`, `store`): for metrics and the `error.type` of a
    /// span, with nothing from the data in it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::Timeout { .. } => "timeout",
            Self::TooManyDiscoveryRounds { .. } => "too_many_discovery_rounds",
            Self::UndeclaredStream { .. } => "undeclared_stream",
            Self::NoStreams { .. } => "no_streams",
            Self::Decode(_) => "decode",
            Self::Encode(_) => "encode",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::Store { .. } => "store",
        }
    }

    /// Whether the command may have been written after all: an attempt's
    /// append was lost in flight and nothing since proved whether it
    /// committed. Execute again with the same idempotency key to find out.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            Self::Store {
                source: StoreError::UnknownOutcome { .. },
                ..
            } => true,
            Self::Store {
                outcome_unknown, ..
            }
            | Self::RetriesExhausted {
                outcome_unknown, ..
            }
            | Self::Timeout {
                outcome_unknown, ..
            } => *outcome_unknown,
            _ => false,
        }
    }

    /// Marks the error as following an attempt of unknown outcome.
    fn after_unknown_outcome(mut self, unknown: bool) -> Self {
        if let Self::Store {
            outcome_unknown, ..
        }
        | Self::RetriesExhausted {
            outcome_unknown, ..
        }
        | Self::Timeout {
            outcome_unknown, ..
        } = &mut self
        {
            *outcome_unknown |= unknown;
        }
        self
    }
}

/// The store error of command `command`, with no unknown outcome before it.
fn store_failure<E>(command: &'static str, source: StoreError) -> ExecutionError<E> {
    ExecutionError::Store {
        command,
        source,
        outcome_unknown: false,
    }
}

/// The stream index of each decided event, in emit order, kept only once
/// the events stop coming stream by stream in the streams' order (until
/// then the streams' own event counts say it all, and nothing is allocated).
#[derive(Default)]
struct EmitOrder {
    last: usize,
    interleaved: Option<Vec<usize>>,
}

impl EmitOrder {
    /// Notes that the next event went to stream `index`, whose events
    /// `appends` already holds with this one.
    fn push(&mut self, index: usize, appends: &[StreamAppend]) {
        if let Some(order) = &mut self.interleaved {
            order.push(index);
            return;
        }
        if index >= self.last {
            self.last = index;
            return;
        }
        // Back to an earlier stream: so far it was stream by stream up to `last`.
        let mut order: Vec<usize> = appends[..=self.last]
            .iter()
            .enumerate()
            .flat_map(|(i, append)| {
                let before = append.events.len() - usize::from(i == index);
                std::iter::repeat_n(i, before)
            })
            .collect();
        order.push(index);
        self.interleaved = Some(order);
    }

    /// The order to give the append, unless it is stream by stream.
    fn interleaved(self) -> Option<Vec<usize>> {
        self.interleaved
    }
}

/// What a message adds when an earlier attempt's outcome is unknown.
fn unknown_note(unknown: bool) -> &'static str {
    if unknown {
        "; an earlier attempt's outcome is unknown: it may have been written (execute again \
         with the same idempotency key to find out)"
    } else {
        ""
    }
}

fn list_streams(streams: &[StreamId]) -> String {
    if streams.is_empty() {
        return "none".to_owned();
    }
    let names: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
    names.join(", ")
}

/// Runs commands against a store: reads their streams, folds, decides, and
/// appends atomically with an expected version for every stream read,
/// retrying conflicts per its [`RetryPolicy`].
///
/// Cheap to share: wrap it in an `Arc` or clone it (it clones the store
/// handle). Its futures are `Send`, so it can be used from any multi-threaded
/// runtime and web framework.
///
/// ```
/// # use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Serialize, Deserialize)] enum Ev { Pinged }
/// # impl Event for Ev { fn event_type(&self) -> &'static str { "Pinged" } }
/// # #[derive(Command)] struct Ping { #[stream] target: StreamId }
/// # impl CommandLogic for Ping {
/// #     type State = ();
/// #     type Event = Ev;
/// #     type Error = std::convert::Infallible;
/// #     fn apply(&self, _: &mut (), _: &StoredEvent<Ev>) {}
/// #     fn handle(&self, _: (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Self::Error> {
/// #         Ok(Writes::new().emit(self.target_stream(), Ev::Pinged))
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use eventcore::{CommandExecutor, ExecutionOptions};
/// use eventcore_memory::InMemoryEventStore;
///
/// let executor = CommandExecutor::new(InMemoryEventStore::new());
/// let ping = Ping { target: StreamId::try_new("host-1")? };
/// let result = executor.execute(&ping, ExecutionOptions::default()).await?;
/// assert_eq!(result.events.len(), 1);
/// assert_eq!(result.attempts, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CommandExecutor<S> {
    store: S,
    retry: RetryPolicy,
    limits: Limits,
    /// Shared by clones: their commands take turns with each other too.
    turns: Option<Arc<StreamLocks>>,
    /// Shared by clones: snapshots saved or loaded by this executor.
    snapshots: Arc<SnapshotCache>,
}

/// What an attempt found before writing: an earlier result, or a decision.
enum Prepared<C: CommandLogic> {
    Recorded(AppendResult),
    Decided(Decision<C>),
}

/// What one attempt decided: the versions read and the events to write.
struct Decision<C: CommandLogic> {
    versions: BTreeMap<StreamId, StreamVersion>,
    writes: Writes<C>,
    /// For a command with snapshots decided on its declared streams alone:
    /// the state it decided on, to fold its own events into once written.
    seed: Option<Seed<C::State>>,
}

/// Where a read for a decision starts: a snapshot's state and the events
/// after it, or the default state and every event.
struct Resumed<T> {
    state: T,
    read: StreamsRead,
    /// How far the snapshot used reaches, if one was.
    base: Option<u64>,
    /// Whether the executor has seen the snapshot key lately (or the store
    /// had a snapshot for it): its streams are likely to come back.
    seen_before: bool,
    /// How far the newest snapshot in the store reaches, as far as this
    /// executor knows (0: none known).
    stored_reach: u64,
}

impl<T: Default> Resumed<T> {
    fn from_start(read: StreamsRead) -> Self {
        Self {
            state: T::default(),
            read,
            base: None,
            seen_before: false,
            stored_reach: 0,
        }
    }
}

/// The state a command decided on, encoded before `handle` consumed it.
struct Seed<T> {
    policy: SnapshotPolicy<T>,
    streams: Vec<StreamId>,
    state: crate::Payload,
    /// See [`Resumed::stored_reach`].
    stored_reach: u64,
}

/// One event a command wrote, as a read would return it but for what the
/// store assigns.
struct Own {
    stream_id: StreamId,
    version: StreamVersion,
    event_type: EventType,
    payload: Payload,
}

impl<S: EventStore> CommandExecutor<S> {
    /// An executor on `store` with the default [`RetryPolicy`] and [`Limits`].
    pub fn new(store: S) -> Self {
        Self {
            store,
            retry: RetryPolicy::default(),
            limits: Limits::default(),
            turns: Some(Arc::default()),
            snapshots: Arc::default(),
        }
    }

    /// Turns off in-process coordination: this executor's commands on the
    /// same streams then race each other to the store, and all but one of
    /// them conflict and retry (see the crate docs, "Contention").
    #[must_use]
    pub fn without_coordination(mut self) -> Self {
        self.turns = None;
        self
    }

    /// Keeps at most `bytes` of snapshot states (as their JSON text) and
    /// keys in memory instead of [`DEFAULT_SNAPSHOT_CACHE_BYTES`](crate::DEFAULT_SNAPSHOT_CACHE_BYTES)
    /// (64 MiB); least useful entries leave first. A state being used by a
    /// running command stays in memory until that command ends.
    #[must_use]
    pub fn with_snapshot_cache_bytes(mut self, bytes: u64) -> Self {
        self.snapshots = Arc::new(SnapshotCache::with_budget(bytes));
        self
    }

    /// The bytes of snapshot states and keys this executor (and its clones)
    /// keep in memory now, as the cache weighs them.
    pub fn snapshot_cache_bytes(&self) -> u64 {
        self.snapshots.bytes_held()
    }

    /// Sets the bounds on streams read, events written and payload sizes;
    /// a command beyond them fails with [`ExecutionError::LimitExceeded`]
    /// before anything is read (streams) or written (events).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The executor's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the retry policy used unless a call overrides it.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The store commands run against.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The executor's default retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Executes `command`: reads its streams (from its newest snapshot when it
    /// has snapshots), folds, decides and appends with the versions read,
    /// retrying conflicts by the retry policy; see the crate docs, "Contention".
    ///
    /// # Errors
    /// [`ExecutionError`]; in every case but an unknown outcome, nothing was written.
    pub async fn execute<C: CommandLogic>(
        &self,
        command: &C,
        options: ExecutionOptions,
    ) -> Result<ExecutionResult, ExecutionError<C::Error>> {
        let span = tracing::info_span!(
            "eventcore.execute",
            command = std::any::type_name::<C>(),
            streams = field::Empty,
            stream_count = field::Empty,
            correlation_id = field::Empty,
            attempt = field::Empty,
            outcome = field::Empty,
            events_written = field::Empty,
            otel.status_code = field::Empty,
            error.type = field::Empty,
        );
        let meter = Meter::new(std::any::type_name::<C>());
        let started = meter.start();
        let mut attempts = 0;
        let result = if span.is_disabled() {
            // No subscriber wants it: spare entering and leaving it at every poll.
            self.run(command, options, &span, meter, &mut attempts)
                .await
        } else {
            self.run(command, options, &span, meter, &mut attempts)
                .instrument(span.clone())
                .await
        };
        let outcome = outcome_of(&result);
        meter.finished(outcome, started, attempts);
        if !span.is_disabled() {
            span.record("outcome", outcome.label());
            match &result {
                Ok(done) => {
                    span.record("events_written", done.events.len());
                }
                Err(error) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", error.kind());
                }
            }
        }
        result
    }

    async fn run<C: CommandLogic>(
        &self,
        command: &C,
        options: ExecutionOptions,
        span: &tracing::Span,
        meter: Meter,
        attempts_made: &mut u32,
    ) -> Result<ExecutionResult, ExecutionError<C::Error>> {
        let name = std::any::type_name::<C>();
        let started = Instant::now();
        let deadline = options.timeout.map(|timeout| started + timeout);
        let policy = options.retry.unwrap_or(self.retry);
        let mut metadata = options.metadata;
        let correlation_id = *metadata
            .correlation_id
            .get_or_insert_with(CorrelationId::new_v7);
        let mut delays = policy.delays();
        let mut attempts = 0_u32;
        let mut backoff = Duration::ZERO;
        let mut conflicting = BTreeSet::new();
        let timeout = |attempts| ExecutionError::Timeout {
            command: name,
            attempts,
            elapsed: started.elapsed(),
            outcome_unknown: false,
        };
        // Set by an attempt whose append was lost in flight; cleared when a
        // later attempt's key lookup proves it absent.
        let mut outcome_unknown = false;
        let declared = command.declared_streams();
        if !span.is_disabled() {
            span.record("streams", field::display(FirstStreams(&declared)));
            span.record("correlation_id", field::display(correlation_id));
        }
        // What a key is recorded for: the command and its declared streams.
        let purpose = options
            .idempotency_key
            .as_ref()
            .map(|_| KeyPurpose::new(name, &declared));
        // Held until the command returns, retries included.
        let _turn = match &self.turns {
            None => None,
            Some(locks) => {
                let turn = locks.take_turn(&declared);
                Some(match deadline {
                    None => turn.await,
                    Some(deadline) => tokio::time::timeout_at(deadline, turn)
                        .await
                        .map_err(|_| timeout(0))?,
                })
            }
        };

        loop {
            attempts += 1;
            *attempts_made = attempts;
            span.record("attempt", attempts);
            let key = options.idempotency_key.as_ref().zip(purpose.as_ref());
            let prepared = self.prepare(
                command,
                &declared,
                options.max_discovery_rounds,
                key,
                span,
                meter,
            );
            let prepared = match deadline {
                None => prepared.await,
                Some(deadline) => tokio::time::timeout_at(deadline, prepared)
                    .await
                    .map_err(|_| timeout(attempts).after_unknown_outcome(outcome_unknown))?,
            };
            let (written, appending) = match prepared {
                Ok(Prepared::Recorded(recorded)) => (Ok(recorded), false),
                Ok(Prepared::Decided(decision)) => {
                    // With a key, deciding means its lookup found nothing:
                    // an earlier lost append is proven not written.
                    if key.is_some() {
                        outcome_unknown = false;
                    }
                    (
                        self.append(command, decision, &metadata, key, deadline, meter)
                            .await,
                        true,
                    )
                }
                Err(error) => (Err(error), false),
            };
            let error = match written {
                Ok(result) => {
                    return Ok(ExecutionResult {
                        events: result.events,
                        versions: result.versions,
                        attempts,
                        backoff,
                        correlation_id,
                        replayed: result.replayed,
                        commit_token: result.commit_token,
                    });
                }
                Err(error) => error,
            };
            let store_error = match error {
                ExecutionError::Store { source, .. } if source.is_retryable() => source,
                // With a key, a retry finds the append if it was written.
                ExecutionError::Store {
                    source: source @ StoreError::UnknownOutcome { .. },
                    ..
                } if key.is_some() => {
                    outcome_unknown = true;
                    source
                }
                // Unreachable before the append: nothing can have been
                // written. During an append without a key the caller decides.
                ExecutionError::Store {
                    source: source @ StoreError::Unavailable { .. },
                    ..
                } if !appending || key.is_some() => source,
                other => return Err(other.after_unknown_outcome(outcome_unknown)),
            };
            if store_error.is_retryable() {
                meter.retryable_failure(store_error.conflicts().is_some());
            }
            let conflicts = store_error.conflicts().unwrap_or_default();
            conflicting.extend(conflicts.iter().map(|c| c.stream_id.clone()));

            let exhausted = |store_error| ExecutionError::RetriesExhausted {
                command: name,
                attempts,
                conflicting_streams: conflicting.iter().cloned().collect(),
                last_error: store_error,
                outcome_unknown,
            };
            let Some(delay) = delays.next() else {
                return Err(exhausted(store_error));
            };
            if policy
                .time_budget()
                .is_some_and(|budget| started.elapsed() + delay > budget)
            {
                return Err(exhausted(store_error));
            }
            if deadline.is_some_and(|deadline| Instant::now() + delay >= deadline) {
                return Err(timeout(attempts).after_unknown_outcome(outcome_unknown));
            }
            log_retry(attempts, delay, &store_error);
            meter.backoff(delay);
            tokio::time::sleep(delay).await;
            backoff += delay;
        }
    }

    /// The result recorded under `key`, if any; otherwise a fresh decision.
    async fn prepare<C: CommandLogic>(
        &self,
        command: &C,
        declared: &[StreamId],
        max_rounds: u32,
        key: Option<(&IdempotencyKey, &KeyPurpose)>,
        span: &tracing::Span,
        meter: Meter,
    ) -> Result<Prepared<C>, ExecutionError<C::Error>> {
        if let Some((key, purpose)) = key {
            let recorded = meter
                .store_call(
                    "idempotent_result",
                    self.store.idempotent_result(key, Some(purpose)),
                )
                .await
                .map_err(|source| store_failure(std::any::type_name::<C>(), source))?;
            if let Some(mut recorded) = recorded {
                recorded.replayed = true;
                return Ok(Prepared::Recorded(recorded));
            }
        }
        self.decide(command, declared, max_rounds, span, meter)
            .await
            .map(Prepared::Decided)
    }

    /// Reads the declared (and discovered) streams, folds them and calls `handle`.
    async fn decide<C: CommandLogic>(
        &self,
        command: &C,
        declared: &[StreamId],
        max_rounds: u32,
        span: &tracing::Span,
        meter: Meter,
    ) -> Result<Decision<C>, ExecutionError<C::Error>> {
        let name = std::any::type_name::<C>();
        // Copied only if `handle` asks for more streams.
        let mut streams = Cow::Borrowed(declared);
        if streams.is_empty() {
            return Err(ExecutionError::NoStreams { command: name });
        }
        let policy = command.snapshots();
        let mut round = 0;
        loop {
            self.limits.check_streams(streams.len())?;
            span.record("stream_count", streams.len());
            // Discovery rounds fold declared and discovered streams from the
            // start: snapshots cover the declared streams only.
            let Resumed {
                mut state,
                read,
                base,
                seen_before,
                mut stored_reach,
            } = match (&policy, round) {
                (Some(policy), 0) => {
                    self.read_from_snapshot::<C>(policy, &streams, meter)
                        .await?
                }
                _ => Resumed::from_start(self.read(name, &streams, meter).await?),
            };
            let folded = read.events.len() as u64;
            for event in read.events {
                command.apply(&mut state, &event.into_decoded::<C::Event>()?);
            }
            let saving = policy
                .as_ref()
                .filter(|p| round == 0 && folded >= p.every_events());
            if let Some(policy) = saving {
                // Encoded before awaiting: the state need not be `Sync`.
                if let Some(snapshot) = snapshot_of(policy, &streams, &state, &read.versions, base)
                {
                    stored_reach = snapshot.reach();
                    self.save_snapshot(Arc::new(snapshot), meter).await;
                }
            }
            // Keeping the state after the append pays off when the same
            // streams come back: for keys seen before, or worth a snapshot.
            let worth_keeping = seen_before || saving.is_some();
            let seed = match &policy {
                Some(policy)
                    if round == 0 && worth_keeping && policy.keeps_state_after_appends() =>
                {
                    policy.encode(&state).ok().map(|state| Seed {
                        policy: policy.clone(),
                        streams: streams.to_vec(),
                        state,
                        stored_reach,
                    })
                }
                _ => None,
            };
            let mut ctx = HandleContext::new(&read.versions);
            let writes = command
                .handle(state, &mut ctx)
                .map_err(ExecutionError::Rejected)?;
            let requested = ctx.into_requested();
            if requested.is_empty() {
                return Ok(Decision {
                    versions: read.versions,
                    writes,
                    seed,
                });
            }
            if round == max_rounds {
                return Err(ExecutionError::TooManyDiscoveryRounds {
                    command: name,
                    rounds: max_rounds,
                    requested,
                });
            }
            round += 1;
            tracing::debug!(round, requested = %list_streams(&requested), "reading discovered streams");
            streams.to_mut().extend(requested);
        }
    }

    async fn read<E>(
        &self,
        name: &'static str,
        streams: &[StreamId],
        meter: Meter,
    ) -> Result<StreamsRead, ExecutionError<E>> {
        meter
            .store_call("read_streams", self.store.read_streams(streams))
            .await
            .map_err(|source| store_failure(name, source))
    }

    /// The newest usable snapshot's state and the events after it, or the
    /// default state and every event when there is none.
    async fn read_from_snapshot<C: CommandLogic>(
        &self,
        policy: &SnapshotPolicy<C::State>,
        streams: &[StreamId],
        meter: Meter,
    ) -> Result<Resumed<C::State>, ExecutionError<C::Error>> {
        let name = std::any::type_name::<C>();
        let store_error = |source| store_failure(name, source);
        let key = SnapshotKey::new(policy.name(), streams);
        let (seen_before, kept, stored_reach) = match self.snapshots.look_up(&key) {
            Lookup::New => (false, None, 0),
            Lookup::Seen {
                snapshot,
                stored_reach,
            } => (true, snapshot, stored_reach),
        };
        meter.snapshot_lookup(kept.is_some(), self.snapshots.bytes_held());
        // A snapshot this executor saved or loaded: read only what follows it.
        if let Some(snapshot) = kept.filter(|s| usable(s, policy, streams)) {
            let read = meter
                .store_call(
                    "read_streams_after",
                    self.store.read_streams_after(&snapshot.versions),
                )
                .await
                .map_err(store_error)?;
            if let Some(resumed) = self.resume(policy, snapshot, read, stored_reach) {
                return Ok(resumed);
            }
        }
        // Otherwise the store's snapshot and what follows it, in one call.
        let read = self
            .store
            .read_from_snapshot(&key, policy.state_version(), streams);
        match meter.store_call("read_from_snapshot", read).await {
            Ok((None, read)) => {
                return Ok(Resumed {
                    seen_before,
                    ..Resumed::from_start(read)
                });
            }
            Ok((Some(snapshot), read)) if usable(&snapshot, policy, streams) => {
                let snapshot = Arc::new(snapshot);
                self.snapshots.put_stored(Arc::clone(&snapshot));
                let reach = snapshot.reach();
                if let Some(resumed) = self.resume(policy, snapshot, read, reach) {
                    return Ok(resumed);
                }
            }
            Ok((Some(_), _)) => {
                tracing::warn!(key = key.as_str(), "snapshot of other streams ignored");
            }
            Err(error) => {
                tracing::warn!(key = key.as_str(), %error, "snapshot not loaded; folding from the start");
            }
        }
        Ok(Resumed {
            seen_before,
            ..Resumed::from_start(self.read(name, streams, meter).await?)
        })
    }

    /// The snapshot's state with the events read after it, unless the state
    /// does not decode or a stream is now below the snapshot's version.
    fn resume<T: Default>(
        &self,
        policy: &SnapshotPolicy<T>,
        snapshot: Arc<Snapshot>,
        read: StreamsRead,
        stored_reach: u64,
    ) -> Option<Resumed<T>> {
        let current = snapshot
            .versions
            .iter()
            .all(|(stream, version)| read.version(stream) >= *version);
        if !current {
            tracing::warn!(
                key = snapshot.key.as_str(),
                "snapshot ahead of its streams ignored"
            );
            self.snapshots.forget(&snapshot.key);
            return None;
        }
        let reach = snapshot.reach();
        match policy.decode(&snapshot.state) {
            Ok(state) => Some(Resumed {
                state,
                read,
                base: Some(reach),
                seen_before: true,
                stored_reach,
            }),
            Err(error) => {
                tracing::warn!(key = snapshot.key.as_str(), %error, "undecodable snapshot ignored");
                self.snapshots.forget(&snapshot.key);
                None
            }
        }
    }

    /// Saves a snapshot; a failure only costs later executions some
    /// folding, so it is logged, not returned.
    async fn save_snapshot(&self, snapshot: Arc<Snapshot>, meter: Meter) {
        self.snapshots.put_stored(Arc::clone(&snapshot));
        let saved = meter.store_call("save_snapshot", self.store.save_snapshot(&snapshot));
        if let Err(error) = saved.await {
            tracing::warn!(key = snapshot.key.as_str(), %error, "snapshot not saved");
        }
    }

    /// Appends the decided events with an expected version for every stream read.
    async fn append<C: CommandLogic>(
        &self,
        command: &C,
        decision: Decision<C>,
        metadata: &EventMetadata,
        key: Option<(&IdempotencyKey, &KeyPurpose)>,
        deadline: Option<Instant>,
        meter: Meter,
    ) -> Result<AppendResult, ExecutionError<C::Error>> {
        let name = std::any::type_name::<C>();
        if decision.writes.is_empty() {
            // Nothing to write: the decision stands on the consistent read alone.
            return Ok(AppendResult {
                events: Vec::new(),
                versions: decision.versions,
                replayed: false,
                commit_token: None,
            });
        }
        // One entry per stream read, in stream order, expecting the version read.
        let mut appends: Vec<StreamAppend> = decision
            .versions
            .into_iter()
            .map(|(stream_id, read)| {
                StreamAppend::new(stream_id, ExpectedVersion::Exact(read), Vec::new())
            })
            .collect();
        let mut own = Vec::new();
        // The emit order across streams, the global order of the append;
        // only recorded when it is not simply stream by stream in id order
        // (most commands), which is what an append without an order means.
        let mut order = EmitOrder::default();
        for (stream_id, event) in decision.writes.into_events() {
            let Ok(index) = appends.binary_search_by(|a| a.stream_id.cmp(&stream_id)) else {
                return Err(ExecutionError::UndeclaredStream {
                    command: name,
                    stream_id,
                });
            };
            let event = NewEvent::from_event(&event, metadata.clone())?;
            let target = &mut appends[index];
            if decision.seed.is_some() {
                let read = match target.expected {
                    ExpectedVersion::Exact(read) => read.value(),
                    ExpectedVersion::Any | ExpectedVersion::NoStream => 0,
                };
                own.push(Own {
                    stream_id,
                    version: StreamVersion::new(read + target.events.len() as u64 + 1),
                    event_type: event.event_type().clone(),
                    payload: event.payload().clone(),
                });
            }
            target.events.push(event);
            order.push(index, &appends);
        }
        let request = AppendRequest::new(appends)
            .and_then(|request| match order.interleaved() {
                Some(order) => request.with_event_order(order),
                None => Ok(request),
            })
            .map_err(|_| {
                // The versions map is non-empty and keyed by stream, and the
                // order names each event's stream once, so this cannot happen.
                ExecutionError::NoStreams { command: name }
            })?;
        self.limits.check_append(&request)?;
        let request = match key {
            Some((key, purpose)) => request
                .with_idempotency_key(key.clone())
                .with_key_purpose(purpose.clone()),
            None => request,
        };
        // The time left bounds the append's lock waits, so that a stream row
        // held by another session cannot keep it past the timeout.
        let request = match deadline {
            Some(deadline) => {
                request.with_max_lock_wait(deadline.saturating_duration_since(Instant::now()))
            }
            None => request,
        };
        let (events, bytes) = meter.sizes(&request);
        let result = meter
            .store_call("append", self.store.append(request))
            .await
            .map_err(|source| store_failure(name, source))?;
        if !result.replayed {
            meter.written(events, bytes);
        }
        if let Some(seed) = decision.seed.filter(|_| !result.replayed) {
            self.remember_written(command, seed, own, &result, metadata, meter)
                .await;
        }
        Ok(result)
    }

    /// After an append: the state the command decided on with its own new
    /// events folded in is the state at the versions just written (the
    /// append checked that nothing came in between), so it is kept as a
    /// snapshot; the next command on the same streams folds only what
    /// others wrote since. Saved to the store too once it reaches the
    /// policy's number of events beyond the stored one.
    async fn remember_written<C: CommandLogic>(
        &self,
        command: &C,
        seed: Seed<C::State>,
        own: Vec<Own>,
        result: &AppendResult,
        metadata: &EventMetadata,
        meter: Meter,
    ) {
        let Ok(mut state) = seed.policy.decode(&seed.state) else {
            return;
        };
        let assigned: HashMap<(&StreamId, StreamVersion), &WrittenEvent> = result
            .events
            .iter()
            .map(|written| ((&written.stream_id, written.version), written))
            .collect();
        let mut events = Vec::with_capacity(own.len());
        for own in own {
            let Some(&&WrittenEvent {
                id,
                position,
                recorded_at,
                ..
            }) = assigned.get(&(&own.stream_id, own.version))
            else {
                return;
            };
            // Decoded from the JSON written, exactly as a later read decodes it.
            let Ok(payload) = own.payload.decode::<C::Event>() else {
                return;
            };
            events.push(StoredEvent {
                id,
                stream_id: own.stream_id,
                version: own.version,
                position,
                recorded_at,
                event_type: own.event_type,
                schema_version: crate::Event::schema_version(&payload),
                metadata: metadata.clone(),
                payload,
            });
        }
        events.sort_by_key(|event| event.position);
        for event in &events {
            command.apply(&mut state, event);
        }
        let Some(snapshot) =
            snapshot_of(&seed.policy, &seed.streams, &state, &result.versions, None)
        else {
            return;
        };
        let snapshot = Arc::new(snapshot);
        let beyond_stored = snapshot.reach().saturating_sub(seed.stored_reach);
        self.snapshots
            .put_derived(Arc::clone(&snapshot), seed.stored_reach);
        if beyond_stored >= seed.policy.every_events() {
            self.save_snapshot(snapshot, meter).await;
        }
    }
}

fn log_retry(attempt: u32, delay: Duration, error: &StoreError) {
    match error.conflicts() {
        Some(conflicts) if !conflicts.is_empty() => {
            let streams: Vec<String> = conflicts.iter().map(VersionConflict::to_string).collect();
            tracing::warn!(
                attempt,
                delay_ms = delay.as_secs_f64() * 1000.0,
                conflicts = %streams.join("; "),
                "version conflict, retrying"
            );
        }
        _ => tracing::warn!(
            attempt,
            delay_ms = delay.as_secs_f64() * 1000.0,
            error = %error,
            "transient store failure, retrying"
        ),
    }
}

/// The snapshot of `state` folded at `versions`, unless it would not reach
/// further than the one it started from (`base`) or does not encode.
fn snapshot_of<T>(
    policy: &SnapshotPolicy<T>,
    streams: &[StreamId],
    state: &T,
    versions: &BTreeMap<StreamId, StreamVersion>,
    base: Option<u64>,
) -> Option<Snapshot> {
    let key = SnapshotKey::new(policy.name(), streams);
    let state = match policy.encode(state) {
        Ok(encoded) => encoded,
        Err(error) => {
            tracing::warn!(key = key.as_str(), %error, "state not snapshotted: it did not encode");
            return None;
        }
    };
    let snapshot = Snapshot {
        key,
        state_version: policy.state_version(),
        versions: versions.clone(),
        state,
    };
    (base.is_none_or(|base| snapshot.reach() > base)).then_some(snapshot)
}

/// Whether a loaded snapshot fits this policy and exactly these streams.
fn usable<T>(snapshot: &Snapshot, policy: &SnapshotPolicy<T>, streams: &[StreamId]) -> bool {
    snapshot.state_version == policy.state_version()
        && snapshot.versions.len() == streams.len()
        && streams.iter().all(|s| snapshot.versions.contains_key(s))
}

/// The `outcome` label of an execution's result.
fn outcome_of<E>(result: &Result<ExecutionResult, ExecutionError<E>>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(error) if error.is_unknown_outcome() => Outcome::Unknown,
        Err(ExecutionError::Rejected(_)) => Outcome::Rejected,
        Err(ExecutionError::RetriesExhausted { last_error, .. })
            if last_error.conflicts().is_some() =>
        {
            Outcome::ConflictExhausted
        }
        Err(ExecutionError::RetriesExhausted { .. }) => Outcome::RetriesExhausted,
        Err(ExecutionError::Timeout { .. }) => Outcome::Timeout,
        Err(_) => Outcome::Error,
    }
}

/// How many stream ids a span names before it only counts the rest.
const SPAN_STREAMS: usize = 3;

/// The first few stream ids of a command, and how many more there are.
struct FirstStreams<'a>(&'a [StreamId]);

impl fmt::Display for FirstStreams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, stream) in self.0.iter().take(SPAN_STREAMS).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{stream}")?;
        }
        if let Some(more) = self.0.len().checked_sub(SPAN_STREAMS).filter(|n| *n > 0) {
            write!(f, " and {more} more")?;
        }
        Ok(())
    }
}
