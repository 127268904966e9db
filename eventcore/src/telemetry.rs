//! The metrics EventCore records, through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! EventCore installs no exporter: install any `metrics` recorder
//! (`metrics-exporter-prometheus`, the OpenTelemetry bridge, a test
//! recorder) and these metrics appear. While none is installed EventCore
//! records nothing and reads no clock for metrics: each command checks
//! once whether a recorder is installed (a zero-sized recorder, like
//! `metrics`' own no-op one, counts as none). Names follow Prometheus
//! conventions; labels are bounded: a command's Rust type name, an outcome,
//! a store operation, a projection's name, never stream ids or user data.
//! [`describe`] gives the recorder the units and descriptions below; EventCore
//! calls it once by itself when it first finds a recorder.
//!
//! | name | type | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `eventcore_commands_total` | counter | | `command`, `outcome` | Executions finished, by outcome: `ok`, `rejected` (the command's own error), `conflict_exhausted` (retries ran out on a conflict), `retries_exhausted` (on a transient failure or an unreachable store), `timeout`, `unknown_outcome` (may have been written), `error` (anything else). |
//! | `eventcore_command_duration_seconds` | histogram | seconds | `command`, `outcome` | Time from `execute` to its result, retries and backoff included. |
//! | `eventcore_command_attempts` | histogram | | `command` | Attempts one execution made (1 when nothing was retried). |
//! | `eventcore_command_conflicts_total` | counter | | `command` | Attempts that met a version conflict. |
//! | `eventcore_command_transient_failures_total` | counter | | `command` | Attempts that met a transient failure (serialization failure, deadlock). |
//! | `eventcore_command_backoff_seconds` | histogram | seconds | `command` | Each pause before a retry. |
//! | `eventcore_store_operation_duration_seconds` | histogram | seconds | `operation`, `outcome` | Store calls made by the executor and subscriptions: `read_streams`, `read_from_snapshot`, `idempotent_result`, `append`, `save_snapshot`, `read_all`; outcome `ok` or `error`. |
//! | `eventcore_events_written_total` | counter | | `command` | Events the executor's appends wrote. |
//! | `eventcore_bytes_written_total` | counter | bytes | `command` | Payload bytes (JSON text) of those events. |
//! | `eventcore_snapshot_cache_hits_total` | counter | | | Snapshot lookups the executor's cache answered. |
//! | `eventcore_snapshot_cache_misses_total` | counter | | | Snapshot lookups that went to the store. |
//! | `eventcore_snapshot_cache_bytes` | gauge | bytes | | What the snapshot cache holds, by its weight. |
//! | `eventcore_projection_events_total` | counter | | `projection` | Events a projection runner applied. |
//! | `eventcore_projection_batch_duration_seconds` | histogram | seconds | `projection` | Time to apply one batch of events (one page of the subscription). |
//! | `eventcore_projection_errors_total` | counter | | `projection`, `policy_outcome` | Failed applications and unreadable events, by what the error policy did: `stopped`, `retried`, `skipped`. |
//! | `eventcore_projection_state` | gauge | | `projection`, `state` | 1 for the runner's current state (`running`, `paused`, `rebuilding`, `stopped`, `failed`, `standby`), 0 for the others; for runners started while a recorder is installed. |
//! | `eventcore_projection_checkpoint_saved_timestamp_seconds` | gauge | seconds | `projection` | Unix time of the last checkpoint saved; its age is `time() - value`. |
//! | `eventcore_projection_lag_events` | gauge | | `projection` | Events after the projection's position, as last measured ([`ProjectionHandle::lag`](crate::ProjectionHandle::lag); on PostgreSQL also `PostgresCheckpointStore::report`, capped there). |
//!
//! The PostgreSQL store adds its connection metrics and the events held
//! back behind an old transaction (`eventcore_postgres::telemetry`).
//!
//! ```
//! // Any recorder works; a test might use metrics-util's debugging recorder,
//! // an application metrics-exporter-prometheus.
//! eventcore::telemetry::describe();
//! assert_eq!(eventcore::telemetry::COMMANDS_TOTAL, "eventcore_commands_total");
//! ```

use std::{sync::Once, time::Duration};

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use tokio::time::Instant;

/// Executions finished, by `command` and `outcome`.
pub const COMMANDS_TOTAL: &str = "eventcore_commands_total";
/// Time from `execute` to its result, by `command` and `outcome`.
pub const COMMAND_DURATION_SECONDS: &str = "eventcore_command_duration_seconds";
/// Attempts per execution, by `command`.
pub const COMMAND_ATTEMPTS: &str = "eventcore_command_attempts";
/// Attempts that met a version conflict, by `command`.
pub const COMMAND_CONFLICTS_TOTAL: &str = "eventcore_command_conflicts_total";
/// Attempts that met a transient failure, by `command`.
pub const COMMAND_TRANSIENT_FAILURES_TOTAL: &str = "eventcore_command_transient_failures_total";
/// Each pause before a retry, by `command`.
pub const COMMAND_BACKOFF_SECONDS: &str = "eventcore_command_backoff_seconds";
/// Store calls by `operation` and `outcome`.
pub const STORE_OPERATION_DURATION_SECONDS: &str = "eventcore_store_operation_duration_seconds";
/// Events the executor wrote, by `command`.
pub const EVENTS_WRITTEN_TOTAL: &str = "eventcore_events_written_total";
/// Payload bytes the executor wrote, by `command`.
pub const BYTES_WRITTEN_TOTAL: &str = "eventcore_bytes_written_total";
/// Snapshot lookups the cache answered.
pub const SNAPSHOT_CACHE_HITS_TOTAL: &str = "eventcore_snapshot_cache_hits_total";
/// Snapshot lookups that went to the store.
pub const SNAPSHOT_CACHE_MISSES_TOTAL: &str = "eventcore_snapshot_cache_misses_total";
/// What the snapshot cache holds, in bytes of weight.
pub const SNAPSHOT_CACHE_BYTES: &str = "eventcore_snapshot_cache_bytes";
/// Events a projection applied, by `projection`.
pub const PROJECTION_EVENTS_TOTAL: &str = "eventcore_projection_events_total";
/// Time to apply one batch, by `projection`.
pub const PROJECTION_BATCH_DURATION_SECONDS: &str = "eventcore_projection_batch_duration_seconds";
/// Projection errors by `projection` and `policy_outcome`.
pub const PROJECTION_ERRORS_TOTAL: &str = "eventcore_projection_errors_total";
/// 1 for a projection's current `state`, 0 for the others, by `projection`.
pub const PROJECTION_STATE: &str = "eventcore_projection_state";
/// Unix time of a projection's last saved checkpoint, by `projection`.
pub const PROJECTION_CHECKPOINT_SAVED_TIMESTAMP_SECONDS: &str =
    "eventcore_projection_checkpoint_saved_timestamp_seconds";

/// Events after a projection's position as last measured, by `projection`.
pub const PROJECTION_LAG_EVENTS: &str = "eventcore_projection_lag_events";

/// Every metric name above, for tests and dashboards that check them all.
pub const ALL: [&str; 18] = [
    COMMANDS_TOTAL,
    COMMAND_DURATION_SECONDS,
    COMMAND_ATTEMPTS,
    COMMAND_CONFLICTS_TOTAL,
    COMMAND_TRANSIENT_FAILURES_TOTAL,
    COMMAND_BACKOFF_SECONDS,
    STORE_OPERATION_DURATION_SECONDS,
    EVENTS_WRITTEN_TOTAL,
    BYTES_WRITTEN_TOTAL,
    SNAPSHOT_CACHE_HITS_TOTAL,
    SNAPSHOT_CACHE_MISSES_TOTAL,
    SNAPSHOT_CACHE_BYTES,
    PROJECTION_EVENTS_TOTAL,
    PROJECTION_BATCH_DURATION_SECONDS,
    PROJECTION_ERRORS_TOTAL,
    PROJECTION_STATE,
    PROJECTION_CHECKPOINT_SAVED_TIMESTAMP_SECONDS,
    PROJECTION_LAG_EVENTS,
];

/// Tells the installed recorder the unit and meaning of every metric.
/// EventCore calls it once, when it first finds a recorder; call it again
/// after installing another.
///
/// ```
/// // With a recorder installed first (say `metrics-exporter-prometheus`),
/// // the descriptions reach it before the first metric does.
/// eventcore::telemetry::describe();
/// ```
pub fn describe() {
    describe_counter!(COMMANDS_TOTAL, "Command executions finished, by outcome.");
    describe_histogram!(
        COMMAND_DURATION_SECONDS,
        Unit::Seconds,
        "Time from execute to its result, retries and backoff included."
    );
    describe_histogram!(COMMAND_ATTEMPTS, "Attempts one execution made.");
    describe_counter!(
        COMMAND_CONFLICTS_TOTAL,
        "Attempts that met a version conflict."
    );
    describe_counter!(
        COMMAND_TRANSIENT_FAILURES_TOTAL,
        "Attempts that met a transient store failure (serialization failure, deadlock)."
    );
    describe_histogram!(
        COMMAND_BACKOFF_SECONDS,
        Unit::Seconds,
        "Each pause before a retry."
    );
    describe_histogram!(
        STORE_OPERATION_DURATION_SECONDS,
        Unit::Seconds,
        "Store calls made by the executor and subscriptions."
    );
    describe_counter!(EVENTS_WRITTEN_TOTAL, "Events written by the executor.");
    describe_counter!(
        BYTES_WRITTEN_TOTAL,
        Unit::Bytes,
        "Payload bytes (JSON text) written by the executor."
    );
    describe_counter!(
        SNAPSHOT_CACHE_HITS_TOTAL,
        "Snapshot lookups the cache answered."
    );
    describe_counter!(
        SNAPSHOT_CACHE_MISSES_TOTAL,
        "Snapshot lookups that went to the store."
    );
    describe_gauge!(
        SNAPSHOT_CACHE_BYTES,
        Unit::Bytes,
        "Weight of the snapshot cache."
    );
    describe_counter!(PROJECTION_EVENTS_TOTAL, "Events a projection applied.");
    describe_histogram!(
        PROJECTION_BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Time to apply one batch of events."
    );
    describe_counter!(
        PROJECTION_ERRORS_TOTAL,
        "Projection errors, by what the error policy did."
    );
    describe_gauge!(
        PROJECTION_STATE,
        "1 for the projection's current state, 0 for the others."
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        "Events after the projection's position, as last measured."
    );
    describe_gauge!(
        PROJECTION_CHECKPOINT_SAVED_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the projection's last saved checkpoint."
    );
}

/// Whether a recorder is installed for this thread (a local one) or the
/// process: what EventCore (and adapters, for their own metrics) check
/// before reading a clock for a metric. `metrics` falls back to its
/// zero-sized no-op recorder; any recorder that records holds state, so a
/// zero size means nothing listens. The check is one thread-local read and
/// one atomic load.
///
/// ```
/// // No recorder is installed in this example: EventCore measures nothing.
/// assert!(!eventcore::telemetry::recording());
/// ```
pub fn recording() -> bool {
    static DESCRIBED: Once = Once::new();
    let on = metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0);
    if on {
        DESCRIBED.call_once(describe);
    }
    on
}

/// How one execution ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Rejected,
    ConflictExhausted,
    RetriesExhausted,
    Timeout,
    Unknown,
    Error,
}

impl Outcome {
    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::ConflictExhausted => "conflict_exhausted",
            Self::RetriesExhausted => "retries_exhausted",
            Self::Timeout => "timeout",
            Self::Unknown => "unknown_outcome",
            Self::Error => "error",
        }
    }
}

/// What one execution records, when a recorder listens; otherwise nothing,
/// and no clock is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    command: &'static str,
    on: bool,
}

impl Meter {
    /// The meter of one execution of `command`.
    pub(crate) fn new(command: &'static str) -> Self {
        Self {
            command,
            on: recording(),
        }
    }

    /// The current time, if recording.
    pub(crate) fn start(&self) -> Option<Instant> {
        self.on.then(Instant::now)
    }

    /// Records a finished execution.
    pub(crate) fn finished(&self, outcome: Outcome, started: Option<Instant>, attempts: u32) {
        if !self.on {
            return;
        }
        let outcome = outcome.label();
        counter!(COMMANDS_TOTAL, "command" => self.command, "outcome" => outcome).increment(1);
        if let Some(started) = started {
            histogram!(COMMAND_DURATION_SECONDS, "command" => self.command, "outcome" => outcome)
                .record(started.elapsed().as_secs_f64());
        }
        histogram!(COMMAND_ATTEMPTS, "command" => self.command).record(f64::from(attempts));
    }

    /// Records an attempt that failed with a conflict or a transient error.
    pub(crate) fn retryable_failure(&self, conflict: bool) {
        if !self.on {
            return;
        }
        let name = if conflict {
            COMMAND_CONFLICTS_TOTAL
        } else {
            COMMAND_TRANSIENT_FAILURES_TOTAL
        };
        counter!(name, "command" => self.command).increment(1);
    }

    /// Records a pause before a retry.
    pub(crate) fn backoff(&self, delay: Duration) {
        if self.on {
            histogram!(COMMAND_BACKOFF_SECONDS, "command" => self.command)
                .record(delay.as_secs_f64());
        }
    }

    /// The events and payload bytes of an append, counted only when recording.
    pub(crate) fn sizes(&self, request: &crate::AppendRequest) -> (usize, usize) {
        if !self.on {
            return (0, 0);
        }
        let bytes = request
            .streams()
            .iter()
            .flat_map(|s| &s.events)
            .map(|e| e.payload().as_json().len())
            .sum();
        (request.event_count(), bytes)
    }

    /// Records events an append wrote.
    pub(crate) fn written(&self, events: usize, bytes: usize) {
        if !self.on {
            return;
        }
        counter!(EVENTS_WRITTEN_TOTAL, "command" => self.command)
            .increment(u64::try_from(events).unwrap_or(u64::MAX));
        counter!(BYTES_WRITTEN_TOTAL, "command" => self.command)
            .increment(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Records a snapshot cache lookup and what the cache holds.
    pub(crate) fn snapshot_lookup(&self, hit: bool, cache_bytes: u64) {
        if !self.on {
            return;
        }
        let name = if hit {
            SNAPSHOT_CACHE_HITS_TOTAL
        } else {
            SNAPSHOT_CACHE_MISSES_TOTAL
        };
        counter!(name).increment(1);
        // Bytes fit a gauge's f64 exactly up to 2^53: far past any cache.
        #[allow(clippy::cast_precision_loss)]
        gauge!(SNAPSHOT_CACHE_BYTES).set(cache_bytes as f64);
    }

    /// Runs one store call, timing it when recording.
    pub(crate) async fn store_call<T, E>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        store_call(self.on, operation, call).await
    }
}

/// Runs one store call, timing it when `on`.
pub(crate) async fn store_call<T, E>(
    on: bool,
    operation: &'static str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    if !on {
        return call.await;
    }
    let started = Instant::now();
    let result = call.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    histogram!(STORE_OPERATION_DURATION_SECONDS, "operation" => operation, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

/// What a projection runner records, under its projection's name; public
/// for adapters that measure a projection's lag themselves.
///
/// ```
/// use eventcore::telemetry::ProjectionMeter;
///
/// // An adapter that counts a projection's lag itself reports it so:
/// let meter = ProjectionMeter::new("balances");
/// meter.lag(42);
/// ```
#[derive(Debug, Clone)]
pub struct ProjectionMeter {
    name: metrics::SharedString,
}

/// Every state, for the per-state gauge.
const STATES: [crate::ProjectionState; 6] = [
    crate::ProjectionState::Running,
    crate::ProjectionState::Paused,
    crate::ProjectionState::Rebuilding,
    crate::ProjectionState::Failed,
    crate::ProjectionState::Stopped,
    crate::ProjectionState::Standby,
];

impl ProjectionMeter {
    /// The meter of the projection `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: metrics::SharedString::from(name.to_owned()),
        }
    }

    /// The current time, if recording.
    pub(crate) fn start(&self) -> Option<Instant> {
        recording().then(Instant::now)
    }

    /// Records the projection's lag, in events, as just measured.
    pub fn lag(&self, events: u64) {
        if recording() {
            // Event counts fit an f64 exactly up to 2^53.
            #[allow(clippy::cast_precision_loss)]
            gauge!(PROJECTION_LAG_EVENTS, "projection" => self.name.clone()).set(events as f64);
        }
    }

    /// Records one event applied.
    pub(crate) fn applied(&self) {
        if recording() {
            counter!(PROJECTION_EVENTS_TOTAL, "projection" => self.name.clone()).increment(1);
        }
    }

    /// Records a batch applied since `started`.
    pub(crate) fn batch(&self, started: Option<Instant>) {
        if let Some(started) = started {
            histogram!(PROJECTION_BATCH_DURATION_SECONDS, "projection" => self.name.clone())
                .record(started.elapsed().as_secs_f64());
        }
    }

    /// Records an error and what the policy did with it: `stopped`,
    /// `retried` or `skipped`.
    pub(crate) fn error(&self, policy_outcome: &'static str) {
        if recording() {
            counter!(
                PROJECTION_ERRORS_TOTAL,
                "projection" => self.name.clone(),
                "policy_outcome" => policy_outcome
            )
            .increment(1);
        }
    }

    /// Records the runner's state.
    pub(crate) fn state(&self, state: crate::ProjectionState) {
        if !recording() {
            return;
        }
        for each in STATES {
            let value = if each == state { 1.0 } else { 0.0 };
            gauge!(PROJECTION_STATE, "projection" => self.name.clone(), "state" => each.as_str())
                .set(value);
        }
    }

    /// Records a checkpoint saved now.
    pub(crate) fn saved(&self) {
        if !recording() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        gauge!(PROJECTION_CHECKPOINT_SAVED_TIMESTAMP_SECONDS, "projection" => self.name.clone())
            .set(now);
    }

    /// Keeps the state gauge of the runner whose status `status` carries
    /// current, until the runner ends: every change of state goes through
    /// that one channel. Only for runners started while a recorder is
    /// installed: the status changes with every event applied, and a
    /// watcher nobody reads should not wake that often.
    pub(crate) fn follow_state(
        self,
        mut status: tokio::sync::watch::Receiver<crate::ProjectionStatus>,
    ) {
        if !recording() {
            return;
        }
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let state = status.borrow_and_update().state;
                if last != Some(state) {
                    self.state(state);
                    last = Some(state);
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// For adapters: runs one store call inside `span`, a span the adapter made
/// with OpenTelemetry's database fields (`db.system.name`,
/// `db.operation.name`, `db.namespace`) and two empty ones,
/// `otel.status_code` and `error.type`, which a failure fills in (with
/// [`StoreError::kind`](crate::StoreError::kind): never a payload or a
/// password). A disabled span costs nothing more than the call.
///
/// ```
/// use eventcore::{StoreError, telemetry::traced};
///
/// # async fn read() -> Result<u32, StoreError> { Ok(1) }
/// # async fn demo() -> Result<u32, StoreError> {
/// let span = tracing::debug_span!(
///     "my_store.call",
///     db.system.name = "sqlite",
///     db.operation.name = "read_streams",
///     db.namespace = "main",
///     otel.status_code = tracing::field::Empty,
///     error.type = tracing::field::Empty,
/// );
/// traced(span, read()).await
/// # }
/// ```
pub async fn traced<T>(
    span: tracing::Span,
    call: impl Future<Output = Result<T, crate::StoreError>>,
) -> Result<T, crate::StoreError> {
    use tracing::Instrument;
    if span.is_disabled() {
        return call.await;
    }
    let result = call.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error.kind());
    }
    result
}
