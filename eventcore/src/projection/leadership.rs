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
