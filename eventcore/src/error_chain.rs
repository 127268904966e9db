//! An error with its causes, in one line.

use std::error::Error;

/// `error`'s message followed by each of its causes
/// ([`source`](Error::source)), joined by `": "`: what to log or store
/// where only a string fits.
///
/// EventCore's errors print only their own message and return what caused
/// them as the source (never both, so a chain printer such as anyhow's
/// `{:#}` names each cause once); this is that chain as a string.
///
/// ```
/// use eventcore::{StoreError, error_chain};
///
/// let io = std::io::Error::other("connection reset by peer");
/// let error = StoreError::Unavailable {
///     reason: "could not reach PostgreSQL".into(),
///     source: Some(Box::new(io)),
/// };
/// assert!(error_chain(&error).ends_with(": connection reset by peer"));
/// ```
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let message = next.to_string();
        // A cause already spelled out by the error above it adds nothing.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = next.source();
    }
    text
}
