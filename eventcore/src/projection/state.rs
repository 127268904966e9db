//! What a projection's runner is doing.

use std::fmt;

/// What a projection's runner is doing, as stored in its checkpoint.
///
/// ```
/// use eventcore::ProjectionState;
///
/// assert_eq!(ProjectionState::parse("paused"), Some(ProjectionState::Paused));
/// assert_eq!(ProjectionState::Rebuilding.as_str(), "rebuilding");
/// assert!(ProjectionState::Failed.is_terminal());
/// assert!(!ProjectionState::Standby.is_terminal());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// Applying events as they come.
    Running,
    /// Paused by an operator; resumes from its checkpoint.
    Paused,
    /// Cleared and applying the global order from the start again, until
    /// it has caught up with the head; then `running`.
    Rebuilding,
    /// Stopped by an error it was told not to skip.
    Failed,
    /// Stopped gracefully.
    Stopped,
    /// Waiting for leadership: another runner of the same projection leads,
    /// or the store is unreachable (never stored: the checkpoint belongs to
    /// the leader).
    Standby,
}

impl ProjectionState {
    /// The state's name as stored (`running`, `paused`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::Standby => "standby",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Paused,
            Self::Rebuilding,
            Self::Failed,
            Self::Stopped,
            Self::Standby,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }

    /// Whether a runner in this state has ended (stopped or failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Failed | Self::Stopped)
    }
}

impl fmt::Display for ProjectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
