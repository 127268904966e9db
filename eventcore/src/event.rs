//! Domain events, their stable type names and ids.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::name::{NameViolation, arc_name, check_name};

/// A domain event that can be stored: serde for the payload plus a stable type name.
///
/// The type name is what the store records beside the payload and what
/// readers filter on; keep it stable once events are stored. For a serde enum,
/// the variant name is the usual choice.
///
/// ```
/// use eventcore::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     Deposited { cents: u64 },
/// }
///
/// impl Event for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             Self::Opened { .. } => "AccountOpened",
///             Self::Deposited { .. } => "MoneyDeposited",
///         }
///     }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable name stored with this event, 1 to 255 characters, no control characters.
    fn event_type(&self) -> &'static str;

    /// The version of this event's shape, stored with it: 1 unless the
    /// shape changed since events were first stored.
    ///
    /// Raise it when the JSON shape changes, and register an upcaster from
    /// the old version on the store ([`Upcasters`](crate::Upcasters)), so
    /// stored events are read in the new shape. Decoding checks a stored
    /// event reached the version its Rust type declares here.
    ///
    /// ```
    /// use eventcore::Event;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// enum AccountEvent {
    ///     Opened { owner: String },
    ///     /// v2 added `reference`.
    ///     Deposited { cents: u64, reference: Option<String> },
    /// }
    ///
    /// impl Event for AccountEvent {
    ///     fn event_type(&self) -> &'static str {
    ///         match self {
    ///             Self::Opened { .. } => "AccountOpened",
    ///             Self::Deposited { .. } => "MoneyDeposited",
    ///         }
    ///     }
    ///
    ///     fn schema_version(&self) -> u32 {
    ///         match self {
    ///             Self::Opened { .. } => 1,
    ///             Self::Deposited { .. } => 2,
    ///         }
    ///     }
    /// }
    /// ```
    fn schema_version(&self) -> u32 {
        1
    }
}

/// Longest event type name accepted, in characters.
pub const EVENT_TYPE_MAX_CHARS: usize = 255;

/// Why a string is not a valid [`EventType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventType {
    /// The name is empty.
    #[error("an event type name must not be empty")]
    Empty,
    /// More than [`EVENT_TYPE_MAX_CHARS`] characters.
    #[error(
        "an event type name has at most {EVENT_TYPE_MAX_CHARS} characters, this one has {chars}"
    )]
    TooLong {
        /// Characters in the name.
        chars: usize,
    },
    /// A control character (such as NUL or a newline) in the name.
    #[error(
        "an event type name must not contain control characters (found U+{code_point:04X} at character {index})"
    )]
    ControlCharacter {
        /// Position of the offending character, counted in characters.
        index: usize,
        /// The offending character's code point.
        code_point: u32,
    },
}

fn validate_event_type(value: &str) -> Result<(), InvalidEventType> {
    check_name(value, EVENT_TYPE_MAX_CHARS).map_err(|violation| match violation {
        NameViolation::Empty => InvalidEventType::Empty,
        NameViolation::ControlCharacter { index, code_point } => {
            InvalidEventType::ControlCharacter { index, code_point }
        }
        NameViolation::TooLong { chars } => InvalidEventType::TooLong { chars },
    })
}

/// The stored type name of an event: 1 to 255 characters, no control characters, kept byte-exact.
///
/// ```
/// use eventcore::EventType;
///
/// let t = EventType::try_new("MoneyDeposited")?;
/// assert_eq!(t.as_ref(), "MoneyDeposited");
/// assert!(EventType::try_new("").is_err());
/// # Ok::<(), eventcore::InvalidEventType>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(Arc<str>);

arc_name!(
    EventType,
    InvalidEventType,
    validate_event_type,
    trim = false
);

/// How many distinct static names each thread remembers.
const REMEMBERED_NAMES: usize = 64;

impl EventType {
    /// The type name an [`Event`] reports, checked and allocated once per
    /// name and thread: commands write the same few types over and over.
    pub(crate) fn of_static(name: &'static str) -> Result<Self, InvalidEventType> {
        thread_local! {
            /// Names seen, by address and length: a static string never changes.
            static KNOWN: std::cell::RefCell<Vec<((usize, usize), EventType)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = (name.as_ptr() as usize, name.len());
        KNOWN.with(|known| {
            let Ok(mut known) = known.try_borrow_mut() else {
                return Self::try_new(name);
            };
            if let Some((_, found)) = known.iter().find(|(k, _)| *k == key) {
                return Ok(found.clone());
            }
            let event_type = Self::try_new(name)?;
            if known.len() < REMEMBERED_NAMES {
                known.push((key, event_type.clone()));
            }
            Ok(event_type)
        })
    }
}

/// The unique id of a stored event: a UUIDv7 assigned when the event is written.
///
/// ```
/// use eventcore::EventId;
///
/// let (first, second) = (EventId::new_v7(), EventId::new_v7());
/// assert_ne!(first, second);
/// assert!(first < second); // v7 ids sort by creation time
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh, time-ordered id (UUIDv7).
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an id read back from storage.
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_is_byte_exact() {
        let t = EventType::try_new(" quoted'; -- ").unwrap();
        assert_eq!(t.as_ref(), " quoted'; -- ");
    }

    #[test]
    fn event_type_rejects_control_characters() {
        assert!(matches!(
            EventType::try_new("a\0"),
            Err(InvalidEventType::ControlCharacter { index: 1, .. })
        ));
    }

    #[test]
    fn event_ids_are_v7_and_increase() {
        let a = EventId::new_v7();
        let b = EventId::new_v7();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }
}
