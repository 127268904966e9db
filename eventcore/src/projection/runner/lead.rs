//! The runner as leader: take over the checkpoint, apply batches under the
//! error policy, carry out requests, save fenced checkpoints.

use std::time::Duration;

use backon::ExponentialBackoff;
use chrono::Utc;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::{Led, ProjectionRunner, aborted, every, standby_pauses};
use crate::{
    Checkpoint, CheckpointStore, ErrorPolicy, EventStore, GlobalPosition, Leadership, Projection,
    ProjectionError, ProjectionRequest, ProjectionState, ProjectionStatus, ReadAllQuery,
    RecordedEvent, StoreError, Subscription, projection::handle::Control,
};

/// What the subscription had ready: events, and the error that ended the batch.
struct Batch {
    events: Vec<RecordedEvent>,
    error: Option<StoreError>,
    ended: bool,
}

impl Batch {
    /// `first` and whatever else the subscription yields without waiting, up to `limit` events.
    fn collect(
        first: Result<RecordedEvent, StoreError>,
        subscription: &mut Subscription,
        limit: usize,
    ) -> Self {
        let mut batch = Self {
            events: Vec::new(),
            error: None,
            ended: false,
        };
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Ok(event) => batch.events.push(event),
                Err(error) => {
                    batch.error = Some(error);
                    break;
                }
            }
            if batch.events.len() >= limit {
                break;
            }
            // A read this starts stays in the subscription and goes on at its next poll.
            match subscription.next().now_or_never() {
                Some(Some(item)) => next = Some(item),
                Some(None) => batch.ended = true,
                None => {}
            }
        }
        batch
    }
}

impl<S, P, K, L> ProjectionRunner<S, P, K, L>
where
    S: EventStore + 'static,
    P: Projection,
    K: CheckpointStore,
    L: Leadership,
{
    /// Runs as the projection's leader until stopped, failed or interrupted;
    /// a rebuild an operator asked for starts over under the same lease.
    pub(super) async fn lead(
        &mut self,
        mut lease: L::Lease,
        control: &mut watch::Receiver<Control>,
        status: &watch::Sender<ProjectionStatus>,
        pauses: &mut ExponentialBackoff,
    ) -> Led {
        loop {
            match self.lead_once(&mut lease, control, status, pauses).await {
                Led::Rebuild(request) => {
                    self.rebuild = true;
                    self.rebuild_request = Some(request);
                }
                other => return other,
            }
        }
    }

    /// One spell of leadership, from the claimed checkpoint on.
    async fn lead_once(
        &mut self,
        lease: &mut L::Lease,
        control: &mut watch::Receiver<Control>,
        status: &watch::Sender<ProjectionStatus>,
        pauses: &mut ExponentialBackoff,
    ) -> Led {
        let mut live = match self.take_over(lease, status).await {
            Ok(live) => live,
            Err(led) => return led,
        };
        // A successful takeover ends the spell of failures.
        *pauses = standby_pauses();
        let name = live.checkpoint.name.clone();
        let mut query =
            ReadAllQuery::after(live.checkpoint.position).page_size(self.options.page_size);
        if let Some(types) = self.projection.event_types() {
            query = query.event_types(types);
        }
        let mut subscription = self.store.subscribe(query);
        let mut tick = every(self.options.checkpoint_interval);
        let mut requests = every(self.options.poll_requests_every);
        // The handle's controls act when they change; a stored request can
        // undo one (a stored resume after a handle's pause), so the runner
        // keeps its own pause state.
        let mut seen = Control::Run;

        loop {
            let current = *control.borrow_and_update();
            if current != seen {
                seen = current;
                let steered = match current {
                    Control::Stop => return self.finish(lease, &mut live, status).await,
                    Control::Abort => return Led::Failed(aborted(&name)),
                    Control::Pause => self.pause(lease, &mut live, status).await,
                    Control::Run => self.resume(&mut live, status),
                };
                if let Err(led) = steered {
                    return led;
                }
            }
            // Paused, the runner neither polls the subscription nor saves.
            let running = live.paused_from.is_none();
            let step = tokio::select! {
                biased;
                changed = control.changed() => match changed {
                    // The handle is gone: stop as if asked to.
                    Err(_) => return self.finish(lease, &mut live, status).await,
                    Ok(()) => Ok(()),
                },
                _ = requests.tick() => self.carry_out_request(lease, &mut live, status).await,
                _ = tick.tick(), if running => {
                    if live.unsaved > 0 {
                        self.save(lease, &mut live, status).await
                    } else {
                        Ok(())
                    }
                }
                item = subscription.next(), if running => match item {
                    None => return self.finish(lease, &mut live, status).await,
                    Some(first) => {
                        let batch = Batch::collect(first, &mut subscription, self.options.page_size.get());
                        self.apply_batch(lease, batch, &mut live, status, &mut subscription).await
                    }
                }
            };
            if let Err(led) = step {
                return led;
            }
        }
    }

    /// Stops applying and saves the checkpoint as paused.
    async fn pause(
        &mut self,
        lease: &mut L::Lease,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), Led> {
        if live.paused_from.is_some() {
            return Ok(());
        }
        live.paused_from = Some(live.checkpoint.state);
        live.checkpoint.state = ProjectionState::Paused;
        self.save(lease, live, status).await
    }

    /// Leaves a pause in the state it interrupted (saved with the next checkpoint).
    fn resume(
        &mut self,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), Led> {
        if let Some(state) = live.paused_from.take() {
            live.checkpoint.state = state;
            live.unsaved = live.unsaved.max(1);
            status.send_replace(live.status());
        }
        Ok(())
    }

    /// Looks for an operator's request and carries it out; a rebuild ends
    /// this spell of leadership to start over.
    async fn carry_out_request(
        &mut self,
        lease: &mut L::Lease,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), Led> {
        let name = live.checkpoint.name.clone();
        let pending = self
            .checkpoints
            .pending_request(&name)
            .await
            .map_err(|e| Led::Interrupted(format!("could not look for requests: {e}")))?;
        let Some(pending) = pending else {
            return Ok(());
        };
        tracing::info!(projection = %name, request = %pending.request, "carrying out an operator's request");
        match pending.request {
            ProjectionRequest::Pause => self.pause(lease, live, status).await?,
            ProjectionRequest::Resume => {
                self.resume(live, status)?;
                self.save(lease, live, status).await?;
            }
            // Cleared once the reset checkpoint is saved, so a crash in
            // between leaves the request for the next leader.
            ProjectionRequest::Rebuild => return Err(Led::Rebuild(pending)),
        }
        self.checkpoints
            .clear_request(&name, &pending)
            .await
            .map_err(|e| Led::Interrupted(format!("could not clear the request: {e}")))
    }

    /// Claims the checkpoint with the lease's fence, tells the projection
    /// where it resumes, resets it for a rebuild, and saves the state it leads in.
    async fn take_over(
        &mut self,
        lease: &mut L::Lease,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<Live, Led> {
        let name = self.projection.name().to_owned();
        let fence = self.leadership.fence(lease);
        let mut checkpoint = self
            .checkpoints
            .claim(&name, fence)
            .await
            .map_err(|e| Led::Interrupted(format!("could not claim the checkpoint: {e}")))?;
        self.projection
            .resume_from(&checkpoint)
            .await
            .map_err(|e| {
                Led::Failed(ProjectionError::Apply {
                    name: name.clone(),
                    position: checkpoint.position,
                    source: Box::new(e),
                })
            })?;
        if self.rebuild {
            self.projection.reset().await.map_err(|e| {
                Led::Failed(ProjectionError::Apply {
                    name: name.clone(),
                    position: GlobalPosition::START,
                    source: Box::new(e),
                })
            })?;
            checkpoint = Checkpoint::initial(&name);
            checkpoint.state = ProjectionState::Rebuilding;
        } else if !matches!(
            checkpoint.state,
            ProjectionState::Rebuilding | ProjectionState::Paused
        ) {
            checkpoint.state = ProjectionState::Running;
        }
        checkpoint.fence = fence;
        let mut live = Live::new(checkpoint);
        if live.checkpoint.state == ProjectionState::Paused {
            // An operator's pause outlives the runner that carried it out.
            live.paused_from = Some(ProjectionState::Running);
        }
        // Saved at once, so the stored state says who leads and how.
        self.save(lease, &mut live, status).await?;
        self.rebuild = false;
        if let Some(request) = self.rebuild_request.take() {
            self.checkpoints
                .clear_request(&name, &request)
                .await
                .map_err(|e| Led::Interrupted(format!("could not clear the request: {e}")))?;
        }
        Ok(live)
    }

    /// Checks the lease, applies the batch's events, then handles the error that ended it.
    async fn apply_batch(
        &mut self,
        lease: &mut L::Lease,
        batch: Batch,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
        subscription: &mut Subscription,
    ) -> Result<(), Led> {
        if !batch.events.is_empty() {
            if !self.leadership.holds(lease).await {
                return Err(Led::Interrupted(
                    "the lease was lost; nothing more is applied".to_owned(),
                ));
            }
            let started = live.meter.start();
            for event in &batch.events {
                self.handle_event(lease, event, live, status).await?;
                if live.unsaved >= self.options.checkpoint_every_events {
                    self.save(lease, live, status).await?;
                }
            }
            live.meter.batch(started);
        }
        if let Some(error) = batch.error {
            self.handle_read_error(lease, error, live, status, subscription)
                .await?;
        }
        if batch.ended {
            return Err(self.finish(lease, live, status).await);
        }
        if live.checkpoint.state == ProjectionState::Rebuilding && subscription.is_caught_up() {
            live.checkpoint.state = ProjectionState::Running;
            return self.save(lease, live, status).await;
        }
        if live.unsaved >= self.options.checkpoint_every_events {
            // A skipped unreadable event counts too.
            self.save(lease, live, status).await?;
        }
        Ok(())
    }

    /// Applies one event under the error policy, then advances the position.
    async fn handle_event(
        &mut self,
        lease: &mut L::Lease,
        event: &RecordedEvent,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), Led> {
        let mut delays = match self.options.on_error {
            ErrorPolicy::Retry(policy) => Some(policy.delays()),
            _ => None,
        };
        loop {
            match self.projection.apply(event).await {
                Ok(()) => {
                    live.meter.applied();
                    live.checkpoint.events_processed += 1;
                    live.checkpoint.last_event_id = Some(event.id);
                    live.checkpoint.last_processed_at = Some(Utc::now());
                    break;
                }
                Err(error) => {
                    let message = crate::error_chain(&error);
                    tracing::warn!(projection = %live.checkpoint.name, event = %event.id, error = %message, "projection apply failed");
                    live.checkpoint.last_error = Some(message);
                    if self.options.on_error == ErrorPolicy::Skip {
                        live.meter.error("skipped");
                        live.skipped += 1;
                        break;
                    }
                    if let Some(delay) = delays.as_mut().and_then(Iterator::next) {
                        live.meter.error("retried");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    live.meter.error("stopped");
                    live.checkpoint.state = ProjectionState::Failed;
                    // The error ends the runner whether or not the save succeeds.
                    let _ = self.save(lease, live, status).await;
                    return Err(Led::Failed(ProjectionError::Apply {
                        name: live.checkpoint.name.clone(),
                        position: live.checkpoint.position,
                        source: Box::new(error),
                    }));
                }
            }
        }
        live.checkpoint.position = event.position;
        live.unsaved += 1;
        status.send_replace(live.status());
        Ok(())
    }

    /// A read that failed: an unreadable stored event goes through the error
    /// policy; anything else is waited out while the lease holds.
    async fn handle_read_error(
        &mut self,
        lease: &mut L::Lease,
        error: StoreError,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
        subscription: &mut Subscription,
    ) -> Result<(), Led> {
        let name = live.checkpoint.name.clone();
        tracing::warn!(projection = %name, %error, "reading the global order failed");
        live.checkpoint.last_error = Some(crate::error_chain(&error));
        status.send_replace(live.status());
        let Some(position) = error.undecodable_position() else {
            // The subscription pauses and reads again by itself.
            if !self.leadership.holds(lease).await {
                return Err(Led::Interrupted(format!(
                    "the lease was lost while reading failed: {error}"
                )));
            }
            return Ok(());
        };
        let retry = match self.options.on_error {
            ErrorPolicy::Skip => {
                live.meter.error("skipped");
                live.skipped += 1;
                live.checkpoint.position = position;
                live.unsaved += 1;
                live.unreadable = None;
                subscription.skip_past(position);
                status.send_replace(live.status());
                return Ok(());
            }
            ErrorPolicy::Retry(policy) => {
                let (at, delays) = live
                    .unreadable
                    .get_or_insert_with(|| (position, Box::new(policy.delays())));
                if *at != position {
                    *at = position;
                    *delays = Box::new(policy.delays());
                }
                delays.next()
            }
            ErrorPolicy::Stop => None,
        };
        if let Some(delay) = retry {
            live.meter.error("retried");
            // The subscription reads the event again after its own pause.
            tokio::time::sleep(delay).await;
            return Ok(());
        }
        live.meter.error("stopped");
        live.unreadable = None;
        live.checkpoint.state = ProjectionState::Failed;
        // The error ends the runner whether or not the save succeeds.
        let _ = self.save(lease, live, status).await;
        Err(Led::Failed(ProjectionError::Unreadable {
            name,
            position,
            source: error,
        }))
    }

    /// A graceful end: saves the checkpoint as stopped (if the store lets it).
    async fn finish(
        &mut self,
        lease: &mut L::Lease,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Led {
        live.checkpoint.state = ProjectionState::Stopped;
        if let Err(Led::Interrupted(reason)) = self.save(lease, live, status).await {
            // Ending anyway: the events since the last saved checkpoint are
            // applied again by whoever runs the projection next.
            tracing::warn!(projection = %live.checkpoint.name, %reason, "stopped without saving the checkpoint");
        }
        Led::Stopped
    }

    /// Saves the checkpoint (through the projection, when it keeps it with
    /// its read model) and publishes the status; refuses once the lease is
    /// lost. A failure interrupts the leadership.
    async fn save(
        &mut self,
        lease: &mut L::Lease,
        live: &mut Live,
        status: &watch::Sender<ProjectionStatus>,
    ) -> Result<(), Led> {
        if !self.leadership.holds(lease).await {
            return Err(Led::Interrupted(
                "the lease was lost before a checkpoint save".to_owned(),
            ));
        }
        live.checkpoint.updated_at = Utc::now();
        let saved_with_read_model = self
            .projection
            .save_checkpoint(&live.checkpoint)
            .await
            .map_err(|e| {
                Led::Interrupted(format!("the projection could not save its checkpoint: {e}"))
            })?;
        if !saved_with_read_model {
            self.checkpoints
                .save(&live.checkpoint)
                .await
                .map_err(|e| Led::Interrupted(format!("the checkpoint save failed: {e}")))?;
        }
        live.unsaved = 0;
        live.meter.saved();
        status.send_replace(live.status());
        Ok(())
    }
}

/// Delays left for retrying an unreadable event, and its position.
type UnreadableRetries = (GlobalPosition, Box<dyn Iterator<Item = Duration> + Send>);

/// The runner's working state while it leads.
struct Live {
    checkpoint: Checkpoint,
    skipped: u64,
    unsaved: u64,
    unreadable: Option<UnreadableRetries>,
    /// While paused: the state to go back to.
    paused_from: Option<ProjectionState>,
    meter: crate::telemetry::ProjectionMeter,
}

impl Live {
    fn new(checkpoint: Checkpoint) -> Self {
        Self {
            meter: crate::telemetry::ProjectionMeter::new(&checkpoint.name),
            checkpoint,
            skipped: 0,
            unsaved: 0,
            unreadable: None,
            paused_from: None,
        }
    }

    fn status(&self) -> ProjectionStatus {
        ProjectionStatus {
            name: self.checkpoint.name.clone(),
            state: self.checkpoint.state,
            position: self.checkpoint.position,
            events_processed: self.checkpoint.events_processed,
            events_skipped: self.skipped,
            last_processed_at: self.checkpoint.last_processed_at,
            last_error: self.checkpoint.last_error.clone(),
        }
    }
}
