//! What an operator asks of a running projection, through its checkpoint store.

use std::fmt;

use chrono::{DateTime, Utc};

/// A request to a projection's running leader, stored with its checkpoint
/// ([`CheckpointStore::request`](crate::CheckpointStore::request)) so that
/// any process (or an operator's SQL) can make it.
///
/// The leader looks for requests every
/// [`ProjectionOptions::poll_requests_every`](crate::ProjectionOptions::poll_requests_every)
/// (1 s by default) and carries one out after the batch in hand; a paused
/// projection stays paused across restarts and leadership changes until
/// it is resumed.
///
/// ```
/// use eventcore::ProjectionRequest;
///
/// assert_eq!(ProjectionRequest::parse("rebuild"), Some(ProjectionRequest::Rebuild));
/// assert_eq!(ProjectionRequest::Pause.as_str(), "pause");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProjectionRequest {
    /// Stop applying and save the checkpoint in state `paused`.
    Pause,
    /// Leave `paused` and go on from the checkpoint.
    Resume,
    /// Reset the read model and apply the global order from the start
    /// (state `rebuilding` until caught up).
    Rebuild,
}

impl ProjectionRequest {
    /// The request's name as stored (`pause`, `resume`, `rebuild`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Rebuild => "rebuild",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Pause, Self::Resume, Self::Rebuild]
            .into_iter()
            .find(|request| request.as_str() == name)
    }
}

impl fmt::Display for ProjectionRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request waiting for the projection's leader: what, and when it was made
/// (which tells it apart from a later request of the same kind).
///
/// See [`CheckpointStore`](crate::CheckpointStore) for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRequest {
    /// What is asked.
    pub request: ProjectionRequest,
    /// When it was asked, as stored.
    pub requested_at: DateTime<Utc>,
}
