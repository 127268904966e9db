//! Running commands: read, fold, decide, append atomically, retry on conflict.

use std::{borrow::Cow, collections::BTreeSet, fmt, sync::Arc, time::Duration};

use tokio::time::Instant;
use tracing::{Instrument, field};

use crate::telemetry::{Meter, Outcome};

use crate::{
    AppendRequest, AppendResult, CommandLogic, CorrelationId, EventMetadata, EventStore,
    ExpectedVersion, HandleContext, IdempotencyKey, KeyPurpose, Limits, NewEvent, RetryPolicy,
    StoreError, StreamAppend, StreamId, StreamVersion, StreamVersions, StreamsRead,
    VersionConflict, Writes, coordination::StreamLocks, snapshot::SnapshotCache,
};

mod error;
mod options;
mod result;
mod snapshots;

pub use error::ExecutionError;
pub use options::{DEFAULT_MAX_DISCOVERY_ROUNDS, ExecutionOptions};
pub use result::ExecutionResult;

use error::{list_streams, store_failure};
use snapshots::{Own, Resumed, Seed, snapshot_of};

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
    versions: StreamVersions,
    writes: Writes<C>,
    /// For a command with snapshots decided on its declared streams alone:
    /// the state it decided on, to fold its own events into once written.
    seed: Option<Seed<C::State>>,
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
            if !span.is_disabled() {
                span.record("attempt", attempts);
            }
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
            if !span.is_disabled() {
                span.record("stream_count", streams.len());
            }
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
