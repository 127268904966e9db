//! Why a runner ended without being asked to.

use crate::{GlobalPosition, StoreError};

/// The runner ended without being asked to. Store outages are not among
/// the reasons: they are waited out in standby.
///
/// ```
/// use eventcore::ProjectionError;
///
/// fn report(ended: Result<(), ProjectionError>) {
///     match ended {
///         Ok(()) => {}
///         // Another process leads, and this runner was told not to wait.
///         Err(ProjectionError::AnotherLeads { .. }) => {}
///         Err(error) => eprintln!("projection stopped: {error}"),
///     }
/// }
/// # let _ = report;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// `apply`, `reset` or `resume_from` failed and the error policy says stop.
    #[error("projection {name} failed at the event after {position}")]
    Apply {
        /// The projection's name.
        name: String,
        /// The last position applied before the failure.
        position: GlobalPosition,
        /// The projection's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored event could not be read and the error policy says stop.
    #[error("projection {name} stopped at an unreadable event")]
    Unreadable {
        /// The projection's name.
        name: String,
        /// The unreadable event's position; the checkpoint stays before it.
        position: GlobalPosition,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The projection's name cannot be a checkpoint's key: it is empty,
    /// longer than 255 characters, or holds a control character (NUL
    /// included). The runner ends before it touches a store.
    #[error("projection name {name:?} cannot be used: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another runner leads this projection and the runner was told not to wait
    /// ([`ProjectionOptions::wait_for_leadership`](crate::ProjectionOptions::wait_for_leadership)).
    #[error("projection {name}: another runner leads it")]
    AnotherLeads {
        /// The projection's name.
        name: String,
    },
    /// The runner's task panicked or was cancelled.
    #[error("projection {name}: the runner task ended abnormally: {reason}")]
    Aborted {
        /// The projection's name.
        name: String,
        /// What tokio reported.
        reason: String,
    },
}
