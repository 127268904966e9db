//! The handle of a started runner: its status and its controls.

use chrono::{DateTime, Utc};
use tokio::{sync::watch, task::JoinHandle};

use super::{ProjectionError, ProjectionState};
use crate::{EventStore, EventType, GlobalPosition, ReadAllQuery, StoreError};

/// A snapshot of a running projection, from [`ProjectionHandle::status`].
///
/// See [`ProjectionHandle`]: [`status`](ProjectionHandle::status) reads it
/// now, [`wait_for`](ProjectionHandle::wait_for) waits for one that fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// What the runner is doing; `failed` or `stopped` once its task ended.
    pub state: ProjectionState,
    /// The last event applied or skipped.
    pub position: GlobalPosition,
    /// Events applied since the projection started from zero.
    pub events_processed: u64,
    /// Events skipped after an error (policy [`ErrorPolicy::Skip`](crate::ErrorPolicy::Skip)) by this runner.
    pub events_skipped: u64,
    /// When the runner last applied an event.
    pub last_processed_at: Option<DateTime<Utc>>,
    /// The last error: the projection's, an unreadable event, or the store's
    /// (while the runner waits an outage out in standby).
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    Run,
    Pause,
    Stop,
    /// Set by [`ProjectionHandle::abort`] before it cancels the task, so that
    /// a runner still busy on another thread sees a crash, not a handle
    /// dropped (which it would take as a stop, and save).
    Abort,
}

/// Controls a started [`ProjectionRunner`](crate::ProjectionRunner). Dropping it stops the runner gracefully.
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
/// let handle = ProjectionRunner::new(store.clone(), CountEvents::default(), InMemoryCheckpointStore::new()).start();
/// handle.pause();
/// handle.wait_for(|s| s.state == ProjectionState::Paused).await.map_err(|s| format!("ended: {s:?}"))?;
/// append_one(&store).await?;
/// assert_eq!(handle.status().events_processed, 0); // paused: nothing applied
/// handle.resume();
/// handle.wait_for(|s| s.events_processed == 1).await.map_err(|s| format!("ended: {s:?}"))?;
/// assert_eq!(handle.lag(&store, None).await?, 0);
/// handle.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ProjectionHandle<P> {
    pub(super) name: String,
    pub(super) control: watch::Sender<Control>,
    pub(super) status: watch::Receiver<ProjectionStatus>,
    pub(super) task: JoinHandle<Result<P, ProjectionError>>,
}

impl<P> ProjectionHandle<P> {
    /// The projection's current state, position and counters. Once the
    /// runner's task has ended the state is `stopped` or `failed` (with the
    /// reason in `last_error`), even if it ended by a panic.
    pub fn status(&self) -> ProjectionStatus {
        let mut status = self.status.borrow().clone();
        if self.task.is_finished() && !status.state.is_terminal() {
            // Only a panic or a cancellation ends the task without publishing
            // a final state.
            status.state = ProjectionState::Failed;
            status.last_error = Some("the runner task ended abnormally".to_owned());
        }
        status
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
    /// as much as the lag is long. Sets the
    /// [`eventcore_projection_lag_events`](crate::telemetry::PROJECTION_LAG_EVENTS)
    /// gauge when a recorder is installed.
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
                if crate::telemetry::recording() {
                    crate::telemetry::ProjectionMeter::new(&self.name).lag(behind);
                }
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
