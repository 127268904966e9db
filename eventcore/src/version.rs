//! Stream versions and the expectations an append checks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The number of events in a stream; an absent stream is at version 0.
///
/// The first event of a stream gets version 1, and versions inside a stream
/// are contiguous.
///
/// ```
/// use eventcore::{ExpectedVersion, StreamVersion};
///
/// let read_at = StreamVersion::new(3);
/// assert_eq!(read_at.next(), Some(StreamVersion::new(4)));
/// assert!(ExpectedVersion::Exact(read_at).accepts(StreamVersion::new(3)));
/// assert!(!ExpectedVersion::Exact(read_at).accepts(StreamVersion::new(4)));
/// assert!(ExpectedVersion::NoStream.accepts(StreamVersion::new(0)));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(u64);

impl StreamVersion {
    /// The version of a stream with no events.
    pub const INITIAL: Self = Self(0);

    /// Wraps a raw version number.
    pub const fn new(version: u64) -> Self {
        Self(version)
    }

    /// The raw version number.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The version after one more event, or `None` on overflow.
    pub const fn next(self) -> Option<Self> {
        match self.0.checked_add(1) {
            Some(v) => Some(Self(v)),
            None => None,
        }
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<StreamVersion> for u64 {
    fn from(version: StreamVersion) -> Self {
        version.0
    }
}

/// What an append expects a stream's version to be; checked atomically with the write.
///
/// ```
/// use eventcore::{ExpectedVersion, StreamVersion};
///
/// assert!(ExpectedVersion::NoStream.accepts(StreamVersion::INITIAL));
/// assert!(!ExpectedVersion::Exact(StreamVersion::new(2)).accepts(StreamVersion::new(3)));
/// assert!(ExpectedVersion::Any.accepts(StreamVersion::new(7)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append whatever the stream's version.
    Any,
    /// The stream must have no events (version 0).
    NoStream,
    /// The stream must be at exactly this version; `Exact(0)` means the same as `NoStream`.
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    pub fn accepts(self, actual: StreamVersion) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == StreamVersion::INITIAL,
            Self::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}
