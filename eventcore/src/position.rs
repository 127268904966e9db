//! The store-wide order of events.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A place in the store-wide order in which readers of all events receive them.
///
/// Positions are totally ordered and match delivery order. They have two parts
/// because a gap-safe order on a concurrent database is ordered first by the
/// writing transaction and then by a sequence inside the store (see the crate
/// docs, "Reading all events"); in the memory store the first part counts
/// appends. Compare positions, store them as checkpoints (they round-trip
/// through `Display`/`FromStr` and serde), but do not do arithmetic on them.
///
/// ```
/// use eventcore::GlobalPosition;
///
/// let p = GlobalPosition::new(7, 42);
/// assert!(GlobalPosition::START < p);
/// assert_eq!(p.to_string().parse::<GlobalPosition>()?, p);
/// # Ok::<(), eventcore::InvalidGlobalPosition>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct GlobalPosition {
    transaction: u64,
    sequence: u64,
}

impl GlobalPosition {
    /// Before every event: reading after `START` reads from the beginning.
    pub const START: Self = Self {
        transaction: 0,
        sequence: 0,
    };

    /// Builds a position from its two parts; adapters use this, users rarely need it.
    pub const fn new(transaction: u64, sequence: u64) -> Self {
        Self {
            transaction,
            sequence,
        }
    }

    /// The ordering key of the transaction (or append) that wrote the event.
    pub const fn transaction(self) -> u64 {
        self.transaction
    }

    /// The event's sequence number inside the store; unique per event.
    pub const fn sequence(self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for GlobalPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transaction, self.sequence)
    }
}

/// A string that is not a `transaction:sequence` position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a global position (expected `transaction:sequence`, two unsigned integers): {input:?}"
)]
pub struct InvalidGlobalPosition {
    input: String,
}

impl FromStr for GlobalPosition {
    type Err = InvalidGlobalPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidGlobalPosition {
            input: s.to_owned(),
        };
        let (transaction, sequence) = s.split_once(':').ok_or_else(invalid)?;
        Ok(Self {
            transaction: transaction.parse().map_err(|_| invalid())?,
            sequence: sequence.parse().map_err(|_| invalid())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_transaction_then_sequence() {
        assert!(GlobalPosition::new(1, 9) < GlobalPosition::new(2, 3));
        assert!(GlobalPosition::new(2, 3) < GlobalPosition::new(2, 4));
    }

    #[test]
    fn rejects_malformed_strings() {
        for s in ["", "1", "1:", ":1", "a:1", "1:2:3", "-1:2"] {
            assert!(s.parse::<GlobalPosition>().is_err(), "{s}");
        }
    }
}
