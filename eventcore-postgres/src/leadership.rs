//! Projection leadership across processes: a session advisory lock, fenced
//! by a generation raised by every new holder.

use std::time::Duration;

use eventcore::{FencingToken, Leadership, StoreError};
use sqlx::{Connection, PgConnection, PgPool, SqlStr};

use crate::{SchemaName, error, queries::schema_sql};

/// Tries the lock of one projection name in one schema.
const TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtext('eventcore-projection:' || $1), hashtext($2))";

/// Marks the lease's session with a token of its own (a session setting).
const MARK_SESSION: &str = "SELECT set_config('eventcore.lease', $1, false)";

/// Whether the statement runs in the session marked with token `$1`.
const SAME_SESSION: &str =
    "SELECT current_setting('eventcore.lease', true) IS NOT DISTINCT FROM $1";

/// Why a lease was refused when its statements do not share one session.
const POOLER: &str = "the lease's statements ran in different server sessions: a transaction \
    pooler (PgBouncer with pool_mode = transaction) is between the store and PostgreSQL, and a \
    session advisory lock there would let two runners lead; give the store a session URL \
    (PostgresConfig::transaction_pooler) for leases, listening and checkpoints";

// rustdoc calls this explicit target redundant, yet renders the link
// unresolved in the summary on the crate's page without it (see .ci/run).
#[allow(rustdoc::redundant_explicit_links)]
/// A [`Leadership`](eventcore::Leadership) shared by every process on one database: the lease is a
/// session advisory lock held on a connection of its own, so it ends when
/// its holder stops, crashes or loses the connection. Runners in standby
/// try the lock every `poll` interval, which bounds how long a takeover
/// waits.
///
/// Each new holder raises the projection's generation in
/// `eventcore_projection_leases` on the lock's connection; that generation
/// is the lease's [`FencingToken`]. [`holds`](Leadership::holds) reads it
/// back on the same connection: a dead connection or a newer generation
/// means the lease is gone.
///
/// Connections: every runner using this leadership, leader or standby,
/// holds one connection of its own (taken out of the store's read pool,
/// which opens a replacement), so `n` runners add `n` connections to the
/// store's budget.
///
/// ```no_run
/// use std::time::Duration;
/// use eventcore::Leadership;
///
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), eventcore::StoreError> {
/// let leadership = store.leadership(Duration::from_secs(1));
/// if let Some(mut lease) = leadership.try_acquire("bank-balances").await? {
///     // This process leads until the lease is dropped or lost.
///     assert!(leadership.holds(&mut lease).await);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresLeadership {
    pool: PgPool,
    schema: SchemaName,
    poll: Duration,
    queries: std::sync::Arc<Queries>,
}

#[derive(Debug)]
struct Queries {
    raise_generation: SqlStr,
    generation: SqlStr,
}

/// Leadership of one projection: the connection holding its advisory lock.
///
/// ```no_run
/// use std::time::Duration;
/// use eventcore::Leadership;
/// # async fn demo(store: eventcore_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// let leadership = store.leadership(Duration::from_secs(1));
/// if let Some(mut lease) = leadership.try_acquire("balances").await? {
///     assert!(leadership.holds(&mut lease).await);
///     drop(lease); // closes its connection: another process may lead now
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresLease {
    connection: PgConnection,
    name: String,
    generation: i64,
    /// The mark of the lock's session.
    token: String,
    /// Counts the connection for `eventcore_postgres_lease_connections`.
    _held: crate::telemetry::Held,
}

impl PostgresLeadership {
    pub(crate) fn new(pool: PgPool, schema: SchemaName, poll: Duration) -> Self {
        let s = schema.quoted();
        let queries = Queries {
            raise_generation: schema_sql!(
                "INSERT INTO {s}.eventcore_projection_leases AS l (projection, generation) \
                 VALUES ($1, 1) ON CONFLICT (projection) DO UPDATE \
                 SET generation = l.generation + 1, acquired_at = now() RETURNING generation"
            ),
            generation: schema_sql!(
                "SELECT generation, current_setting('eventcore.lease', true) IS NOT DISTINCT FROM $2 \
                 FROM {s}.eventcore_projection_leases WHERE projection = $1"
            ),
        };
        Self {
            pool,
            schema,
            poll,
            queries: std::sync::Arc::new(queries),
        }
    }

    /// A connection of its own, out of the pool: the lock lives and dies with it.
    async fn lock_connection(&self) -> Result<PgConnection, StoreError> {
        Ok(crate::telemetry::connection(&self.pool, "read")
            .await?
            .detach())
    }

    /// Takes the lock if it is free, and with it the next generation.
    async fn try_lock(
        &self,
        connection: &mut PgConnection,
        name: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let locked: bool = sqlx::query_scalar(TRY_LOCK)
            .bind(self.schema.as_str())
            .bind(name)
            .fetch_one(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        if !locked {
            return Ok(None);
        }
        // A session lock is only a lease if every later statement of this
        // connection meets the same session: mark it, and check the mark
        // now and at every look (`holds`). Through a transaction pooler the
        // next statement may run in another session, which has no mark or
        // another lease's.
        let token = uuid::Uuid::now_v7().to_string();
        sqlx::query(MARK_SESSION)
            .bind(&token)
            .execute(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        let generation: i64 = sqlx::query_scalar(self.queries.raise_generation.clone())
            .bind(name)
            .fetch_one(&mut *connection)
            .await
            .map_err(error::to_store_error)?;
        if !same_session(connection, &token).await? {
            return Err(StoreError::Backend {
                reason: POOLER.to_owned(),
                source: None,
            });
        }
        Ok(Some((generation, token)))
    }
}

impl Leadership for PostgresLeadership {
    type Lease = PostgresLease;

    async fn acquire(&self, name: &str) -> Result<PostgresLease, StoreError> {
        let mut connection = self.lock_connection().await?;
        loop {
            if let Some((generation, token)) = self.try_lock(&mut connection, name).await? {
                return Ok(PostgresLease {
                    _held: crate::telemetry::Held::lease(),
                    connection,
                    name: name.to_owned(),
                    generation,
                    token,
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    async fn try_acquire(&self, name: &str) -> Result<Option<PostgresLease>, StoreError> {
        let mut connection = self.lock_connection().await?;
        match self.try_lock(&mut connection, name).await? {
            Some((generation, token)) => Ok(Some(PostgresLease {
                _held: crate::telemetry::Held::lease(),
                connection,
                name: name.to_owned(),
                generation,
                token,
            })),
            None => {
                let _ = connection.close().await;
                Ok(None)
            }
        }
    }

    async fn holds(&self, lease: &mut PostgresLease) -> bool {
        // A session lock lasts as long as its session: an answer on the
        // lock's own connection proves it is held, and the generation proves
        // no one took over meanwhile.
        let current: Result<Option<(i64, bool)>, _> =
            sqlx::query_as(self.queries.generation.clone())
                .bind(&lease.name)
                .bind(&lease.token)
                .fetch_optional(&mut lease.connection)
                .await;
        match current {
            Ok(Some((generation, same))) if generation == lease.generation => {
                if !same {
                    tracing::error!(projection = %lease.name, "{POOLER}");
                }
                same
            }
            _ => false,
        }
    }

    fn fence(&self, lease: &PostgresLease) -> Option<FencingToken> {
        Some(FencingToken::new(
            u64::try_from(lease.generation).unwrap_or(0),
        ))
    }
}

/// Whether `connection`'s statement runs in the session marked `token`.
async fn same_session(connection: &mut PgConnection, token: &str) -> Result<bool, StoreError> {
    sqlx::query_scalar(SAME_SESSION)
        .bind(token)
        .fetch_one(&mut *connection)
        .await
        .map_err(error::to_store_error)
}
