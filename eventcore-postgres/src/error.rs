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

/// Whether a SQLSTATE says a table, schema or function EventCore creates is
/// missing: undefined table (42P01), undefined schema (3F000), or an
/// undefined function (42883: a schema from before the append function this
/// release calls).
fn is_missing_schema(code: &str) -> bool {
    matches!(code, "42P01" | "3F000" | "42883")
}

/// Why no connection could be had from `pool`: a look at the server's
/// address, so that the error says "connection refused at host:port"
/// rather than that a pool timed out. Costs one TCP connect attempt, on the
/// failure path only.
pub(crate) async fn diagnose_unreachable(options: &sqlx::postgres::PgConnectOptions) -> String {
    let (host, port) = (options.get_host(), options.get_port());
    if host.starts_with('/') {
        return format!(
            "no connection through the socket in {host} (port {port}): is PostgreSQL running there?"
        );
    }
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await;
    match probe {
        Err(_) => format!("no answer from {host}:{port} within 1 s"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("connection refused at {host}:{port}: is PostgreSQL running there?")
        }
        Ok(Err(e)) => format!("could not reach {host}:{port}: {e}"),
        Ok(Ok(_)) => format!(
            "{host}:{port} accepts connections, but none became free (or could be set up) \
             within the acquire timeout: every connection of the pool is in use, or the \
             server refuses new sessions"
        ),
    }
}

/// [`to_store_error`] for a failed acquire, naming the server when it
/// could not be reached.
pub(crate) async fn acquire_error(
    error: sqlx::Error,
    options: &sqlx::postgres::PgConnectOptions,
) -> StoreError {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Unavailable {
            reason: diagnose_unreachable(options).await,
            source: Some(Box::new(error)),
        },
        other => to_store_error(other),
    }
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
        sqlx::Error::Database(db) if db.code().as_deref().is_some_and(is_missing_schema) => {
            StoreError::Backend {
                reason: "EventCore's tables are missing or out of date in this schema: call \
                         PostgresEventStore::initialize(), which creates and upgrades them"
                    .to_owned(),
                source: Some(Box::new(error)),
            }
        }
        // A prepared statement missing from (or already in) the session
        // that runs it: statements of one connection met different server
        // sessions, as through a transaction pooler.
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("26000" | "42P05")) => {
            StoreError::Backend {
                reason: "a prepared statement was not in the session that ran it: a transaction \
                         pooler (PgBouncer with pool_mode = transaction) is between the store and \
                         PostgreSQL; declare it with PostgresConfig::transaction_pooler(session_url)"
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
