//! Group commit: appends that are ready at the same moment, on streams no
//! other of them touches, written in one transaction (one round trip
//! without idempotency keys), each with its own version checks, key and
//! result.
//!
//! Nothing waits for company. An append that finds nothing queued and
//! fewer than [`GroupCommit::batches_in_flight`] batches being written is
//! written at once by its own caller, as without group commit (the usual
//! case at low load). Appends that arrive while every writer is busy queue,
//! and the next free writer takes them all as one batch. An append sharing a stream with one queued
//! earlier, or being written, waits for the next batch: a batch never
//! holds two appends to one stream, so no append's writes can change
//! another's checks, and the store's own batches never contend.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use eventcore::{AppendRequest, AppendResult, BoxError, KeyPurpose, StoreError, StreamId};
use sqlx::{Connection, postgres::PgRow, types::Json};
use tokio::sync::oneshot;

use super::{
    PostgresEventStore,
    append::{AppendParams, append_outcome},
};
use crate::{
    error::{self, Failure},
    telemetry,
};

/// How a store gathers concurrent appends into shared transactions: see
/// [`PostgresConfig::group_commit`](crate::PostgresConfig::group_commit).
///
/// ```
/// use eventcore_postgres::GroupCommit;
///
/// // Two batches written at once, each of at most 32 appends.
/// let group = GroupCommit::new().batches_in_flight(2).max_appends(32);
/// assert_eq!(group.max_appends_per_batch(), 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    batches_in_flight: usize,
    max_appends: usize,
    max_bytes: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupCommit {
    /// Two batches in flight, up to 64 appends and 4 MiB of payloads each.
    pub const fn new() -> Self {
        Self {
            batches_in_flight: 2,
            max_appends: 64,
            max_bytes: 4 << 20,
        }
    }

    /// How many batches are written at once (at least 1), each on a
    /// connection of its own. More lets a batch run while another commits;
    /// fewer makes bigger batches.
    #[must_use]
    pub const fn batches_in_flight(mut self, n: usize) -> Self {
        self.batches_in_flight = if n == 0 { 1 } else { n };
        self
    }

    /// The most appends in one batch (at least 1).
    #[must_use]
    pub const fn max_appends(mut self, n: usize) -> Self {
        self.max_appends = if n == 0 { 1 } else { n };
        self
    }

    /// The most payload and metadata bytes in one batch; an append larger
    /// than this goes alone.
    #[must_use]
    pub const fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// How many batches are written at once.
    pub const fn batches_in_flight_limit(&self) -> usize {
        self.batches_in_flight
    }

    /// The most appends in one batch.
    pub const fn max_appends_per_batch(&self) -> usize {
        self.max_appends
    }
}

/// An append waiting for its batch, and where its outcome goes.
struct Pending {
    request: Arc<AppendRequest>,
    reply: oneshot::Sender<Result<AppendResult, Failure>>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    /// Writers running (at most `batches_in_flight`).
    writers: usize,
    /// The streams of the batches being written, and of the one being taken.
    busy: HashSet<StreamId>,
}

/// The queue of one store (shared by its clones).
#[derive(Debug)]
pub(crate) struct Committer {
    settings: GroupCommit,
    state: Mutex<State>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("queued", &self.queue.len())
            .field("writers", &self.writers)
            .finish_non_exhaustive()
    }
}

/// What a request weighs against [`GroupCommit::max_bytes`].
fn weight(request: &AppendRequest) -> usize {
    request
        .events_in_order()
        .map(|(_, event)| event.payload().as_json().len() + 64)
        .sum()
}

impl Committer {
    pub(crate) fn new(settings: GroupCommit) -> Self {
        Self {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (every change is one
        // step under the lock), so a poisoned lock is taken as it is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends queued and not yet in a batch being written.
    pub(crate) fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// Takes `request` in: to be written by its caller at once (nothing
    /// queued, a writer's place free, its streams not being written), or
    /// queued for a writer, which the caller is to start when
    /// [`Offer::Queued`] says so.
    fn offer(&self, request: &Arc<AppendRequest>) -> Offer {
        let mut state = self.state();
        let free = state.writers < self.settings.batches_in_flight;
        let overlaps = request
            .streams()
            .iter()
            .any(|s| state.busy.contains(&s.stream_id));
        if free && state.queue.is_empty() && !overlaps {
            state.writers += 1;
            for stream in request.streams() {
                state.busy.insert(stream.stream_id.clone());
            }
            return Offer::Inline;
        }
        let (reply, answer) = oneshot::channel();
        state.queue.push_back(Pending {
            request: request.clone(),
            reply,
        });
        if free {
            state.writers += 1;
        }
        Offer::Queued {
            answer,
            start_writer: free,
        }
    }

    /// Ends a caller's own write: its streams released, and its writer's
    /// place kept (true: the caller is to start a writer with it) when
    /// appends queued meanwhile.
    fn finish_inline(&self, request: &AppendRequest) -> bool {
        let mut state = self.state();
        for stream in request.streams() {
            state.busy.remove(&stream.stream_id);
        }
        if state.queue.is_empty() {
            state.writers -= 1;
            false
        } else {
            true
        }
    }

    /// Releases the streams of a written batch and takes the next one;
    /// `None` when nothing can go now (the writer then stops, and the
    /// writers still running take what is left when they finish).
    fn next_batch(&self, written: &[Arc<AppendRequest>]) -> Option<Vec<Pending>> {
        let mut state = self.state();
        let state = &mut *state;
        for request in written {
            for stream in request.streams() {
                state.busy.remove(&stream.stream_id);
            }
        }
        let mut batch: Vec<Pending> = Vec::new();
        let mut bytes = 0;
        let mut index = 0;
        while index < state.queue.len() && batch.len() < self.settings.max_appends {
            let Some(pending) = state.queue.get(index) else {
                break;
            };
            if pending.reply.is_closed() {
                // Its caller is gone before anything was sent.
                state.queue.remove(index);
                continue;
            }
            let overlaps = pending
                .request
                .streams()
                .iter()
                .any(|s| state.busy.contains(&s.stream_id));
            let size = weight(&pending.request);
            if overlaps || (!batch.is_empty() && bytes + size > self.settings.max_bytes) {
                index += 1;
                continue;
            }
            let Some(pending) = state.queue.remove(index) else {
                break;
            };
            for stream in pending.request.streams() {
                state.busy.insert(stream.stream_id.clone());
            }
            bytes += size;
            batch.push(pending);
        }
        if batch.is_empty() {
            state.writers -= 1;
            None
        } else {
            Some(batch)
        }
    }
}

/// What [`Committer::offer`] decided.
enum Offer {
    /// The caller writes its append itself, alone, now.
    Inline,
    /// A writer will; `start_writer`: the caller is to start one.
    Queued {
        answer: oneshot::Receiver<Result<AppendResult, Failure>>,
        start_writer: bool,
    },
}

/// A caller's own write of its append. Dropped unfinished (the caller's
/// future was dropped), it releases the streams and hands the writer's
/// place to a new writer if appends queued meanwhile.
struct InlineTurn<'a> {
    store: &'a PostgresEventStore,
    committer: &'a Arc<Committer>,
    request: &'a AppendRequest,
    finished: bool,
}

impl InlineTurn<'_> {
    fn finish(mut self) {
        self.finished = true;
        if self.committer.finish_inline(self.request) {
            tokio::spawn(self.store.clone().write_batches(self.committer.clone()));
        }
    }
}

impl Drop for InlineTurn<'_> {
    fn drop(&mut self) {
        if self.finished || !self.committer.finish_inline(self.request) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.store.clone().write_batches(self.committer.clone()));
            }
            // No runtime to write on: a writer that never runs answers the queue.
            Err(_) => drop(Writer {
                committer: self.committer.clone(),
                holding: Vec::new(),
                finished: false,
            }),
        }
    }
}

/// A running writer's hold on the queue. Dropped without finishing (its
/// runtime shut down), it gives its place and streams back, and when it was
/// the last writer it answers the queued appends, which nothing would take.
struct Writer {
    committer: Arc<Committer>,
    holding: Vec<Arc<AppendRequest>>,
    finished: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let stranded: Vec<Pending> = {
            let mut state = self.committer.state();
            for request in &self.holding {
                for stream in request.streams() {
                    state.busy.remove(&stream.stream_id);
                }
            }
            state.writers = state.writers.saturating_sub(1);
            if state.writers == 0 {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            }
        };
        for pending in stranded {
            let _ = pending
                .reply
                .send(Err(Failure::Other(StoreError::Unavailable {
                    reason: "the task writing this store's batches of appends was stopped (its \
                             runtime shut down) before this append was sent; nothing was written"
                        .to_owned(),
                    source: None,
                })));
        }
    }
}

/// The same error for every append of a batch: the source shared.
#[derive(Debug, Clone)]
struct SharedSource(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SharedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn shared(source: Option<BoxError>) -> Option<SharedSource> {
    source.map(|s| SharedSource(Arc::from(s)))
}

fn boxed(source: Option<&SharedSource>) -> Option<BoxError> {
    source.map(|s| Box::new(s.clone()) as BoxError)
}

/// `error` once for each of `n` appends of a failed batch.
fn copies(error: StoreError, n: usize) -> Vec<StoreError> {
    type Make = fn(String, Option<BoxError>) -> StoreError;
    let (make, reason, source): (Make, String, Option<BoxError>) = match error {
        StoreError::UnknownOutcome { source } => (
            |_, source| StoreError::UnknownOutcome {
                source: source.unwrap_or_else(|| "the batch's outcome is unknown".into()),
            },
            String::new(),
            Some(source),
        ),
        StoreError::Unavailable { reason, source } => (
            |reason, source| StoreError::Unavailable { reason, source },
            reason,
            source,
        ),
        StoreError::Transient { reason, source } => (
            |reason, source| StoreError::Transient { reason, source },
            reason,
            source,
        ),
        StoreError::Backend { reason, source } => (
            |reason, source| StoreError::Backend { reason, source },
            reason,
            source,
        ),
        other => (
            |reason, source| StoreError::Backend { reason, source },
            "the batch of appends this one was written in failed".to_owned(),
            Some(Box::new(other)),
        ),
    };
    let source = shared(source);
    (0..n)
        .map(|_| make(reason.clone(), boxed(source.as_ref())))
        .collect()
}

/// Why a batch as a whole did not commit.
enum BatchFailure {
    /// Contention, a lock wait past the tightest bound, or an idempotency
    /// key recorded meanwhile: nothing was written, and each append is to
    /// be written on its own, so that what failed one fails only that one.
    Separately,
    /// Every append of the batch gets this outcome.
    All(StoreError),
}

/// What a statement of a batch's transaction failing means; `at_commit`
/// when the failure may have come after the server committed.
fn batch_failure(error: sqlx::Error, at_commit: bool) -> BatchFailure {
    if let Some(db) = error.as_database_error()
        && db.code().as_deref() == Some(error::LOCK_NOT_AVAILABLE)
    {
        return BatchFailure::Separately;
    }
    let failure = if at_commit {
        error::commit_failure(error)
    } else {
        error::classify(error)
    };
    match failure {
        Failure::Contention(_) => BatchFailure::Separately,
        Failure::Other(error) => BatchFailure::All(error),
    }
}

/// Each append's outcome from the batch function's rows (which name their
/// streams, and a stream belongs to one append of the batch).
fn batch_outcomes(
    rows: &[PgRow],
    requests: &[Arc<AppendRequest>],
) -> Result<Vec<Result<AppendResult, Failure>>, BatchFailure> {
    let owner: HashMap<&str, usize> = requests
        .iter()
        .enumerate()
        .flat_map(|(index, request)| {
            request
                .streams()
                .iter()
                .map(move |s| (s.stream_id.as_ref(), index))
        })
        .collect();
    let mut rows_of: Vec<Vec<&PgRow>> = vec![Vec::new(); requests.len()];
    for row in rows {
        let stream: &str = sqlx::Row::try_get(row, "o_stream_id")
            .map_err(|e| BatchFailure::All(error::to_store_error(e)))?;
        let Some(&index) = owner.get(stream) else {
            return Err(BatchFailure::All(crate::rows::corrupt(format!(
                "batch append reported unlisted stream {stream:?}"
            ))));
        };
        if let Some(mine) = rows_of.get_mut(index) {
            mine.push(row);
        }
    }
    Ok(requests
        .iter()
        .zip(rows_of)
        .map(|(request, rows)| append_outcome(rows, request).map_err(Failure::Other))
        .collect())
}

impl PostgresEventStore {
    /// An append through the group commit queue: its new stream rows
    /// created and its key looked up by itself, then written in the next
    /// batch.
    pub(super) async fn group_append(
        &self,
        committer: &Arc<Committer>,
        request: Arc<AppendRequest>,
    ) -> Result<AppendResult, Failure> {
        self.create_new_streams(&request)
            .await
            .map_err(Failure::Other)?;
        if let Some(key) = request.idempotency_key()
            && let Some(recorded) = self
                .recorded(key, request.key_purpose())
                .await
                .map_err(Failure::Other)?
        {
            return Ok(recorded);
        }
        let keyed = request.idempotency_key().is_some();
        let result = match committer.offer(&request) {
            Offer::Inline => {
                // Nothing to batch with: no hand-over to a writer task.
                let turn = InlineTurn {
                    store: self,
                    committer,
                    request: &request,
                    finished: false,
                };
                let result = self.write_one(&request, false).await;
                turn.finish();
                result
            }
            Offer::Queued {
                answer,
                start_writer,
            } => {
                if start_writer {
                    tokio::spawn(self.clone().write_batches(committer.clone()));
                }
                answer.await.unwrap_or_else(|_| {
                    Err(Failure::Other(StoreError::UnknownOutcome {
                        source: "the task writing this append's batch was stopped while the \
                                 batch was in flight"
                            .into(),
                    }))
                })
            }
        };
        if keyed && result.as_ref().is_ok_and(|r| !r.replayed) {
            self.purge_keys_now_and_then().await;
        }
        result
    }

    /// A writer: batches until the queue has nothing it may take.
    async fn write_batches(self, committer: Arc<Committer>) {
        let mut writer = Writer {
            committer,
            holding: Vec::new(),
            finished: false,
        };
        loop {
            let written = std::mem::take(&mut writer.holding);
            let Some(batch) = writer.committer.next_batch(&written) else {
                writer.finished = true;
                return;
            };
            let (requests, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.request, p.reply)).unzip();
            writer.holding.clone_from(&requests);
            let outcomes = self.write_batch(&requests).await;
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller gone meanwhile no longer needs its outcome.
                let _ = reply.send(outcome);
            }
        }
    }

    /// One outcome per request, in order.
    async fn write_batch(
        &self,
        requests: &[Arc<AppendRequest>],
    ) -> Vec<Result<AppendResult, Failure>> {
        if let [request] = requests {
            return vec![self.write_one(request, false).await];
        }
        if eventcore::telemetry::recording() {
            // Batch sizes are small.
            #[allow(clippy::cast_precision_loss)]
            metrics::histogram!(crate::telemetry::GROUP_COMMIT_BATCH).record(requests.len() as f64);
        }
        match self.write_together(requests).await {
            Ok(outcomes) => outcomes,
            Err(BatchFailure::All(error)) => copies(error, requests.len())
                .into_iter()
                .map(|e| Err(Failure::Other(e)))
                .collect(),
            Err(BatchFailure::Separately) => {
                if eventcore::telemetry::recording() {
                    metrics::counter!(crate::telemetry::GROUP_COMMIT_SPLIT).increment(1);
                }
                let mut tasks = tokio::task::JoinSet::new();
                for (index, request) in requests.iter().enumerate() {
                    let store = self.clone();
                    let request = request.clone();
                    tasks.spawn(async move { (index, store.write_one(&request, true).await) });
                }
                let mut outcomes: Vec<Option<Result<AppendResult, Failure>>> =
                    (0..requests.len()).map(|_| None).collect();
                while let Some(joined) = tasks.join_next().await {
                    if let Ok((index, outcome)) = joined
                        && let Some(slot) = outcomes.get_mut(index)
                    {
                        *slot = Some(outcome);
                    }
                }
                outcomes
                    .into_iter()
                    .map(|outcome| {
                        outcome.unwrap_or_else(|| {
                            Err(Failure::Other(StoreError::UnknownOutcome {
                                source: "the task writing this append on its own stopped".into(),
                            }))
                        })
                    })
                    .collect()
            }
        }
    }

    /// The batch in one transaction: the batch function, then the keys of
    /// the appends it wrote, then COMMIT (or the function alone, as one
    /// autocommit statement, when no append has a key).
    async fn write_together(
        &self,
        requests: &[Arc<AppendRequest>],
    ) -> Result<Vec<Result<AppendResult, Failure>>, BatchFailure> {
        let params = AppendParams::batch(requests.iter().map(AsRef::as_ref));
        let keyed = requests.iter().any(|r| r.idempotency_key().is_some());
        let mut connection = telemetry::connection(&self.writer, "write")
            .await
            .map_err(BatchFailure::All)?;
        if !keyed && !self.writes_in_transactions {
            let rows = self
                .batch_query(&params)
                .fetch_all(&mut *connection)
                .await
                .map_err(|e| batch_failure(e, true))?;
            return batch_outcomes(&rows, requests);
        }
        let mut tx = connection
            .begin_with(self.shared.begin_write.clone())
            .await
            .map_err(|e| batch_failure(e, false))?;
        let rows = self
            .batch_query(&params)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| batch_failure(e, false))?;
        let outcomes = batch_outcomes(&rows, requests)?;
        let mut keys = Vec::new();
        let mut results = Vec::new();
        let mut purposes = Vec::new();
        for (request, outcome) in requests.iter().zip(&outcomes) {
            if let (Some(key), Ok(result)) = (request.idempotency_key(), outcome) {
                keys.push(key.as_ref());
                results.push(Json(result));
                purposes.push(request.key_purpose().map(KeyPurpose::as_str));
            }
        }
        if !keys.is_empty() {
            sqlx::query(self.shared.queries.record_keys.clone())
                .persistent(self.persistent())
                .bind(&keys)
                .bind(&results)
                .bind(&purposes)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if error::is_duplicate_key(&e) {
                        // Recorded by a concurrent append with that key.
                        BatchFailure::Separately
                    } else {
                        batch_failure(e, false)
                    }
                })?;
        }
        tx.commit().await.map_err(|e| batch_failure(e, true))?;
        Ok(outcomes)
    }

    fn batch_query<'q>(
        &'q self,
        params: &'q AppendParams<'q>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(self.shared.queries.append_batch.clone())
            .persistent(self.persistent())
            .bind(&params.streams)
            .bind(&params.expected)
            .bind(&params.stream_append)
            .bind(&params.event_stream)
            .bind(&params.ids)
            .bind(&params.types)
            .bind(&params.payloads)
            .bind(&params.metadata)
            .bind(&params.schema_versions)
            .bind(&self.shared.channel)
            .bind(params.lock_timeout_ms)
    }
}
