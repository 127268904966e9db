//! Why an execution failed, and whether its outcome is known.

use std::time::Duration;

use crate::{DecodeError, EncodeError, LimitExceeded, StoreError, StreamId};

/// Why an execution failed.
///
/// Nothing was written, unless [`is_unknown_outcome`](Self::is_unknown_outcome)
/// says otherwise: an attempt's append was lost in flight (a connection
/// dropped during commit) and nothing the execution did afterwards proved
/// whether it was written. That holds whatever variant ended the execution:
/// [`Store`](Self::Store) with [`StoreError::UnknownOutcome`], or
/// [`RetriesExhausted`](Self::RetriesExhausted), [`Timeout`](Self::Timeout)
/// or [`Store`](Self::Store) after such an attempt (their `outcome_unknown`
/// is `true`). Execute again with the same idempotency key to find out: a
/// written command is found and replayed, an unwritten one runs.
///
/// Mapping the outcome for a caller, the unknown outcome first (any variant
/// may carry it):
///
/// ```
/// use eventcore::ExecutionError;
///
/// fn http_status<E>(error: &ExecutionError<E>) -> u16 {
///     if error.is_unknown_outcome() {
///         return 503; // may be written: retry with the same idempotency key to find out
///     }
///     match error {
///         ExecutionError::Rejected(_) => 422,
///         ExecutionError::RetriesExhausted { .. } => 409,
///         ExecutionError::Timeout { .. } => 504,
///         _ => 500,
///     }
/// }
/// # let _ = http_status::<std::convert::Infallible>;
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError<E> {
    /// `handle` refused the command with a business error; never retried.
    /// Prints as the business error itself (its source is the error's own).
    #[error(transparent)]
    Rejected(E),
    /// Every attempt ran into a conflict, a transient failure or an
    /// unreachable store. Nothing was written unless `outcome_unknown`.
    #[error(
        "{command} gave up after {attempts} attempts; conflicting streams: {}{}",
        list_streams(.conflicting_streams),
        unknown_note(*.outcome_unknown)
    )]
    RetriesExhausted {
        /// The command's type name.
        command: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Every stream that was found moved, over all attempts.
        conflicting_streams: Vec<StreamId>,
        /// The last attempt's error.
        #[source]
        last_error: StoreError,
        /// An earlier attempt's append may have been written (see the type's docs).
        outcome_unknown: bool,
    },
    /// The execution's timeout passed before it could complete. Nothing was
    /// written unless `outcome_unknown`.
    #[error(
        "{command} timed out after {elapsed:?} and {attempts} attempts{}",
        unknown_note(*.outcome_unknown)
    )]
    Timeout {
        /// The command's type name.
        command: &'static str,
        /// Attempts started.
        attempts: u32,
        /// Time since the execution started.
        elapsed: Duration,
        /// An earlier attempt's append may have been written (see the type's docs).
        outcome_unknown: bool,
    },
    /// `handle` kept asking for more streams.
    #[error("{command} still asked for more streams after {rounds} discovery rounds: {}", list_streams(.requested))]
    TooManyDiscoveryRounds {
        /// The command's type name.
        command: &'static str,
        /// The configured limit.
        rounds: u32,
        /// The streams asked for in the last round.
        requested: Vec<StreamId>,
    },
    /// A write targeted a stream this execution did not read.
    #[error("{command} tried to write to stream {stream_id}, which it did not read")]
    UndeclaredStream {
        /// The command's type name.
        command: &'static str,
        /// The stream written to.
        stream_id: StreamId,
    },
    /// The command declared no stream at all (for example an empty `Vec<StreamId>` field).
    #[error("{command} declares no stream; a command must read at least one")]
    NoStreams {
        /// The command's type name.
        command: &'static str,
    },
    /// A stored event in one of the command's streams does not decode into its event type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A decided event could not be serialized.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The command went beyond one of the executor's [`Limits`](crate::Limits); never retried.
    #[error(transparent)]
    LimitExceeded(#[from] LimitExceeded),
    /// The store failed in a way retrying here cannot fix. Nothing was
    /// written unless the source is [`StoreError::UnknownOutcome`] or
    /// `outcome_unknown` is set.
    #[error("{command}: the event store failed{}", unknown_note(*.outcome_unknown))]
    Store {
        /// The command's type name.
        command: &'static str,
        /// The store's error; [`StoreError::UnknownOutcome`] means the
        /// append may have been written.
        #[source]
        source: StoreError,
        /// An earlier attempt's append may have been written (see the type's docs).
        outcome_unknown: bool,
    },
}

impl<E> ExecutionError<E> {
    /// A short, stable name of the variant (`rejected`,
    /// `retries_exhausted`, `timeout`, `too_many_discovery_rounds`,
    /// `undeclared_stream`, `no_streams`, `decode`, `encode`,
    /// `limit_exceeded`, `store`): for metrics and the `error.type` of a
    /// span, with nothing from the data in it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::RetriesExhausted { .. } => "retries_exhausted",
            Self::Timeout { .. } => "timeout",
            Self::TooManyDiscoveryRounds { .. } => "too_many_discovery_rounds",
            Self::UndeclaredStream { .. } => "undeclared_stream",
            Self::NoStreams { .. } => "no_streams",
            Self::Decode(_) => "decode",
            Self::Encode(_) => "encode",
            Self::LimitExceeded(_) => "limit_exceeded",
            Self::Store { .. } => "store",
        }
    }

    /// Whether the command may have been written after all: an attempt's
    /// append was lost in flight and nothing since proved whether it
    /// committed. Execute again with the same idempotency key to find out.
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            Self::Store {
                source: StoreError::UnknownOutcome { .. },
                ..
            } => true,
            Self::Store {
                outcome_unknown, ..
            }
            | Self::RetriesExhausted {
                outcome_unknown, ..
            }
            | Self::Timeout {
                outcome_unknown, ..
            } => *outcome_unknown,
            _ => false,
        }
    }

    /// Marks the error as following an attempt of unknown outcome.
    pub(super) fn after_unknown_outcome(mut self, unknown: bool) -> Self {
        if let Self::Store {
            outcome_unknown, ..
        }
        | Self::RetriesExhausted {
            outcome_unknown, ..
        }
        | Self::Timeout {
            outcome_unknown, ..
        } = &mut self
        {
            *outcome_unknown |= unknown;
        }
        self
    }
}

/// The store error of command `command`, with no unknown outcome before it.
pub(super) fn store_failure<E>(command: &'static str, source: StoreError) -> ExecutionError<E> {
    ExecutionError::Store {
        command,
        source,
        outcome_unknown: false,
    }
}

/// What a message adds when an earlier attempt's outcome is unknown.
fn unknown_note(unknown: bool) -> &'static str {
    if unknown {
        "; an earlier attempt's outcome is unknown: it may have been written (execute again \
         with the same idempotency key to find out)"
    } else {
        ""
    }
}

pub(super) fn list_streams(streams: &[StreamId]) -> String {
    if streams.is_empty() {
        return "none".to_owned();
    }
    let names: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
    names.join(", ")
}
