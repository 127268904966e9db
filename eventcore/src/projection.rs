//! Projections: read models folded from the global order, with checkpoints.
//!
//! A [`Projection`] folds stored events into a read model. A
//! [`ProjectionRunner`] feeds it: it loads the projection's [`Checkpoint`],
//! subscribes to the store after that position (catch-up, then live
//! appends), applies each event in global order, and saves the checkpoint
//! every so many events or milliseconds, on pause and on a graceful stop.
//! Delivery is at least once: after a crash the events since the last saved
//! checkpoint are applied again, so `apply` should be idempotent (or keep
//! its read model and checkpoint in one transaction, where the adapter
//! offers that).
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use eventcore::{Projection, ProjectionOptions, ProjectionRunner, RecordedEvent};
//! use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
//!
//! #[derive(Default)]
//! struct CountEvents(u64);
//!
//! impl Projection for CountEvents {
//!     type Error = Infallible;
//!     fn name(&self) -> &str { "count-events" }
//!     async fn apply(&mut self, _event: &RecordedEvent) -> Result<(), Infallible> {
//!         self.0 += 1;
//!         Ok(())
//!     }
//!     async fn reset(&mut self) -> Result<(), Infallible> {
//!         self.0 = 0;
//!         Ok(())
//!     }
//! }
//!
//! let store = InMemoryEventStore::new();
//! let handle = ProjectionRunner::new(store, CountEvents::default(), InMemoryCheckpointStore::new())
//!     .with_options(ProjectionOptions::default())
//!     .start();
//! let status = handle.status();
//! assert_eq!(status.events_processed, 0);
//! let projection = handle.stop().await?; // finishes the event in hand, saves the checkpoint
//! assert_eq!(projection.0, 0);
//! # Ok(())
//! # }
//! ```

use std::{fmt, future::Future, num::NonZeroUsize, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    EventStore, EventType, GlobalPosition, ReadAllQuery, RecordedEvent, RetryPolicy, StoreError,
};

/// A read model kept up to date from the global order.
pub trait Projection: Send + 'static {
    /// What `apply` or `reset` can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The projection's name: its checkpoint's key. Unique per store.
    fn name(&self) -> &str;

    /// The event types this projection wants; `None` (the default) for all.
    fn event_types(&self) -> Option<Vec<EventType>> {
        None
    }

    /// Folds one event into the read model.
    fn apply(
        &mut self,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Clears the read model, before a rebuild from the first event.
    fn reset(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called whenever the runner saves the checkpoint, before it does.
    ///
    /// A projection whose read model lives in the same database as the
    /// checkpoints can write the checkpoint in the transaction that holds its
    /// read-model changes since the last checkpoint, commit both, and return
    /// `true`: the runner then does not save the checkpoint itself, and every
    /// event's effect is committed exactly once with the position that
    /// covers it. The default returns `false` (at-least-once delivery).
    fn save_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        let _ = checkpoint;
        std::future::ready(Ok(false))
    }
}

/// What a projection's runner is doing, as stored in its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// Applying events as they come.
    Running,
    /// Paused by an operator; resumes from its checkpoint.
    Paused,
    /// Cleared and applying the global order from the start again.
    Rebuilding,
    /// Stopped by an error it was told not to skip.
    Failed,
    /// Stopped gracefully.
    Stopped,
    /// Waiting for another runner of the same projection to give up its
    /// leadership (never stored: the checkpoint belongs to the leader).
    Standby,
}

impl ProjectionState {
    /// The state's name as stored (`running`, `paused`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Standby => "standby",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Paused,
            Self::Rebuilding,
            Self::Failed,
            Self::Stopped,
            Self::Standby,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }
}

impl fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a projection is in the global order, and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The projection's name.
    pub name: String,
    /// The last event applied (or skipped); [`GlobalPosition::START`] before the first.
    pub position: GlobalPosition,
    /// Events applied since the projection (last) started from zero.
    pub events_processed: u64,
    /// What the runner is doing.
    pub state: ProjectionState,
    /// The last error `apply` returned, if any.
    pub last_error: Option<String>,
    /// When this checkpoint was saved.
    pub updated_at: DateTime<Utc>,
}

impl Checkpoint {
    /// A projection that has seen nothing yet.
    pub fn initial(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            position: GlobalPosition::START,
            events_processed: 0,
            state: ProjectionState::Running,
            last_error: None,
            updated_at: Utc::now(),
        }
    }
}

/// Durable storage of projection checkpoints.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The checkpoint saved under `name`, if any.
    fn load(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;

    /// Saves `checkpoint` under its name, replacing the previous one.
    fn save(&self, checkpoint: &Checkpoint) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every saved checkpoint, by name: what an operator looks at.
    fn list(&self) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;
}

/// Who may run a projection: of all runners of one projection name, only
/// the holder of its lease applies events and saves the checkpoint.
pub trait Leadership: Send + Sync + 'static {
    /// Proof of leadership; dropping it gives leadership up.
    type Lease: Send + 'static;

    /// Waits until this runner leads projection `name`.
    fn acquire(&self, name: &str) -> impl Future<Output = Result<Self::Lease, StoreError>> + Send;

    /// Leads projection `name` if no one else does; `None` if another runner leads.
    fn try_acquire(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Self::Lease>, StoreError>> + Send;

    /// Whether `lease` still holds; checked before every checkpoint save.
    fn holds(&self, lease: &mut Self::Lease) -> impl Future<Output = bool> + Send;
}

/// No coordination: every runner leads. For deployments that run each
/// projection in one process only.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoleRunner;

impl Leadership for SoleRunner {
    type Lease = ();

    fn acquire(&self, _name: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(Ok(()))
    }

    fn try_acquire(
        &self,
        _name: &str,
    ) -> impl Future<Output = Result<Option<()>, StoreError>> + Send {
        std::future::ready(Ok(Some(())))
    }

    fn holds(&self, _lease: &mut ()) -> impl Future<Output = bool> + Send {
        std::future::ready(true)
    }
}

/// What the runner does when `apply` fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorPolicy {
    /// Stop: save the checkpoint before the failing event, state `failed` (the default).
    Stop,
    /// Try the event again after the policy's delays; stop as above when they run out.
    Retry(RetryPolicy),
    /// Record the error in the checkpoint and go on with the next event.
    Skip,
}

/// How a [`ProjectionRunner`] batches checkpoints and handles failures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionOptions {
    checkpoint_every_events: u64,
    checkpoint_interval: Duration,
    on_error: ErrorPolicy,
    page_size: NonZeroUsize,
    wait_for_leadership: bool,
}

impl Default for ProjectionOptions {
    /// A checkpoint every 100 events or 1 s, stop on error, pages of 1,000
    /// events, wait in standby while another runner leads.
    fn default() -> Self {
        Self {
            checkpoint_every_events: 100,
            checkpoint_interval: Duration::from_secs(1),
            on_error: ErrorPolicy::Stop,
            page_size: crate::store::DEFAULT_PAGE_SIZE,
            wait_for_leadership: true,
        }
    }
}

impl ProjectionOptions {
    /// Saves the checkpoint after this many events (at least 1).
    #[must_use]
    pub fn checkpoint_every_events(mut self, events: u64) -> Self {
        self.checkpoint_every_events = events.max(1);
        self
    }

    /// Saves the checkpoint at least this often while events arrive.
    #[must_use]
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// What to do when `apply` fails.
    #[must_use]
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// With `false`, a runner whose projection another runner leads ends at
    /// once with [`ProjectionError::AnotherLeads`] instead of waiting in standby.
    #[must_use]
    pub fn wait_for_leadership(mut self, wait: bool) -> Self {
        self.wait_for_leadership = wait;
        self
    }

    /// How many events to read per page while catching up.
    #[must_use]
    pub fn page_size(mut self, size: NonZeroUsize) -> Self {
        self.page_size = size;
        self
    }
}

/// The runner stopped without being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// `apply` or `reset` failed and the error policy says stop.
    #[error("projection {name} failed at the event after {position}: {source}")]
    Apply {
        /// The projection's name.
        name: String,
        /// The last position applied before the failure.
        position: GlobalPosition,
        /// The projection's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The checkpoint could not be loaded or saved.
    #[error("projection {name}: checkpoint store failed: {source}")]
    Checkpoint {
        /// The projection's name.
        name: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Leadership could not be acquired (the coordination backend failed).
    #[error("projection {name}: could not acquire leadership: {source}")]
    Leadership {
        /// The projection's name.
        name: String,
        /// The backend's error.
        #[source]
        source: StoreError,
    },
    /// Another runner leads this projection and the runner was told not to wait
    /// ([`ProjectionOptions::wait_for_leadership`]).
    #[error("projection {name}: another runner leads it")]
    AnotherLeads {
        /// The projection's name.
        name: String,
    },
    /// The runner lost its lease (for example its lock connection dropped);
    /// it stopped without saving, leaving the checkpoint to the new leader.
    #[error("projection {name}: leadership lost; stopped without saving")]
    LostLeadership {
        /// The projection's name.
        name: String,
    },
    /// The runner's task panicked or was cancelled.
    #[error("projection {name}: the runner task ended abnormally: {reason}")]
    Aborted {
        /// The projection's name.
        name: String,
        /// What tokio reported.
        reason: String,
    },
}

/// A snapshot of a running projection, from [`ProjectionHandle::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// What the runner is doing.
    pub state: ProjectionState,
    /// The last event applied or skipped.
    pub position: GlobalPosition,
    /// Events applied since the projection started from zero.
    pub events_processed: u64,
    /// Events skipped after an error (policy [`ErrorPolicy::Skip`]) by this runner.
    pub events_skipped: u64,
    /// When the runner last applied an event.
    pub last_processed_at: Option<DateTime<Utc>>,
    /// The last error `apply` returned.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Stop,
    /// Set by [`ProjectionHandle::abort`] before it cancels the task, so that
    /// a runner still busy on another thread sees a crash, not a handle
    /// dropped (which it would take as a stop, and save).
    Abort,
}

/// The error of a runner that was aborted.
fn aborted(name: &str) -> ProjectionError {
    ProjectionError::Aborted {
        name: name.to_owned(),
        reason: "aborted".to_owned(),
    }
}

/// Runs one [`Projection`] against a store; see the module docs.
#[derive(Debug)]
pub struct ProjectionRunner<S, P, K, L = SoleRunner> {
    store: S,
    projection: P,
    checkpoints: K,
    leadership: L,
    options: ProjectionOptions,
    rebuild: bool,
}

impl<S, P, K> ProjectionRunner<S, P, K>
where
    S: EventStore + 'static,
    P: Projection,
    K: CheckpointStore,
{
    /// A runner for `projection` on `store`, keeping its checkpoint in
    /// `checkpoints`, and leading without coordination ([`SoleRunner`]).
    pub fn new(store: S, projection: P, checkpoints: K) -> Self {
        Self {
            store,
            projection,
            checkpoints,
            leadership: SoleRunner,
            options: ProjectionOptions::default(),
            rebuild: false,
        }
    }
}

impl<S, P, K, L> ProjectionRunner<S, P, K, L>
where
    S: EventStore + 'static,
    P: Projection,
    K: CheckpointStore,
    L: Leadership,
{
    /// Runs only while holding `leadership`'s lease for the projection's
    /// name: a second runner of the same name waits in state `standby`
    /// and takes over when the leader stops or dies.
    pub fn with_leadership<L2: Leadership>(self, leadership: L2) -> ProjectionRunner<S, P, K, L2> {
        ProjectionRunner {
            store: self.store,
            projection: self.projection,
            checkpoints: self.checkpoints,
            leadership,
            options: self.options,
            rebuild: self.rebuild,
        }
    }

    /// Sets checkpoint batching and the error policy.
    #[must_use]
    pub fn with_options(mut self, options: ProjectionOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts from zero: calls the projection's `reset`, then applies the
    /// whole global order, with the checkpoint in state `rebuilding` until caught up.
    #[must_use]
    pub fn rebuild_from_zero(mut self) -> Self {
        self.rebuild = true;
        self
    }

    /// Spawns the runner on the current tokio runtime.
    pub fn start(self) -> ProjectionHandle<P> {
        let name = self.projection.name().to_owned();
        let (control, control_rx) = watch::channel(Control::Run);
        let (status_tx, status) = watch::channel(ProjectionStatus {
            name: name.clone(),
            state: ProjectionState::Standby,
            position: GlobalPosition::START,
            events_processed: 0,
            events_skipped: 0,
            last_processed_at: None,
            last_error: None,
        });
        let task = tokio::spawn(self.run(control_rx, status_tx));
        ProjectionHandle {
            name,
            control,
            status,
            task,
        }
    }

    /// Becomes the leader (or not), then runs as one.
    async fn run(
        self,
        mut control: watch::Receiver<Control>,
        status: watch::Sender<ProjectionStatus>,
    ) -> Result<P, ProjectionError> {
        let name = self.projection.name().to_owned();
        if !self.options.wait_for_leadership {
            let attempt = self.leadership.try_acquire(&name).await;
            match attempt.map_err(|source| ProjectionError::Leadership {
                name: name.clone(),
                source,
            })? {
                Some(lease) => return self.lead(lease, control, status).await,
                None => return Err(ProjectionError::AnotherLeads { name }),
            }
        }
        let lease = tokio::select! {
            lease = self.leadership.acquire(&name) => lease.map_err(|source| ProjectionError::Leadership {
                name: name.clone(),
                source,
            })?,
            _ = control.wait_for(|c| *c == Control::Stop) => return Ok(self.projection),
        };
        self.lead(lease, control, status).await
    }

    /// Runs as the projection's leader.
    async fn lead(
        mut self,
        mut lease: L::Lease,
        mut control: watch::Receiver<Control>,
        status: watch::Sender<ProjectionStatus>,
    ) -> Result<P, ProjectionError> {
        let name = self.projection.name().to_owned();
        let checkpoint_error = |source| ProjectionError::Checkpoint {
            name: name.clone(),
            source,
        };
        let mut checkpoint = if self.rebuild {
            self.projection
                .reset()
                .await
                .map_err(|e| ProjectionError::Apply {
                    name: name.clone(),
                    position: GlobalPosition::START,
                    source: Box::new(e),
                })?;
            let mut fresh = Checkpoint::initial(&name);
            fresh.state = ProjectionState::Rebuilding;
            let mut live = Live::new(fresh);
            self.save(&mut lease, &mut live, &status).await?;
            live.checkpoint
        } else {
            self.checkpoints
                .load(&name)
                .await
                .map_err(checkpoint_error)?
                .unwrap_or_else(|| Checkpoint::initial(&name))
        };
        if checkpoint.state != ProjectionState::Rebuilding {
            checkpoint.state = ProjectionState::Running;
        }
        let mut live = Live::new(checkpoint);
        status.send_replace(live.status());

        let mut query =
            ReadAllQuery::after(live.checkpoint.position).page_size(self.options.page_size);
        if let Some(types) = self.projection.event_types() {
            query = query.event_types(types);
        }
        let mut subscription = self.store.subscribe(query);
        let mut tick = tokio::time::interval_at(
            Instant::now() + self.options.checkpoint_interval,
            self.options.checkpoint_interval,
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let requested = *control.borrow_and_update();
            match requested {
                Control::Stop => {
                    live.checkpoint.state = ProjectionState::Stopped;
                    self.save(&mut lease, &mut live, &status).await?;
                    return Ok(self.projection);
                }
                Control::Pause => {
                    live.checkpoint.state = ProjectionState::Paused;
                    self.save(&mut lease, &mut live, &status).await?;
                    // Wait for resume or stop; the subscription is not polled meanwhile.
                    let resumed = control.wait_for(|c| *c != Control::Pause).await.map(|c| *c);
                    if matches!(resumed, Ok(Control::Abort)) {
                        return Err(aborted(&name));
                    }
                    if resumed.is_err() {
                        // The handle is gone: stay stopped.
                        live.checkpoint.state = ProjectionState::Stopped;
                        self.save(&mut lease, &mut live, &status).await?;
                        return Ok(self.projection);
                    }
                    live.checkpoint.state = ProjectionState::Running;
                    status.send_replace(live.status());
                    continue;
                }
                Control::Abort => return Err(aborted(&name)),
                Control::Run => {}
            }
            tokio::select! {
                biased;
                changed = control.changed() => {
                    if *control.borrow() == Control::Abort {
                        return Err(aborted(&name));
                    }
                    if changed.is_err() {
                        // The handle is gone: stop as if asked to.
                        live.checkpoint.state = ProjectionState::Stopped;
                        self.save(&mut lease, &mut live, &status).await?;
                        return Ok(self.projection);
                    }
                }
                _ = tick.tick() => {
                    if live.unsaved > 0 {
                        self.save(&mut lease, &mut live, &status).await?;
                    }
                }
                item = subscription.next() => match item {
                    None => {
                        live.checkpoint.state = ProjectionState::Stopped;
                        self.save(&mut lease, &mut live, &status).await?;
                        return Ok(self.projection);
                    }
                    Some(Err(error)) => {
                        // The subscription pauses and retries by itself.
                        tracing::warn!(projection = %name, %error, "reading the global order failed");
                    }
                    Some(Ok(event)) => {
                        self.handle_event(&mut lease, &event, &mut live, &status).await?;
                        if live.unsaved >= self.options.checkpoint_every_events {
                            self.save(&mut lease, &mut live, &status).await?;
                        }
                    }
                }
            }
        }
    }

    /// Applies one event under the error policy, then advances the position.
    async fn handle_event(
        &mut self,
        lease: &mut L::Lease,
        event: &RecordedEvent,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), ProjectionError> {
        let mut delays = match self.options.on_error {
            ErrorPolicy::Retry(policy) => Some(policy.delays()),
            _ => None,
        };
        loop {
            match self.projection.apply(event).await {
                Ok(()) => {
                    live.checkpoint.events_processed += 1;
                    live.last_processed_at = Some(Utc::now());
                    break;
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::warn!(projection = %live.checkpoint.name, event = %event.id, error = %message, "projection apply failed");
                    live.checkpoint.last_error = Some(message);
                    if self.options.on_error == ErrorPolicy::Skip {
                        live.skipped += 1;
                        break;
                    }
                    if let Some(delay) = delays.as_mut().and_then(Iterator::next) {
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    live.checkpoint.state = ProjectionState::Failed;
                    self.save(lease, live, status).await?;
                    return Err(ProjectionError::Apply {
                        name: live.checkpoint.name.clone(),
                        position: live.checkpoint.position,
                        source: Box::new(error),
                    });
                }
            }
        }
        live.checkpoint.position = event.position;
        live.unsaved += 1;
        status.send_replace(live.status());
        Ok(())
    }

    /// Saves the checkpoint (through the projection, when it keeps it with
    /// its read model) and publishes the status; refuses once the lease is lost.
    async fn save(
        &mut self,
        lease: &mut L::Lease,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), ProjectionError> {
        if !self.leadership.holds(lease).await {
            return Err(ProjectionError::LostLeadership {
                name: live.checkpoint.name.clone(),
            });
        }
        live.checkpoint.updated_at = Utc::now();
        let saved_with_read_model = self
            .projection
            .save_checkpoint(&live.checkpoint)
            .await
            .map_err(|e| ProjectionError::Apply {
                name: live.checkpoint.name.clone(),
                position: live.checkpoint.position,
                source: Box::new(e),
            })?;
        if !saved_with_read_model {
            self.checkpoints
                .save(&live.checkpoint)
                .await
                .map_err(|source| ProjectionError::Checkpoint {
                    name: live.checkpoint.name.clone(),
                    source,
                })?;
        }
        live.unsaved = 0;
        status.send_replace(live.status());
        Ok(())
    }
}

/// The runner's working state.
struct Live {
    checkpoint: Checkpoint,
    skipped: u64,
    last_processed_at: Option<DateTime<Utc>>,
    unsaved: u64,
}

impl Live {
    fn new(checkpoint: Checkpoint) -> Self {
        Self {
            checkpoint,
            skipped: 0,
            last_processed_at: None,
            unsaved: 0,
        }
    }

    fn status(&self) -> ProjectionStatus {
        ProjectionStatus {
            name: self.checkpoint.name.clone(),
            state: self.checkpoint.state,
            position: self.checkpoint.position,
            events_processed: self.checkpoint.events_processed,
            events_skipped: self.skipped,
            last_processed_at: self.last_processed_at,
            last_error: self.checkpoint.last_error.clone(),
        }
    }
}

/// Controls a started [`ProjectionRunner`]. Dropping it stops the runner gracefully.
#[derive(Debug)]
pub struct ProjectionHandle<P> {
    name: String,
    control: watch::Sender<Control>,
    status: watch::Receiver<ProjectionStatus>,
    task: JoinHandle<Result<P, ProjectionError>>,
}

impl<P> ProjectionHandle<P> {
    /// The projection's current state, position and counters.
    pub fn status(&self) -> ProjectionStatus {
        self.status.borrow().clone()
    }

    /// Waits until `condition` holds for the status (or the runner ends).
    ///
    /// # Errors
    /// The last status, if the runner ended first.
    pub async fn wait_for(
        &self,
        condition: impl FnMut(&ProjectionStatus) -> bool,
    ) -> Result<ProjectionStatus, ProjectionStatus> {
        let mut status = self.status.clone();
        match status.wait_for(condition).await {
            Ok(found) => Ok(found.clone()),
            Err(_) => Err(self.status()),
        }
    }

    /// Pauses after the event in hand, saving the checkpoint.
    pub fn pause(&self) {
        self.control.send_replace(Control::Pause);
    }

    /// Resumes a paused runner from where it paused.
    pub fn resume(&self) {
        self.control.send_replace(Control::Run);
    }

    /// Events in the global order after the projection's position (of the
    /// types it wants): how far behind it is. Counts by reading, so it costs
    /// as much as the lag is long.
    ///
    /// # Errors
    /// [`StoreError`] if the store cannot be read.
    pub async fn lag<S: EventStore>(
        &self,
        store: &S,
        event_types: Option<Vec<EventType>>,
    ) -> Result<u64, StoreError> {
        let mut query = ReadAllQuery::after(self.status().position);
        if let Some(types) = event_types {
            query = query.event_types(types);
        }
        let mut behind = 0_u64;
        loop {
            let page = store.read_all(&query).await?;
            let Some(last) = page.last() else {
                return Ok(behind);
            };
            behind += page.len() as u64;
            query.after = last.position;
        }
    }

    /// Stops gracefully: finishes the event in hand, saves the checkpoint,
    /// and gives the projection back.
    ///
    /// # Errors
    /// [`ProjectionError`] if the runner had stopped on an error.
    pub async fn stop(self) -> Result<P, ProjectionError> {
        self.control.send_replace(Control::Stop);
        self.join().await
    }

    /// Waits for the runner to end by itself (an error, or the store's subscription ending).
    ///
    /// # Errors
    /// [`ProjectionError`] if it stopped on an error.
    pub async fn join(self) -> Result<P, ProjectionError> {
        match self.task.await {
            Ok(result) => result,
            Err(error) => Err(ProjectionError::Aborted {
                name: self.name,
                reason: error.to_string(),
            }),
        }
    }

    /// Kills the runner at once, without saving a checkpoint: what a crash
    /// does. Events since the last saved checkpoint will be applied again.
    pub fn abort(self) {
        self.control.send_replace(Control::Abort);
        self.task.abort();
    }
}
