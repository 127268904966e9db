//! How a runner batches checkpoints and handles failures.

use std::{num::NonZeroUsize, time::Duration};

use crate::RetryPolicy;

/// What the runner does when `apply` fails, or a stored event cannot be read.
///
/// ```
/// use std::time::Duration;
/// use eventcore::{ErrorPolicy, ProjectionOptions, RetryPolicy};
///
/// // A read model in a database that may be briefly away: retry each failing
/// // event a few times, then stop with the error in the checkpoint.
/// let policy = ErrorPolicy::Retry(RetryPolicy::default().with_max_attempts(5));
/// let options = ProjectionOptions::default().on_error(policy);
/// # let _ = (options, Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorPolicy {
    /// Stop: save the checkpoint before the failing event, state `failed` (the default).
    Stop,
    /// Try the event again after the policy's delays; stop as above when they run out.
    Retry(RetryPolicy),
    /// Record the error in the checkpoint and go on with the next event.
    Skip,
}

/// How a [`ProjectionRunner`](crate::ProjectionRunner) batches checkpoints and handles failures.
///
/// ```
/// use std::time::Duration;
/// use eventcore::{ErrorPolicy, ProjectionOptions};
///
/// // Fewer checkpoint writes for a read model that tolerates replaying a few
/// // thousand events after a crash; events it cannot apply are recorded and skipped.
/// let options = ProjectionOptions::default()
///     .checkpoint_every_events(5_000)
///     .checkpoint_interval(Duration::from_secs(10))
///     .on_error(ErrorPolicy::Skip);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionOptions {
    pub(super) checkpoint_every_events: u64,
    pub(super) checkpoint_interval: Duration,
    pub(super) on_error: ErrorPolicy,
    pub(super) page_size: NonZeroUsize,
    pub(super) wait_for_leadership: bool,
    pub(super) poll_requests_every: Duration,
}

impl Default for ProjectionOptions {
    /// A checkpoint every 100 events or 1 s, stop on error, pages of 1,000
    /// events, wait in standby while another runner leads, look for
    /// operators' requests every second.
    fn default() -> Self {
        Self {
            checkpoint_every_events: 100,
            checkpoint_interval: Duration::from_secs(1),
            on_error: ErrorPolicy::Stop,
            page_size: crate::store::DEFAULT_PAGE_SIZE,
            wait_for_leadership: true,
            poll_requests_every: Duration::from_secs(1),
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

    /// What to do when `apply` fails or a stored event cannot be read.
    #[must_use]
    pub fn on_error(mut self, policy: ErrorPolicy) -> Self {
        self.on_error = policy;
        self
    }

    /// With `false`, a runner whose projection another runner leads ends at
    /// once with [`ProjectionError::AnotherLeads`](crate::ProjectionError::AnotherLeads)
    /// instead of waiting in standby.
    #[must_use]
    pub fn wait_for_leadership(mut self, wait: bool) -> Self {
        self.wait_for_leadership = wait;
        self
    }

    /// How often the leader looks for an operator's request
    /// ([`CheckpointStore::request`](crate::CheckpointStore::request)): the
    /// bound on how long one waits, plus the batch in hand. One checkpoint
    /// store read per interval.
    #[must_use]
    pub fn poll_requests_every(mut self, interval: Duration) -> Self {
        self.poll_requests_every = interval.max(Duration::from_millis(1));
        self
    }

    /// How many events to read per page while catching up; also the
    /// largest batch applied after one lease check.
    #[must_use]
    pub fn page_size(mut self, size: NonZeroUsize) -> Self {
        self.page_size = size;
        self
    }
}
