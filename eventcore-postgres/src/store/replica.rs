//! Reading from streaming replicas, and reading one's own writes there.

use std::time::Duration;

use eventcore::StoreError;

use super::PostgresEventStore;
use crate::{error, telemetry};

/// A point in the primary's write-ahead log (an LSN): once a replica has
/// replayed up to it, every commit before it is visible there.
///
/// From [`PostgresEventStore::wal_position`], for
/// [`PostgresEventStore::wait_for`]; shown and parsed as PostgreSQL prints
/// LSNs (`16/B374D848`), so it can travel in an HTTP header or a cookie.
///
/// Reading one's own write from a replica:
///
/// ```no_run
/// use std::time::Duration;
/// use eventcore_postgres::WalPosition;
/// # async fn demo(store: eventcore_postgres::PostgresEventStore, written: eventcore::ExecutionResult) -> Result<(), Box<dyn std::error::Error>> {
/// // The token of a write, carried to the next request (a header, a cookie).
/// if let (Some(token), Some(replica)) = (written.commit_token.as_deref(), store.replica()) {
///     let position = WalPosition::parse(token).ok_or("not a WAL position")?;
///     replica.wait_for(&position, Duration::from_millis(200)).await?;
///     // `replica` now reads everything that write committed.
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalPosition(String);

impl WalPosition {
    /// Parses an LSN as PostgreSQL prints it: two hexadecimal numbers
    /// separated by a slash. `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let (high, low) = text.split_once('/')?;
        let hex = |part: &str| {
            !part.is_empty() && part.len() <= 8 && part.chars().all(|c| c.is_ascii_hexdigit())
        };
        (hex(high) && hex(low)).then(|| Self(text.to_ascii_uppercase()))
    }

    /// The LSN as PostgreSQL prints it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WalPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why [`PostgresEventStore::wait_for`] returned without the position replayed.
///
/// ```no_run
/// use std::time::Duration;
/// use eventcore_postgres::{WaitError, WalPosition};
/// # async fn demo(primary: eventcore_postgres::PostgresEventStore, replica: eventcore_postgres::PostgresEventStore, position: WalPosition) -> Result<(), Box<dyn std::error::Error>> {
/// let reader = match replica.wait_for(&position, Duration::from_millis(100)).await {
///     Ok(()) => replica,
///     Err(WaitError::Timeout { .. }) => primary, // the replica lags: read the write where it is
///     Err(error) => return Err(error.into()),
/// };
/// # let _ = reader;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The replica had not replayed the position within the time given:
    /// read from the primary, or try again later.
    #[error(
        "the replica had replayed the write-ahead log to {replayed}, not yet to {wanted}, \
         after {waited:?}: read from the primary instead, or wait longer"
    )]
    Timeout {
        /// The position waited for.
        wanted: WalPosition,
        /// How far the replica had replayed when the wait ended.
        replayed: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The replica could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The shortest and longest pause between two looks at a replica's replay.
const MIN_PAUSE: Duration = Duration::from_millis(2);
const MAX_PAUSE: Duration = Duration::from_millis(50);

impl PostgresEventStore {
    /// A handle that reads events from the first configured read replica
    /// ([`PostgresConfig::read_replica`](crate::PostgresConfig::read_replica)),
    /// `None` when none is configured.
    ///
    /// Its `read_all`, subscriptions, stream pages and command reads
    /// (`read_streams`, snapshots loaded) go to the replica; its appends,
    /// idempotency keys, snapshot saves, [`checkpoints`](Self::checkpoints),
    /// [`leadership`](Self::leadership) and the notifications its
    /// subscriptions wait on stay on the primary. So a projection runner
    /// given the replica handle catches up from the replica and keeps its
    /// lease and checkpoint on the primary.
    ///
    /// The global order is as gap-safe on a hot standby as on the
    /// primary: the standby's snapshot treats every transaction it has
    /// seen an id of, and every id below the highest it has seen that the
    /// primary has not reported finished, as running, so its watermark
    /// never passes a transaction that can still commit. A replica reader
    /// is only behind: by the replica's replay lag, plus up to the
    /// subscription poll interval when a notification (sent at the
    /// primary's commit) arrives before the replica has replayed it.
    ///
    /// Command reads from a replica stay correct (the append checks every
    /// stream's version on the primary) but a read that misses a recent
    /// write costs a version conflict and a retry; give an executor the
    /// replica handle only for commands on streams that are rarely
    /// written twice in a replica lag.
    pub fn replica(&self) -> Option<Self> {
        self.replicas().into_iter().next()
    }

    /// A handle per configured read replica, as [`replica`](Self::replica) describes.
    pub fn replicas(&self) -> Vec<Self> {
        self.shared
            .replicas
            .iter()
            .map(|pool| Self {
                events: pool.clone(),
                events_label: "replica",
                ..self.clone()
            })
            .collect()
    }

    /// Whether this handle reads events from a replica.
    pub fn reads_from_replica(&self) -> bool {
        self.events_label == "replica"
    }

    /// The primary's current position in its write-ahead log: every
    /// commit acknowledged before this call lies before it. Take it after a
    /// command succeeds and hand it to the reader that must see the
    /// command's events on a replica ([`wait_for`](Self::wait_for)).
    ///
    /// # Errors
    /// [`StoreError`] if the primary cannot be asked.
    pub async fn wal_position(&self) -> Result<WalPosition, StoreError> {
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut *telemetry::connection(&self.pool, "read").await?)
            .await
            .map_err(error::to_store_error)?;
        Ok(WalPosition(lsn))
    }

    /// Waits, at most `timeout`, until the database this handle reads
    /// events from has replayed `position`: then its reads see every write
    /// acknowledged before `position` was taken. On a handle that reads
    /// from the primary it returns at once.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] when the replica has not replayed it in
    /// time (nothing is wrong with the write: read from the primary, or
    /// wait longer); [`WaitError::Store`] when the replica cannot be asked.
    pub async fn wait_for(
        &self,
        position: &WalPosition,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let started = tokio::time::Instant::now();
        let mut pause = MIN_PAUSE;
        loop {
            // NULL on a primary: it has everything it wrote.
            let (reached, replayed): (Option<bool>, Option<String>) = sqlx::query_as(
                "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn, pg_last_wal_replay_lsn()::text",
            )
            .bind(position.as_str())
            .fetch_one(&mut *telemetry::connection(&self.events, self.events_label).await?)
            .await
            .map_err(error::to_store_error)?;
            if reached.is_none_or(|r| r) {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(WaitError::Timeout {
                    wanted: position.clone(),
                    replayed: replayed.unwrap_or_default(),
                    waited,
                });
            }
            tokio::time::sleep(pause.min(timeout - waited)).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WalPosition;

    #[test]
    fn positions_parse_as_postgresql_prints_them() {
        assert_eq!(
            WalPosition::parse("16/b374d848").unwrap().as_str(),
            "16/B374D848"
        );
        for bad in ["", "16", "/1", "1/", "g/1", "1/2/3", "123456789/1"] {
            assert!(WalPosition::parse(bad).is_none(), "{bad:?}");
        }
    }
}
