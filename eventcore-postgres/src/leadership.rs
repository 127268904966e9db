//! Projection leadership across processes: a session advisory lock.

use std::time::Duration;

use eventcore::{Leadership, StoreError};
use sqlx::{Connection, PgConnection, PgPool};

use crate::{SchemaName, error};

/// Tries the lock of one projection name in one schema.
const TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtext('eventcore-projection:' || $1), hashtext($2))";

/// A [`Leadership`] shared by every process on one database: the lease is a
/// session advisory lock held on a connection of its own, so it ends when
/// its holder stops, crashes or loses the connection. Runners in standby
/// try the lock every `poll` interval, which bounds how long a takeover
/// waits.
#[derive(Debug, Clone)]
pub struct PostgresLeadership {
    pool: PgPool,
    schema: SchemaName,
    poll: Duration,
}

/// Leadership of one projection: the connection holding its advisory lock.
#[derive(Debug)]
pub struct PostgresLease {
    connection: PgConnection,
}

impl PostgresLeadership {
    pub(crate) fn new(pool: PgPool, schema: SchemaName, poll: Duration) -> Self {
        Self { pool, schema, poll }
    }

    /// A connection of its own, out of the pool: the lock lives and dies with it.
    async fn lock_connection(&self) -> Result<PgConnection, StoreError> {
        Ok(self
            .pool
            .acquire()
            .await
            .map_err(error::to_store_error)?
            .detach())
    }

    async fn try_lock(
        &self,
        connection: &mut PgConnection,
        name: &str,
    ) -> Result<bool, StoreError> {
        sqlx::query_scalar(TRY_LOCK)
            .bind(self.schema.as_str())
            .bind(name)
            .fetch_one(connection)
            .await
            .map_err(error::to_store_error)
    }
}

impl Leadership for PostgresLeadership {
    type Lease = PostgresLease;

    async fn acquire(&self, name: &str) -> Result<PostgresLease, StoreError> {
        let mut connection = self.lock_connection().await?;
        loop {
            if self.try_lock(&mut connection, name).await? {
                return Ok(PostgresLease { connection });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn try_acquire(&self, name: &str) -> Result<Option<PostgresLease>, StoreError> {
        let mut connection = self.lock_connection().await?;
        if self.try_lock(&mut connection, name).await? {
            Ok(Some(PostgresLease { connection }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    async fn holds(&self, lease: &mut PostgresLease) -> bool {
        // A session lock lasts as long as its session: a live connection still holds it.
        lease.connection.ping().await.is_ok()
    }
}
