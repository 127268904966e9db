//! What travels with every event besides its payload.

use std::{collections::BTreeMap, fmt};

use nutype::nutype;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Ties together every event written on behalf of one request or workflow.
///
/// ```
/// use eventcore::{CausationId, CorrelationId, EventMetadata, ExecutionOptions};
///
/// // One id for a whole HTTP request, taken from upstream when it sent one.
/// let correlation = CorrelationId::new_v7();
/// let metadata = EventMetadata::default()
///     .with_correlation_id(correlation)
///     .with_causation_id(CausationId::from_uuid(*correlation.as_uuid()));
/// let options = ExecutionOptions::default().with_metadata(metadata);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(Uuid);

impl CorrelationId {
    /// A fresh correlation id (UUIDv7).
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing id, for example one received from an upstream service.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Names the message (command, event, request) that directly caused an event.
///
/// See [`CorrelationId`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CausationId(Uuid);

impl CausationId {
    /// Wraps the id of the causing message.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for CausationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not a valid [`UserId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    /// Nothing was left after trimming whitespace.
    #[error("a user id must not be empty")]
    Empty,
    /// More than 255 characters.
    #[error("a user id has at most 255 characters, this one has {chars}")]
    TooLong {
        /// Characters in the trimmed input.
        chars: usize,
    },
    /// A control character (a newline, an escape sequence's ESC, NUL, ...),
    /// which would reach logs and terminals as something else.
    #[error("a user id must not contain control characters (found {found:?})")]
    ControlCharacter {
        /// The first one found.
        found: char,
    },
}

fn validate_user_id(value: &str) -> Result<(), InvalidUserId> {
    if let Some(found) = value.chars().find(|c| c.is_control()) {
        return Err(InvalidUserId::ControlCharacter { found });
    }
    let chars = value.chars().count();
    match chars {
        0 => Err(InvalidUserId::Empty),
        1..=255 => Ok(()),
        _ => Err(InvalidUserId::TooLong { chars }),
    }
}

/// The user on whose behalf events were written: trimmed, 1 to 255
/// characters, no control characters.
#[nutype(
    sanitize(trim),
    validate(with = validate_user_id, error = InvalidUserId),
    derive(Debug, Clone, PartialEq, Eq, Hash, AsRef, Deref, Display, TryFrom, FromStr, Serialize, Deserialize)
)]
pub struct UserId(String);

/// Correlation, causation, user and free-form entries stored with every event of an append.
///
/// ```
/// use eventcore::{CorrelationId, EventMetadata, UserId};
///
/// let metadata = EventMetadata::default()
///     .with_correlation_id(CorrelationId::new_v7())
///     .with_user_id(UserId::try_new("alice")?)
///     .with_entry("source", "web");
/// assert_eq!(metadata.custom["source"], "web");
/// # Ok::<(), eventcore::InvalidUserId>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// Shared by every event written for one request or workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<CorrelationId>,
    /// The message that directly caused these events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<CausationId>,
    /// Who asked for the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Application-defined entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, serde_json::Value>,
}

impl EventMetadata {
    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: CausationId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the user id.
    #[must_use]
    pub fn with_user_id(mut self, id: UserId) -> Self {
        self.user_id = Some(id);
        self
    }

    /// Adds or replaces one application-defined entry.
    #[must_use]
    pub fn with_entry(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.custom.insert(key.into(), value.into());
        self
    }
}
