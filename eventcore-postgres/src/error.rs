//! Translation of database errors, in one place.

use eventcore::StoreError;

/// SQLSTATE of a serialization failure.
pub(crate) const SERIALIZATION_FAILURE: &str = "40001";
/// SQLSTATE of a detected deadlock.
pub(crate) const DEADLOCK_DETECTED: &str = "40P01";
/// SQLSTATE of a unique violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE of a lock wait that reached `lock_timeout`.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE of an exclusion-constraint violation.
pub(crate) const EXCLUSION_VIOLATION: &str = "23P01";
/// The constraint that keeps versions unique per stream.
pub(crate) const STREAM_VERSION_CONSTRAINT: &str = "eventcore_events_stream_version_key";
/// The constraint that keeps one row per stream (a hash exclusion constraint).
pub(crate) const STREAM_ID_CONSTRAINT: &str = "eventcore_streams_unique_id";

/// The constraint that keeps idempotency keys unique.
pub(crate) const IDEMPOTENCY_KEY_CONSTRAINT: &str = "eventcore_idempotency_key";

/// Whether `error` says the idempotency key was recorded by another append.
pub(crate) fn is_duplicate_key(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|db| {
        db.code().as_deref() == Some(UNIQUE_VIOLATION)
            && db.constraint() == Some(IDEMPOTENCY_KEY_CONSTRAINT)
    })
}

/// What a failed statement means for the caller.
pub(crate) enum Failure {
    /// A concurrent transaction got in the way; re-check the versions, then retry.
    Contention(sqlx::Error),
    /// Anything else, already a store error.
    Other(StoreError),
}

/// Sorts a sqlx error into contention (retryable) and everything else.
pub(crate) fn classify(error: sqlx::Error) -> Failure {
    if let Some(db) = error.as_database_error() {
        let code = db.code();
        let contention = match code.as_deref() {
            Some(SERIALIZATION_FAILURE | DEADLOCK_DETECTED) => true,
            Some(UNIQUE_VIOLATION) => db.constraint() == Some(STREAM_VERSION_CONSTRAINT),
            // Two appends creating the same stream inside their transactions.
            Some(EXCLUSION_VIOLATION) => db.constraint() == Some(STREAM_ID_CONSTRAINT),
            _ => false,
        };
        if contention {
            return Failure::Contention(error);
        }
        if code.as_deref() == Some(LOCK_NOT_AVAILABLE) {
            // The append's bound on lock waits: its transaction was rolled back.
            return Failure::Other(StoreError::Transient {
                reason: "a stream row stayed locked by another session past the append's \
                         lock wait limit; nothing was written"
                    .to_owned(),
                source: Some(Box::new(error)),
            });
        }
    }
    Failure::Other(to_store_error(error))
}

/// Whether a SQLSTATE says the server ended the session instead of running
/// the statement: a connection exception (class 08), or an administrator or
/// crash shutdown, or a server not yet accepting connections (57P01-57P03).
/// A shutdown rolls back the transaction it interrupts, so nothing was written.
fn is_going_away(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Maps a non-contention error, keeping it as the source.
pub(crate) fn to_store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable {
            reason: "could not reach PostgreSQL".to_owned(),
            source: Some(Box::new(error)),
        },
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_going_away) => {
            StoreError::Unavailable {
                reason:
                    "PostgreSQL closed the connection (the server is shutting down or starting)"
                        .to_owned(),
                source: Some(Box::new(error)),
            }
        }
        sqlx::Error::Database(db) => StoreError::Backend {
            reason: format!(
                "PostgreSQL error {}",
                db.code().as_deref().unwrap_or("without a SQLSTATE")
            ),
            source: Some(Box::new(error)),
        },
        _ => StoreError::Backend {
            reason: "PostgreSQL call failed".to_owned(),
            source: Some(Box::new(error)),
        },
    }
}

/// Maps an error from COMMIT: a database answer is a definite outcome, but a
/// lost connection leaves the commit's outcome unknown.
pub(crate) fn commit_failure(error: sqlx::Error) -> Failure {
    if error.as_database_error().is_some() {
        classify(error)
    } else if matches!(error, sqlx::Error::Encode(_)) {
        // Encoding the arguments fails before anything is sent.
        Failure::Other(StoreError::Backend {
            reason: "the append could not be encoded; nothing was sent".to_owned(),
            source: Some(Box::new(error)),
        })
    } else {
        Failure::Other(StoreError::UnknownOutcome {
            source: Box::new(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_going_away;

    #[test]
    fn shutdown_and_connection_codes_mean_the_server_went_away() {
        for code in ["57P01", "57P02", "57P03", "08000", "08006", "08P01"] {
            assert!(is_going_away(code), "{code}");
        }
        for code in ["40001", "23505", "57014", "XX000"] {
            assert!(!is_going_away(code), "{code}");
        }
    }
}
