//! Where a projection is, stored durably and fenced against old leaders.

use std::{fmt, future::Future};

use chrono::{DateTime, Utc};

use super::{PendingRequest, ProjectionRequest, ProjectionState};
use crate::{EventId, GlobalPosition, StoreError};

/// The generation of a projection's leadership: every new leader gets a
/// larger token than any before it.
///
/// A checkpoint store refuses a save whose token is older than the one
/// stored ([`CheckpointStore::claim`]), so a runner that lost its lease
/// cannot overwrite its successor's progress.
///
/// ```
/// use eventcore::FencingToken;
///
/// assert!(FencingToken::new(2) > FencingToken::new(1));
/// assert_eq!(FencingToken::new(7).value(), 7);
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct FencingToken(u64);

impl FencingToken {
    /// A token of generation `value`; leadership backends hand these out.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The generation.
    pub const fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a projection is in the global order, and how it is doing.
///
/// ```
/// use eventcore::{Checkpoint, GlobalPosition, ProjectionState};
///
/// let fresh = Checkpoint::initial("balances");
/// assert_eq!(fresh.position, GlobalPosition::START);
/// assert_eq!(fresh.state, ProjectionState::Running);
/// assert_eq!(fresh.events_processed, 0);
/// ```
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
    /// The last error: one `apply` returned, or a stored event that could not be read.
    pub last_error: Option<String>,
    /// The id of the last event applied, if any.
    pub last_event_id: Option<EventId>,
    /// When the last event was applied, if any.
    pub last_processed_at: Option<DateTime<Utc>>,
    /// The leadership generation of the runner that wrote it; `None` for a
    /// runner without fencing ([`SoleRunner`](crate::SoleRunner)).
    pub fence: Option<FencingToken>,
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
            last_event_id: None,
            last_processed_at: None,
            fence: None,
            updated_at: Utc::now(),
        }
    }

    /// Whether a checkpoint store holding `stored` may accept this one:
    /// unfenced saves always, fenced ones unless a newer fence is stored.
    /// Adapters check this in the statement that writes.
    pub fn may_replace(&self, stored: Option<FencingToken>) -> bool {
        match (self.fence, stored) {
            (Some(offered), Some(stored)) => offered >= stored,
            _ => true,
        }
    }
}

/// Durable storage of projection checkpoints.
///
/// Saves are fenced: once a checkpoint with fence `f` is stored (by
/// [`claim`](Self::claim) or [`save`](Self::save)), a save offering an
/// older fence is refused with [`StoreError::Fenced`] and changes nothing.
/// A save without a fence is never refused and keeps the stored fence.
///
/// An operator's pause, from any process that can reach the checkpoints:
///
/// ```
/// use eventcore::{CheckpointStore, ProjectionRequest};
/// use eventcore_memory::InMemoryCheckpointStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let checkpoints = InMemoryCheckpointStore::new();
/// checkpoints.request("balances", ProjectionRequest::Pause).await?;
/// let pending = checkpoints.pending_request("balances").await?;
/// assert_eq!(pending.map(|p| p.request), Some(ProjectionRequest::Pause));
/// // The leader of "balances" carries it out within `poll_requests_every`.
/// # Ok(())
/// # }
/// ```
pub trait CheckpointStore: Send + Sync + 'static {
    /// The checkpoint saved under `name`, if any.
    fn load(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Checkpoint>, StoreError>> + Send;

    /// Saves `checkpoint` under its name, replacing the previous one,
    /// unless a newer fence is stored ([`StoreError::Fenced`]).
    fn save(&self, checkpoint: &Checkpoint) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the checkpoint over for a new leader, in one atomic step:
    /// stores `fence` with it (creating an initial checkpoint when none is
    /// saved) and returns it. From then on saves with an older fence are
    /// refused. Refused itself ([`StoreError::Fenced`]) when a newer fence
    /// is stored. With `fence` `None` it only loads (or makes an initial
    /// checkpoint, unsaved).
    fn claim(
        &self,
        name: &str,
        fence: Option<FencingToken>,
    ) -> impl Future<Output = Result<Checkpoint, StoreError>> + Send;

    /// Every saved checkpoint, by name: what an operator looks at.
    fn list(&self) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;

    /// Asks the leader of projection `name` (in whatever process it runs)
    /// to pause, resume or rebuild; replaces a request not yet carried out.
    /// A projection never run yet gets an initial checkpoint holding it.
    fn request(
        &self,
        name: &str,
        request: ProjectionRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The request waiting for projection `name`'s leader, if any.
    fn pending_request(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<PendingRequest>, StoreError>> + Send;

    /// Marks `pending` as carried out, unless a newer request replaced it.
    fn clear_request(
        &self,
        name: &str,
        pending: &PendingRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
