//! What a successful execution wrote.

use std::time::Duration;

use crate::{CorrelationId, StreamVersions, WrittenEvent};

/// What a successful execution wrote; serializable, for an API to return
/// it or a client to keep it.
///
/// ```
/// # use std::time::Duration;
/// # use eventcore::{CorrelationId, ExecutionResult, StreamVersions};
/// let result = ExecutionResult {
///     events: Vec::new(),
///     versions: StreamVersions::new(),
///     attempts: 1,
///     backoff: Duration::ZERO,
///     correlation_id: CorrelationId::new_v7(),
///     replayed: false,
///     commit_token: None,
/// };
/// let json = serde_json::to_string(&result)?;
/// assert_eq!(serde_json::from_str::<ExecutionResult>(&json)?, result);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecutionResult {
    /// Every event written, with its stream, version and global position.
    pub events: Vec<WrittenEvent>,
    /// The version of every stream the command read, after the append.
    pub versions: StreamVersions,
    /// Attempts made, the successful one included (1 means no retry).
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub backoff: Duration,
    /// The correlation id stored with the events.
    pub correlation_id: CorrelationId,
    /// Whether this is the result of an earlier execution with the same
    /// idempotency key, returned without writing anything.
    pub replayed: bool,
    /// The store's token for the commit ([`AppendResult::commit_token`](crate::AppendResult::commit_token)):
    /// on PostgreSQL with read replicas, what a replica reader waits for
    /// to read this write (`PostgresEventStore::wait_for`).
    #[serde(default)]
    pub commit_token: Option<String>,
}
