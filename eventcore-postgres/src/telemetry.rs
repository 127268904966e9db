//! The PostgreSQL store's own metrics: its connections.
//!
//! Recorded, like `eventcore::telemetry`'s, only while a `metrics`
//! recorder is installed. The store holds two pools (`read`: reads,
//! checkpoints, and the connections leases take out of it; `write`:
//! appends), a pool per read replica (`replica`, all replicas under one
//! label), one LISTEN connection while any subscription runs, and one
//! connection per projection lease it holds.
//!
//! | name | type | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `eventcore_postgres_pool_connections` | gauge | | `pool`, `state` | Connections of a pool, `in_use` or `idle`, as of its last use. |
//! | `eventcore_postgres_pool_max_connections` | gauge | | `pool` | The pool's limit. |
//! | `eventcore_postgres_pool_acquire_seconds` | histogram | seconds | `pool` | Time to get a connection from the pool (long when the pool is exhausted). |
//! | `eventcore_postgres_listener_connections` | gauge | | | LISTEN connections open (one per store with subscriptions). |
//! | `eventcore_postgres_lease_connections` | gauge | | | Connections held by projection leases (taken out of the `read` pool). |
//! | `eventcore_postgres_group_commit_appends` | histogram | | | Appends written in one shared transaction, for batches of two or more ([`GroupCommit`](crate::GroupCommit)). |
//! | `eventcore_postgres_group_commit_split_total` | counter | | | Batches that met contention, a lock wait limit or a concurrent key and were written again one append at a time. |
//! | `eventcore_postgres_delivery_held_back_events` | gauge | | | Committed events not yet deliverable behind an old transaction, as last measured (`PostgresEventStore::watermark`, `PostgresCheckpointStore::report`). |

use std::sync::atomic::{AtomicI64, Ordering};

use eventcore::StoreError;
use metrics::{gauge, histogram};
use sqlx::{PgPool, Postgres, pool::PoolConnection};
use tokio::time::Instant;

use crate::error;

/// Connections of a pool by `pool` and `state`.
pub const POOL_CONNECTIONS: &str = "eventcore_postgres_pool_connections";
/// A pool's limit, by `pool`.
pub const POOL_MAX_CONNECTIONS: &str = "eventcore_postgres_pool_max_connections";
/// Time to get a connection from a pool, by `pool`.
pub const POOL_ACQUIRE_SECONDS: &str = "eventcore_postgres_pool_acquire_seconds";
/// LISTEN connections open.
pub const LISTENER_CONNECTIONS: &str = "eventcore_postgres_listener_connections";
/// Connections held by projection leases.
pub const LEASE_CONNECTIONS: &str = "eventcore_postgres_lease_connections";

/// Events held back behind an old transaction, as last measured.
pub const DELIVERY_HELD_BACK_EVENTS: &str = "eventcore_postgres_delivery_held_back_events";

/// Appends in one batch of a group commit (two or more).
pub const GROUP_COMMIT_BATCH: &str = "eventcore_postgres_group_commit_appends";
/// Batches written again one append at a time.
pub const GROUP_COMMIT_SPLIT: &str = "eventcore_postgres_group_commit_split_total";

/// Every metric name above.
pub const ALL: [&str; 8] = [
    POOL_CONNECTIONS,
    POOL_MAX_CONNECTIONS,
    POOL_ACQUIRE_SECONDS,
    LISTENER_CONNECTIONS,
    LEASE_CONNECTIONS,
    DELIVERY_HELD_BACK_EVENTS,
    GROUP_COMMIT_BATCH,
    GROUP_COMMIT_SPLIT,
];

/// Records the events held back, as just measured.
pub(crate) fn held_back(events: u64) {
    if eventcore::telemetry::recording() {
        // Event counts fit an f64 exactly up to 2^53.
        #[allow(clippy::cast_precision_loss)]
        gauge!(DELIVERY_HELD_BACK_EVENTS).set(events as f64);
    }
}

/// A connection from `pool` (labelled `label`), timed, with the pool's
/// gauges brought up to date, when a recorder listens.
pub(crate) async fn acquire(
    pool: &PgPool,
    label: &'static str,
) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    if !eventcore::telemetry::recording() {
        return boxed_acquire(pool).await;
    }
    let started = Instant::now();
    let connection = boxed_acquire(pool).await;
    histogram!(POOL_ACQUIRE_SECONDS, "pool" => label).record(started.elapsed().as_secs_f64());
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    gauge!(POOL_CONNECTIONS, "pool" => label, "state" => "in_use")
        .set(f64::from(size.saturating_sub(idle)));
    gauge!(POOL_CONNECTIONS, "pool" => label, "state" => "idle").set(f64::from(idle));
    gauge!(POOL_MAX_CONNECTIONS, "pool" => label)
        .set(f64::from(pool.options().get_max_connections()));
    connection
}

/// `pool.acquire()` on the heap: sqlx's acquire future is about 4 KiB in
/// a debug build, and held inline it would weigh on every store call's
/// future (and stack) that waits for a connection; one allocation per
/// acquire costs nothing beside the pool's own work.
pub(crate) async fn boxed_acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    Box::pin(pool.acquire()).await
}

/// [`acquire`] for store calls: a failure is a [`StoreError`].
pub(crate) async fn connection(
    pool: &PgPool,
    label: &'static str,
) -> Result<PoolConnection<Postgres>, StoreError> {
    match acquire(pool, label).await {
        Ok(connection) => Ok(connection),
        Err(e) => Err(error::acquire_error(e, &pool.connect_options()).await),
    }
}

/// Process-wide counts behind the two connection gauges: a count is kept
/// whether or not a recorder listens, so the gauge is right from the first
/// change after one is installed.
static LISTENERS: AtomicI64 = AtomicI64::new(0);
static LEASES: AtomicI64 = AtomicI64::new(0);

/// Counts one open connection of a kind while it lives.
#[derive(Debug)]
pub(crate) struct Held {
    count: &'static AtomicI64,
    name: &'static str,
}

impl Held {
    /// A LISTEN connection.
    pub(crate) fn listener() -> Self {
        Self::new(&LISTENERS, LISTENER_CONNECTIONS)
    }

    /// A lease's connection.
    pub(crate) fn lease() -> Self {
        Self::new(&LEASES, LEASE_CONNECTIONS)
    }

    fn new(count: &'static AtomicI64, name: &'static str) -> Self {
        let now = count.fetch_add(1, Ordering::Relaxed) + 1;
        publish(name, now);
        Self { count, name }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let now = self.count.fetch_sub(1, Ordering::Relaxed) - 1;
        publish(self.name, now);
    }
}

fn publish(name: &'static str, count: i64) {
    if eventcore::telemetry::recording() {
        // Counts of connections fit an f64 exactly.
        #[allow(clippy::cast_precision_loss)]
        gauge!(name).set(count as f64);
    }
}
