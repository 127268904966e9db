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
//! offers that: [`Projection::save_checkpoint`]).
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
//!
//! # One leader per projection
//!
//! With [`ProjectionRunner::with_leadership`], runners of one projection
//! name in any number of processes elect one leader through a
//! [`Leadership`]; the others wait in state `standby`. Leadership is
//! checked twice over:
//!
//! - the leader re-checks its lease ([`Leadership::holds`]) before every
//!   batch of events it applies (a batch is what the subscription has ready,
//!   at most one page), and stops applying as soon as the check fails;
//! - every lease carries a [`FencingToken`] that grows with each new leader.
//!   A new leader first *claims* the checkpoint with its token
//!   ([`CheckpointStore::claim`]); from then on the checkpoint store refuses
//!   any save with an older token ([`StoreError::Fenced`](crate::StoreError::Fenced)),
//!   in the same statement that would write it. A read model committed with
//!   its checkpoint is therefore never written by a runner that lost its
//!   lease, and a read model elsewhere can fence its own writes with the
//!   token it gets in [`Projection::resume_from`].
//!
//! The window that remains: a leader that passed its check and then lost
//! its lease finishes applying the batch in hand (at most one page of
//! events) before it notices; those applications are never checkpointed.
//!
//! # Under faults
//!
//! A store outage is waited out, never fatal: a runner whose lease check,
//! checkpoint load or checkpoint save fails stops applying at once, goes
//! back to `standby`, and competes for leadership again (with backoff from
//! 100 ms to 5 s) until the store answers; it then resumes from the durable
//! checkpoint. Only these end a runner: a graceful stop, the projection's
//! own error under [`ErrorPolicy::Stop`] (or [`ErrorPolicy::Retry`] once its
//! delays run out), an unreadable stored event under the same policies,
//! [`ProjectionError::AnotherLeads`] when told not to wait, and an abort.
//! [`ProjectionHandle::status`] says when the task has ended: a runner that
//! ended is never reported as running.
//!
//! # Steering a running projection
//!
//! Operators pause, resume and rebuild a projection from any process
//! through its checkpoint store ([`CheckpointStore::request`], or on
//! PostgreSQL an `UPDATE` of the checkpoint row); the leader looks for a
//! request every [`ProjectionOptions::poll_requests_every`] (1 s by
//! default) and carries it out after the batch in hand, so within that
//! interval plus one batch. A pause is saved in the checkpoint and outlives
//! restarts and leadership changes until a resume. The handle's
//! [`pause`](ProjectionHandle::pause) and [`resume`](ProjectionHandle::resume)
//! act on the runner in hand at once.
//!
//! A stored row the store cannot turn into an event (see
//! [`StoreError::Undecodable`](crate::StoreError::Undecodable)) reaches the
//! runner after every good event before it, and the error policy decides,
//! as for an event the projection refused: `Stop` fails with the row's
//! position in `last_error`, `Skip` records it and goes on, `Retry` reads
//! it again after the policy's delays.

mod checkpoint;
mod error;
mod handle;
mod leadership;
mod options;
mod request;
mod runner;
mod state;

use std::future::Future;

pub use checkpoint::{Checkpoint, CheckpointStore, FencingToken};
pub use error::ProjectionError;
pub use handle::{ProjectionHandle, ProjectionStatus};
pub use leadership::{Leadership, SoleRunner};
pub use options::{ErrorPolicy, ProjectionOptions};
pub use request::{PendingRequest, ProjectionRequest};
pub use runner::ProjectionRunner;
pub use state::ProjectionState;

use crate::{EventType, RecordedEvent};

/// A read model kept up to date from the global order.
///
/// A read model of balances that wants two event types and applies each
/// event once even when delivered again after a crash (versions only grow):
///
/// ```
/// use std::collections::HashMap;
/// use eventcore::{DecodeError, EventType, Projection, RecordedEvent, StreamVersion};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Amount { cents: i64 }
/// # impl eventcore::Event for Amount { fn event_type(&self) -> &'static str { "Deposited" } }
///
/// #[derive(Default)]
/// struct Balances(HashMap<String, (i64, StreamVersion)>);
///
/// impl Projection for Balances {
///     type Error = DecodeError;
///     fn name(&self) -> &str {
///         "balances"
///     }
///     fn event_types(&self) -> Option<Vec<EventType>> {
///         Some(vec![EventType::try_new("Deposited").ok()?, EventType::try_new("Withdrawn").ok()?])
///     }
///     async fn apply(&mut self, event: &RecordedEvent) -> Result<(), DecodeError> {
///         let amount = event.decode::<Amount>()?.payload.cents;
///         let sign = if event.event_type.as_ref() == "Withdrawn" { -1 } else { 1 };
///         let entry = self.0.entry(event.stream_id.to_string()).or_default();
///         if event.version > entry.1 {
///             *entry = (entry.0 + sign * amount, event.version);
///         }
///         Ok(())
///     }
///     async fn reset(&mut self) -> Result<(), DecodeError> {
///         self.0.clear();
///         Ok(())
///     }
/// }
/// # let _ = Balances::default();
/// ```
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

    /// Called each time this runner becomes the projection's leader, with
    /// the checkpoint it resumes from, before it applies anything.
    ///
    /// Drop whatever was applied but not yet committed with a checkpoint:
    /// the runner applies those events again, from `checkpoint.position`.
    /// A read model outside the checkpoint's database can keep
    /// `checkpoint.fence` and refuse writes carrying an older token. The
    /// default does nothing.
    fn resume_from(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = checkpoint;
        std::future::ready(Ok(()))
    }

    /// Called whenever the runner saves the checkpoint, before it does.
    ///
    /// A projection whose read model lives in the same database as the
    /// checkpoints can write the checkpoint in the transaction that holds its
    /// read-model changes since the last checkpoint, commit both, and return
    /// `true`: the runner then does not save the checkpoint itself, and every
    /// event's effect is committed exactly once with the position that
    /// covers it. The checkpoint store must refuse that write when the
    /// checkpoint's fence is older than the stored one, so that a runner
    /// that lost its lease commits nothing. The default returns `false`
    /// (at-least-once delivery).
    fn save_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        let _ = checkpoint;
        std::future::ready(Ok(false))
    }
}
