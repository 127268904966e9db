//! Who may run a projection: one leader per projection name.

use std::future::Future;

use super::FencingToken;
use crate::StoreError;

/// Who may run a projection: of all runners of one projection name, only
/// the holder of its lease applies events and saves the checkpoint.
///
/// Every lease carries a [`FencingToken`] larger than that of any lease of
/// the same name before it; the runner claims the checkpoint with it, so a
/// former leader's saves are refused.
///
/// ```
/// use eventcore::{Leadership, ProjectionOptions, ProjectionRunner};
/// use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore, InMemoryLeadership};
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
/// let checkpoints = InMemoryCheckpointStore::new();
/// let leadership = InMemoryLeadership::new();
/// // Two runners of one projection: one leads, the other waits in standby.
/// let first = ProjectionRunner::new(store.clone(), CountEvents::default(), checkpoints.clone())
///     .with_leadership(leadership.clone())
///     .start();
/// first.wait_for(|s| s.state == eventcore::ProjectionState::Running).await.map_err(|s| format!("{s:?}"))?;
/// let lease = leadership.try_acquire("count-events").await?;
/// assert!(lease.is_none(), "the first runner holds the lease");
/// first.stop().await?;
/// # let _ = ProjectionOptions::default();
/// # Ok(())
/// # }
/// ```
pub trait Leadership: Send + Sync + 'static {
    /// Proof of leadership; dropping it gives leadership up.
    type Lease: Send + 'static;

    /// Waits until this runner leads projection `name`. An error means the
    /// backend could not be asked; the runner tries again after a pause.
    fn acquire(&self, name: &str) -> impl Future<Output = Result<Self::Lease, StoreError>> + Send;

    /// Leads projection `name` if no one else does; `None` if another runner leads.
    fn try_acquire(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Self::Lease>, StoreError>> + Send;

    /// Whether `lease` still holds; `false` as well when that cannot be
    /// checked. The runner asks before every batch it applies.
    fn holds(&self, lease: &mut Self::Lease) -> impl Future<Output = bool> + Send;

    /// The lease's fencing token; `None` for leadership without fencing.
    fn fence(&self, lease: &Self::Lease) -> Option<FencingToken>;
}

/// No coordination: every runner leads, unfenced. For deployments that run
/// each projection in one process only.
///
/// ```
/// use eventcore::{ProjectionRunner, SoleRunner};
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
/// // The default: a runner without `with_leadership` uses `SoleRunner`.
/// let runner = ProjectionRunner::new(InMemoryEventStore::new(), CountEvents::default(), InMemoryCheckpointStore::new())
///     .with_leadership(SoleRunner);
/// # let _ = runner;
/// ```
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

    fn fence(&self, _lease: &()) -> Option<FencingToken> {
        None
    }
}
