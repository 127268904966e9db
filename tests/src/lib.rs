//! Fixtures shared by the workspace's integration and property tests.
//!
//! The tests themselves live beside this crate's manifest (`tests/*.rs`) and
//! run with `cargo test --workspace`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod scripted;

use eventcore::{Event, EventMetadata, NewEvent};
use serde::{Deserialize, Serialize};

/// An event that carries a unique marker, so a test can tell exactly which append wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marked {
    /// Unique per event within a test.
    pub marker: u64,
}

impl Event for Marked {
    fn event_type(&self) -> &'static str {
        "Marked"
    }
}

// rustdoc calls this explicit target redundant, yet renders the link
// unresolved in the summary on the crate's page without it (see .ci/run).
#[allow(rustdoc::redundant_explicit_links)]
/// A [`NewEvent`](eventcore::NewEvent) carrying `marker`.
pub fn marked(marker: u64) -> NewEvent {
    match NewEvent::from_event(&Marked { marker }, EventMetadata::default()) {
        Ok(event) => event,
        Err(error) => unreachable!("a Marked event always serializes: {error}"),
    }
}

/// The marker of a stored event, if it is a [`Marked`] event.
pub fn marker_of(event: &eventcore::RecordedEvent) -> Option<u64> {
    event.decode::<Marked>().ok().map(|e| e.payload.marker)
}
