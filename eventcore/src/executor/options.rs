//! How one execution runs: metadata, timeout, retries, discovery, idempotency.

use std::time::Duration;

use crate::{EventMetadata, IdempotencyKey, RetryPolicy};

/// Default limit on discovery rounds; see [`ExecutionOptions::with_max_discovery_rounds`].
pub const DEFAULT_MAX_DISCOVERY_ROUNDS: u32 = 8;

/// Per-call settings of [`CommandExecutor::execute`](crate::CommandExecutor::execute).
///
/// ```
/// use std::time::Duration;
/// use eventcore::{CorrelationId, EventMetadata, ExecutionOptions, RetryPolicy};
///
/// let options = ExecutionOptions::default()
///     .with_metadata(EventMetadata::default().with_correlation_id(CorrelationId::new_v7()))
///     .with_timeout(Duration::from_secs(2))
///     .with_retry_policy(RetryPolicy::no_retries());
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionOptions {
    pub(super) metadata: EventMetadata,
    pub(super) timeout: Option<Duration>,
    pub(super) max_discovery_rounds: u32,
    pub(super) retry: Option<RetryPolicy>,
    pub(super) idempotency_key: Option<IdempotencyKey>,
}

impl Default for ExecutionOptions {
    fn default() -> Self {
        Self {
            metadata: EventMetadata::default(),
            timeout: None,
            max_discovery_rounds: DEFAULT_MAX_DISCOVERY_ROUNDS,
            retry: None,
            idempotency_key: None,
        }
    }
}

impl ExecutionOptions {
    /// Metadata stored with every event this execution writes. A correlation
    /// id is generated when absent, and kept the same across retries.
    #[must_use]
    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// A limit on the whole execution, every attempt and backoff included.
    ///
    /// The limit is checked while reading, deciding and waiting; an append
    /// already sent to the store is allowed to finish, so that a timeout
    /// never leaves its own outcome unknown, but the time left bounds how
    /// long the append may wait for a stream row another session holds
    /// ([`AppendRequest::with_max_lock_wait`](crate::AppendRequest::with_max_lock_wait)): the execution ends in time
    /// with [`ExecutionError::Timeout`](crate::ExecutionError::Timeout), nothing written (unless an earlier
    /// attempt's outcome was already unknown: see
    /// [`ExecutionError::is_unknown_outcome`](crate::ExecutionError::is_unknown_outcome)).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times `handle` may ask for more streams before the execution
    /// fails with [`ExecutionError::TooManyDiscoveryRounds`](crate::ExecutionError::TooManyDiscoveryRounds) (default
    /// [`DEFAULT_MAX_DISCOVERY_ROUNDS`]).
    #[must_use]
    pub fn with_max_discovery_rounds(mut self, rounds: u32) -> Self {
        self.max_discovery_rounds = rounds;
        self
    }

    /// Overrides the executor's retry policy for this call.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Runs the command at most once per `key`.
    ///
    /// The key is recorded with the events, atomically. An execution that
    /// finds its key recorded writes nothing and returns the recorded result
    /// ([`ExecutionResult::replayed`](crate::ExecutionResult::replayed)), without deciding again. This is what
    /// makes retrying safe after [`StoreError::UnknownOutcome`](crate::StoreError::UnknownOutcome) (a connection
    /// lost during commit): with a key the executor retries such an outcome
    /// itself; without one it returns it, since the command may or may not
    /// have been written.
    ///
    /// A key belongs to one command: it is recorded with the command's type
    /// and declared streams ([`KeyPurpose`](crate::KeyPurpose)), and an execution of another
    /// command with the same key fails with [`StoreError::KeyReused`](crate::StoreError::KeyReused),
    /// writing nothing. Stores keep keys for a retention period (24 hours
    /// by default, [`DEFAULT_IDEMPOTENCY_RETENTION`](crate::DEFAULT_IDEMPOTENCY_RETENTION));
    /// a retry whose lookup comes within it is safe, a later one may run the
    /// command again.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}
