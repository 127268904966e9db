//! Stream names.

use std::sync::Arc;

use crate::name::{NameViolation, arc_name, check_name};

/// Longest stream id accepted, in characters.
pub const STREAM_ID_MAX_CHARS: usize = 255;

/// Up to this many streams, repeats are found by comparing every pair:
/// fewer instructions than hashing, and no allocation.
pub(crate) const COMPARE_PAIRS_UP_TO: usize = 16;

/// Why a string is not a valid [`StreamId`].
///
/// ```
/// use eventcore::{InvalidStreamId, StreamId};
///
/// assert!(matches!(StreamId::try_new(""), Err(InvalidStreamId::Empty)));
/// assert!(StreamId::try_new("x".repeat(10_000)).is_err());
/// assert!(StreamId::try_new("account-1").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStreamId {
    /// Nothing was left after trimming whitespace.
    #[error("a stream id must not be empty or only whitespace")]
    Empty,
    /// More than [`STREAM_ID_MAX_CHARS`] characters after trimming.
    #[error("a stream id has at most {STREAM_ID_MAX_CHARS} characters, this one has {chars}")]
    TooLong {
        /// Characters in the trimmed input.
        chars: usize,
    },
    /// A control character (such as NUL or a newline) inside the id.
    #[error(
        "a stream id must not contain control characters (found U+{code_point:04X} at character {index})"
    )]
    ControlCharacter {
        /// Position of the offending character, counted in characters.
        index: usize,
        /// The offending character's code point.
        code_point: u32,
    },
}

fn validate_stream_id(value: &str) -> Result<(), InvalidStreamId> {
    check_name(value, STREAM_ID_MAX_CHARS).map_err(|violation| match violation {
        NameViolation::Empty => InvalidStreamId::Empty,
        NameViolation::ControlCharacter { index, code_point } => {
            InvalidStreamId::ControlCharacter { index, code_point }
        }
        NameViolation::TooLong { chars } => InvalidStreamId::TooLong { chars },
    })
}

/// The name of an event stream: trimmed, 1 to 255 characters, no control characters.
///
/// A `StreamId` is valid because it exists: every constructor checks the
/// input and returns [`InvalidStreamId`] instead of panicking.
///
/// ```
/// use eventcore::StreamId;
///
/// let id: StreamId = "  account-42 ".parse()?;
/// assert_eq!(id.as_ref(), "account-42");
/// assert!(StreamId::try_new("").is_err());
/// assert!(StreamId::try_new("bad\nid").is_err());
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

arc_name!(StreamId, InvalidStreamId, validate_stream_id, trim = true);

/// A type that is a stream id: `StreamId` itself, or an application's typed
/// id that wraps one. `#[stream]` fields may hold any of them (or a
/// collection of them).
///
/// ```
/// use eventcore::{AsStreamId, StreamId};
///
/// /// An account's stream, typed.
/// struct AccountId(StreamId);
///
/// impl AsStreamId for AccountId {
///     fn as_stream_id(&self) -> &StreamId {
///         &self.0
///     }
/// }
///
/// let account = AccountId(StreamId::try_new("account-7")?);
/// assert_eq!(account.as_stream_id().as_ref(), "account-7");
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a stream id",
    label = "a `#[stream]` field must hold a `StreamId`, a type that is one, or a collection of them",
    note = "implement `eventcore::AsStreamId` for `{Self}` (returning the `StreamId` it wraps), or \
            mark the field `#[stream(skip)]` if it is not a stream the command reads"
)]
pub trait AsStreamId {
    /// The stream id.
    fn as_stream_id(&self) -> &StreamId;
}

impl AsStreamId for StreamId {
    fn as_stream_id(&self) -> &StreamId {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_accepts_unicode_and_punctuation() {
        let id = StreamId::try_new("  'x'; DROP TABLE--  ünïcødé  ").unwrap();
        assert_eq!(id.as_ref(), "'x'; DROP TABLE--  ünïcødé");
    }

    #[test]
    fn rejects_empty_and_whitespace() {
        assert_eq!(StreamId::try_new(""), Err(InvalidStreamId::Empty));
        assert_eq!(StreamId::try_new(" \t "), Err(InvalidStreamId::Empty));
    }

    #[test]
    fn rejects_control_characters_anywhere_inside() {
        assert_eq!(
            StreamId::try_new("a\0b"),
            Err(InvalidStreamId::ControlCharacter {
                index: 1,
                code_point: 0
            })
        );
        assert!(StreamId::try_new("a\u{7f}").is_err());
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert!(StreamId::try_new("é".repeat(255)).is_ok());
        assert_eq!(
            StreamId::try_new("é".repeat(256)),
            Err(InvalidStreamId::TooLong { chars: 256 })
        );
    }

    #[test]
    fn deserialization_validates() {
        assert!(serde_json::from_str::<StreamId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<StreamId>("\"\"").is_err());
    }
}
