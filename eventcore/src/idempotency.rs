//! Idempotency keys: run a command at most once per key.

use std::fmt;

use nutype::nutype;

use crate::{
    StoreError, StreamId,
    name::{NameViolation, check_name},
};

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

/// What an idempotency key was first used for: the command's type and the
/// streams it declared. A store records it with the key and refuses the key
/// for any other purpose ([`StoreError::KeyReused`]), so a key reused by
/// mistake for another command is an error, not the first command's result.
///
/// ```
/// use eventcore::{KeyPurpose, StreamId};
///
/// let a = StreamId::try_new("account-a")?;
/// let b = StreamId::try_new("account-b")?;
/// let transfer = KeyPurpose::new("bank::Transfer", &[a.clone(), b.clone()]);
/// assert_eq!(transfer, KeyPurpose::new("bank::Transfer", &[b, a.clone()]), "order does not matter");
/// assert_ne!(transfer, KeyPurpose::new("bank::Deposit", &[a]));
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyPurpose(String);

impl KeyPurpose {
    /// The purpose of a `command` (its type name) over `streams`. The
    /// streams are kept as a digest: the text stays short however many.
    pub fn new(command: &str, streams: &[StreamId]) -> Self {
        let mut names: Vec<&str> = streams.iter().map(AsRef::as_ref).collect();
        names.sort_unstable();
        names.dedup();
        // FNV-1a over the sorted names, each ended by NUL (which no id holds).
        let digest = names
            .iter()
            .flat_map(|name| name.bytes().chain(std::iter::once(0)))
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        Self(format!(
            "{command} over {} streams #{digest:016x}",
            names.len()
        ))
    }

    /// A purpose as a store recorded it.
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The recorded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The error of a store that finds `key` recorded for `recorded` while
    /// an append or lookup offers it for `offered`: `Ok` when they agree or
    /// either is unknown (keys recorded before purposes were).
    ///
    /// # Errors
    /// [`StoreError::KeyReused`] when both are known and differ.
    pub fn check(
        key: &IdempotencyKey,
        recorded: Option<&KeyPurpose>,
        offered: Option<&KeyPurpose>,
    ) -> Result<(), StoreError> {
        match (recorded, offered) {
            (Some(recorded), Some(offered)) if recorded != offered => Err(StoreError::KeyReused {
                key: key.clone(),
                recorded: recorded.clone(),
                offered: offered.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long stores keep idempotency keys by default: 24 hours. Within the
/// retention period a retry with the same key is safe (it finds the first
/// result); after it the key may be gone and the command run again.
pub const DEFAULT_IDEMPOTENCY_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(24 * 60 * 60);
