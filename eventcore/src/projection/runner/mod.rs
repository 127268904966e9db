//! The runner: competes for leadership, then applies the global order as leader.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

use super::{
    CheckpointStore, Leadership, PendingRequest, Projection, ProjectionError, ProjectionHandle,
    ProjectionOptions, ProjectionState, ProjectionStatus, SoleRunner, handle::Control,
};
use crate::{EventStore, GlobalPosition, StoreError};

mod lead;

/// The first pause in standby after the store failed; doubles up to [`STANDBY_MAX_PAUSE`].
const STANDBY_MIN_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause in standby between two attempts on an unreachable store.
const STANDBY_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Runs one [`Projection`] against a store; see the module docs.
///
/// ```
/// use eventcore::{ProjectionRunner, ProjectionState};
/// use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
/// # use std::convert::Infallible;
/// # use eventcore::{Projection, RecordedEvent};
/// # #[derive(Default)]
/// # struct CountEvents(u64);
/// # impl Projection for CountEvents {
/// #     type Error = Infallible;
/// #     fn name(&self) -> &str { "count-events" }
/// #     async fn apply(&mut self, _: &RecordedEvent) -> Result<(), Infallible> { self.0 += 1; Ok(()) }
/// #     async fn reset(&mut self) -> Result<(), Infallible> { self.0 = 0; Ok(()) }
/// # }
/// # async fn append_one(store: &eventcore_memory::InMemoryEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// #     use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamId};
/// #     let event = NewEvent::from_parts(EventType::try_new("Pinged")?, serde_json::json!({}), EventMetadata::default())?;
/// #     store.append(AppendRequest::single(StreamId::try_new("host-1")?, ExpectedVersion::Any, vec![event])).await?;
/// #     Ok(())
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// append_one(&store).await?;
/// let checkpoints = InMemoryCheckpointStore::new();
/// let handle = ProjectionRunner::new(store.clone(), CountEvents::default(), checkpoints.clone()).start();
/// handle.wait_for(|s| s.events_processed == 1).await.map_err(|s| format!("ended: {s:?}"))?;
/// let counted = handle.stop().await?;
/// assert_eq!(counted.0, 1);
///
/// // A second run resumes after its checkpoint: nothing is applied twice.
/// let handle = ProjectionRunner::new(store, CountEvents::default(), checkpoints).start();
/// handle.wait_for(|s| s.state == ProjectionState::Running).await.map_err(|s| format!("ended: {s:?}"))?;
/// assert_eq!(handle.stop().await?.0, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ProjectionRunner<S, P, K, L = SoleRunner> {
    store: S,
    projection: P,
    checkpoints: K,
    leadership: L,
    options: ProjectionOptions,
    rebuild: bool,
    /// The operator's rebuild request being carried out, cleared once the reset is saved.
    rebuild_request: Option<PendingRequest>,
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
            rebuild_request: None,
        }
    }
}

/// How a spell of leadership ended.
enum Led {
    /// Asked to stop, the handle is gone, or the subscription ended: the runner ends.
    Stopped,
    /// The lease or the store was lost: back to standby, and compete again.
    Interrupted(String),
    /// The runner ends with this error.
    Failed(ProjectionError),
    /// An operator asked for a rebuild: start over under the same lease.
    Rebuild(PendingRequest),
}

/// Pauses between attempts on a store that failed: 100 ms doubling to 5 s, with jitter.
fn standby_pauses() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(STANDBY_MIN_PAUSE)
        .with_max_delay(STANDBY_MAX_PAUSE)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// A timer that first fires after `period`, then every `period`, never catching up on missed ticks.
fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

/// Resolves when a stop or an abort is requested; a dropped handle counts as a stop.
async fn stop_requested(control: &mut watch::Receiver<Control>) -> Control {
    match control
        .wait_for(|c| matches!(c, Control::Stop | Control::Abort))
        .await
    {
        Ok(requested) => *requested,
        Err(_) => Control::Stop,
    }
}

/// Sleeps for `pause` unless a stop or abort comes first, which it returns.
async fn pause_unless_stopped(
    control: &mut watch::Receiver<Control>,
    pause: Duration,
) -> Option<Control> {
    tokio::select! {
        requested = stop_requested(control) => Some(requested),
        () = tokio::time::sleep(pause) => None,
    }
}

/// Waits for the lease, or (told not to wait) tries once: `None` if another leads.
async fn attempt_lease<L: Leadership>(
    leadership: &L,
    name: &str,
    wait: bool,
) -> Result<Option<L::Lease>, StoreError> {
    if wait {
        leadership.acquire(name).await.map(Some)
    } else {
        leadership.try_acquire(name).await
    }
}

/// The most characters a projection name may have.
const PROJECTION_NAME_MAX_CHARS: usize = 255;

/// Whether every checkpoint store can key a checkpoint by `name`
/// (PostgreSQL's text cannot hold NUL; logs should not hold control characters).
fn check_name(name: &str) -> Result<(), ProjectionError> {
    let invalid = |reason| ProjectionError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > PROJECTION_NAME_MAX_CHARS {
        return Err(invalid("it has more than 255 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "it holds a control character (NUL, newline, escape, ...)",
        ));
    }
    Ok(())
}

/// The error of a runner that was aborted.
fn aborted(name: &str) -> ProjectionError {
    ProjectionError::Aborted {
        name: name.to_owned(),
        reason: "aborted".to_owned(),
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
    /// and takes over when the leader stops, dies or loses its lease.
    pub fn with_leadership<L2: Leadership>(self, leadership: L2) -> ProjectionRunner<S, P, K, L2> {
        ProjectionRunner {
            store: self.store,
            projection: self.projection,
            checkpoints: self.checkpoints,
            leadership,
            options: self.options,
            rebuild: self.rebuild,
            rebuild_request: self.rebuild_request,
        }
    }

    /// Sets checkpoint batching and the error policy.
    #[must_use]
    pub fn with_options(mut self, options: ProjectionOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts from zero: calls the projection's `reset`, then applies the
    /// whole global order, with the checkpoint in state `rebuilding` until
    /// it has caught up with the head, then `running`.
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
        crate::telemetry::ProjectionMeter::new(&name).follow_state(status.clone());
        let task = tokio::spawn(self.run(control_rx, status_tx));
        ProjectionHandle {
            name,
            control,
            status,
            task,
        }
    }

    /// Competes and leads until the runner ends, then publishes how it ended.
    async fn run(
        mut self,
        mut control: watch::Receiver<Control>,
        status: watch::Sender<ProjectionStatus>,
    ) -> Result<P, ProjectionError> {
        let outcome = self.compete_and_lead(&mut control, &status).await;
        match &outcome {
            Ok(()) => status.send_modify(|s| s.state = ProjectionState::Stopped),
            Err(error) => status.send_modify(|s| {
                s.state = ProjectionState::Failed;
                s.last_error = Some(crate::error_chain(error));
            }),
        }
        outcome.map(|()| self.projection)
    }

    /// Standby, lead, and back to standby after every interruption.
    async fn compete_and_lead(
        &mut self,
        control: &mut watch::Receiver<Control>,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), ProjectionError> {
        let name = self.projection.name().to_owned();
        check_name(&name)?;
        let mut pauses = standby_pauses();
        loop {
            status.send_modify(|s| s.state = ProjectionState::Standby);
            let Some(lease) = self.compete(&name, control, status, &mut pauses).await? else {
                return Ok(());
            };
            match self.lead(lease, control, status, &mut pauses).await {
                Led::Stopped | Led::Rebuild(_) => return Ok(()),
                Led::Failed(error) => return Err(error),
                Led::Interrupted(reason) => {
                    tracing::warn!(projection = %name, %reason, "stopped applying; back to standby");
                    status.send_modify(|s| {
                        s.state = ProjectionState::Standby;
                        s.last_error = Some(reason);
                    });
                    let pause = pauses.next().unwrap_or(STANDBY_MAX_PAUSE);
                    match pause_unless_stopped(control, pause).await {
                        Some(Control::Abort) => return Err(aborted(&name)),
                        Some(_) => return Ok(()),
                        None => {}
                    }
                }
            }
        }
    }

    /// Waits for the lease, through store failures; `None` when asked to stop first.
    async fn compete(
        &mut self,
        name: &str,
        control: &mut watch::Receiver<Control>,
        status: &watch::Sender<ProjectionStatus>,
        pauses: &mut ExponentialBackoff,
    ) -> Result<Option<L::Lease>, ProjectionError> {
        loop {
            let attempt = tokio::select! {
                biased;
                requested = stop_requested(control) => {
                    return match requested {
                        Control::Abort => Err(aborted(name)),
                        _ => Ok(None),
                    };
                }
                attempt = attempt_lease(&self.leadership, name, self.options.wait_for_leadership) => attempt,
            };
            match attempt {
                Ok(Some(lease)) => return Ok(Some(lease)),
                Ok(None) => {
                    return Err(ProjectionError::AnotherLeads {
                        name: name.to_owned(),
                    });
                }
                Err(error) => {
                    tracing::warn!(projection = %name, %error, "could not compete for leadership; trying again");
                    status.send_modify(|s| s.last_error = Some(crate::error_chain(&error)));
                    let pause = pauses.next().unwrap_or(STANDBY_MAX_PAUSE);
                    match pause_unless_stopped(control, pause).await {
                        Some(Control::Abort) => return Err(aborted(name)),
                        Some(_) => return Ok(None),
                        None => {}
                    }
                }
            }
        }
    }
}
