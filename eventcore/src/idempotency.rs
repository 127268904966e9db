//! Idempotency keys: run a command at most once per key.

use nutype::nutype;

use crate::name::{NameViolation, check_name};

/// The most characters an [`IdempotencyKey`] may have.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// Why a string is not a valid [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdempotencyKey {
    /// The key is empty.
    #[error("an idempotency key must not be empty")]
    Empty,
    /// The key is longer than [`IDEMPOTENCY_KEY_MAX_CHARS`].
    #[error("an idempotency key has at most {IDEMPOTENCY_KEY_MAX_CHARS} characters, got {chars}")]
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// The key contains a control character.
    #[error(
        "an idempotency key must not contain control characters (U+{code_point:04X} at {index})"
    )]
    ControlCharacter {
        /// The character's index.
        index: usize,
        /// The character.
        code_point: u32,
    },
}

fn validate_key(value: &str) -> Result<(), InvalidIdempotencyKey> {
    check_name(value, IDEMPOTENCY_KEY_MAX_CHARS).map_err(|violation| match violation {
        NameViolation::Empty => InvalidIdempotencyKey::Empty,
        NameViolation::ControlCharacter { index, code_point } => {
            InvalidIdempotencyKey::ControlCharacter { index, code_point }
        }
        NameViolation::TooLong { chars } => InvalidIdempotencyKey::TooLong { chars },
    })
}

/// A caller-chosen key that makes an execution happen at most once: a second
/// execution with the same key writes nothing and returns the first one's
/// result. 1 to 255 characters, no control characters, compared exactly.
///
/// ```
/// use eventcore::IdempotencyKey;
///
/// let key = IdempotencyKey::try_new("order-1234/payment")?;
/// assert_eq!(key.as_ref(), "order-1234/payment");
/// assert!(IdempotencyKey::try_new("").is_err());
/// # Ok::<(), eventcore::InvalidIdempotencyKey>(())
/// ```
#[nutype(
    validate(with = validate_key, error = InvalidIdempotencyKey),
    derive(
        Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, AsRef, Display, TryFrom, FromStr,
        Serialize, Deserialize
    )
)]
pub struct IdempotencyKey(String);
