//! PostgreSQL adapter for EventCore.
//!
//! ```no_run
//! use eventcore_postgres::{PostgresConfig, PostgresEventStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PostgresEventStore::new(PostgresConfig::from_env()?).await?;
//! store.initialize().await?; // safe at every start, from every process
//! # Ok(())
//! # }
//! ```
//!
//! - **Appends** are one round trip when every stream already exists: a
//!   single call of a server-side function, in its own `SERIALIZABLE`
//!   transaction (the store's writer connections default to that level), that
//!   checks the expected version of every listed stream (check-only streams
//!   included) with index point lookups, inserts the events, bumps the
//!   versions and commits, or writes nothing. An append that may create a
//!   stream (`NoStream`, `Exact(0)`, `Any`) first creates its row outside the
//!   transaction: one more round trip.
//! - **Idempotency keys**: an append carrying a key first looks the key up
//!   (a recorded key returns its result, writing nothing), then appends and
//!   records the key with its result in one `SERIALIZABLE` transaction
//!   (BEGIN, append, record, COMMIT): five round trips instead of one, paid
//!   only by keyed appends. Two appends racing with one key: one commits,
//!   the other gets the recorded result (or a retryable error first).
//! - **Errors**: serialization failures (40001), deadlocks (40P01) and unique
//!   violations on (stream, version) become retryable: a
//!   `StoreError::Conflict` naming the streams whose versions moved, or
//!   `StoreError::Transient` when none did. A connection lost while the
//!   append is in flight is `StoreError::UnknownOutcome`: it may or may not
//!   have committed. Every other database error is `StoreError::Backend` or
//!   `StoreError::Unavailable` with the sqlx error as its `source()`.
//! - **Reads** are single statements: a multi-stream read is one snapshot.
//! - **The global order** is (writing transaction id, sequence), delivered
//!   only below `pg_snapshot_xmin(pg_current_snapshot())`: a reader that
//!   passed a position never finds a later commit below it. `read_all` first
//!   waits (up to [`PostgresConfig::in_flight_wait`]) for the transactions
//!   running when it was called, so it returns everything committed before
//!   the call, your own appends included.
//! - **Subscriptions** page through that order and wait on LISTEN/NOTIFY,
//!   polling as a fallback. All subscriptions of a store share one
//!   listening connection of its own (never one of the pools), reconnected
//!   with backoff when it drops; they poll meanwhile.
//! - **Unreadable rows** (metadata, event type or stream id that a
//!   hand-written INSERT got past the schema) are
//!   [`StoreError::Undecodable`](eventcore::StoreError::Undecodable) at
//!   their position, after every good event before them.
//! - **Projections**: checkpoints in `eventcore_checkpoints`, fenced by the
//!   leadership generation in `eventcore_projection_leases`
//!   ([`PostgresLeadership`]); operators steer a running projection with an
//!   `UPDATE` of its checkpoint row (see [`PostgresCheckpointStore`]) and
//!   watch it with [`PostgresCheckpointStore::report`].
//! - Stream ids, event types, payloads and metadata are always bound
//!   parameters; the only name written into SQL is the configured schema,
//!   validated as a plain identifier and quoted.
//!
//! # Connections
//!
//! What one store (with all its clones) opens at most, also as numbers
//! from [`PostgresEventStore::connection_limit`]:
//!
//! | what | connections |
//! |---|---|
//! | read pool: reads, `read_all`, checkpoints, snapshots, stream rows, key lookups | `max_connections` |
//! | writer pool: appends (its connections default to `SERIALIZABLE`, so an append is one round trip) | `write_connections` (default `max_connections`); none for a store made [`from_pool`](PostgresEventStore::from_pool), whose appends share that pool |
//! | listener, shared by every subscription and projection runner of the store, open while any subscription waits | 1 |
//! | each projection runner with [`PostgresEventStore::leadership`], leading or in standby | 1 each |
//! | each read replica ([`PostgresConfig::read_replica`]), on that replica | `max_connections` |
//!
//! So on the primary `max_connections + write_connections + 1 + runners`
//! ([`ConnectionLimit::on_primary`]), and `max_connections` on each
//! replica; `tests/connection_budget.rs` checks both from
//! `pg_stat_activity` under commands, subscriptions and leases.
//! Subscriptions take a read-pool connection only for the moment of each
//! page read, so even `max_connections(1)` serves commands and any number
//! of subscriptions. Two stores made with [`PostgresEventStore::new`] each
//! have their own pools and listener; clone a store to share them.
//!
//! # Group commit
//!
//! With [`PostgresConfig::group_commit`] (off by default), appends that
//! are ready while the writer is busy, on streams that do not overlap,
//! go to the server together: one round trip, one transaction, one WAL
//! flush, each append with its own version checks, idempotency key and
//! result, and a stale append refused alone. An append that finds the
//! writer idle goes at once, so nothing waits for company. At 16 tasks on
//! disjoint streams it took the server's CPU per transfer from about 800
//! to about 300 µs and more than doubled throughput (BENCHMARKS.md); at
//! one task there is nothing to batch and nothing changes. It uses no
//! connections beyond the writer pool's.
//!
//! # Read replicas
//!
//! [`PostgresEventStore::replica`] is a handle whose event reads
//! (`read_all`, subscriptions, projection catch-up, stream pages, command
//! reads) go to a streaming replica, with everything that writes or
//! coordinates (appends, keys, checkpoints, leases, notifications) on the
//! primary. The global order is as gap-safe there as on the primary (see
//! `replica`'s docs for why). After a write,
//! [`PostgresEventStore::wal_position`] is a token a replica reader can
//! wait for ([`PostgresEventStore::wait_for`], bounded, with a typed
//! timeout) to read its own write.
//!
//! # Transaction poolers
//!
//! Through PgBouncer in `pool_mode = transaction`, declare it:
//! `PostgresConfig::new(pooler_url).transaction_pooler(session_url)`
//! ([`PostgresConfig::transaction_pooler`]). Appends, reads and snapshot
//! loads then go through the pooler, each call in a transaction of its own
//! with unnamed statements (PgBouncer 1.18, Debian's, keeps no prepared
//! statements across server connections); LISTEN, leases, checkpoints,
//! keys and `initialize` use the session URL. A lease taken through an
//! undeclared pooler is refused with an error that says so (named
//! statements fail there first, with the same advice), so two runners
//! never lead at once. The pooler costs round trips: measured in
//! BENCHMARKS.md, transfers run at 0.4x-0.6x of direct on one machine;
//! it pays where many application processes would otherwise each keep
//! their own connections to the server.
//!
//! Growing further than one primary (partitioning, Citus, YugabyteDB,
//! CockroachDB) is a design note: [`beyond_one_primary`].
//!
//! # Long transactions
//!
//! A transaction left open anywhere on the server holds back two things:
//! delivery of the global order (nothing above its id is handed out until it
//! ends; [`PostgresEventStore::delivery_lag`] shows how much waits), and
//! PostgreSQL's pruning of old row versions. Without pruning, version updates
//! stop fitting in place and add index entries, and SERIALIZABLE counts an
//! entry added where another transaction has read as a conflict. Stream rows
//! are found through a hash index, whose read locks cover one bucket rather
//! than a B-tree page of hundreds of ids, so appends to unrelated streams
//! rarely meet even then: 16 tasks on disjoint streams with a transaction held
//! open for the whole run saw 0 to 2 serialization failures in 2,000 appends
//! (they saw 4 to 6 with a B-tree), and none without it. The append plans
//! its lookups with sequential and bitmap scans disabled: once statistics say
//! the streams table is small, a sequential scan would otherwise be the
//! cheapest plan, and under SERIALIZABLE it locks the whole table, making
//! every append conflict with every other one. An open
//! `SERIALIZABLE` transaction that has read the event tables can still make
//! appends fail until it ends. Keep transactions on
//! the event store's server short.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod beyond_one_primary;
mod checkpoints;
mod config;
mod error;
mod insight;
mod leadership;
mod notify;
mod queries;
mod rows;
mod schema;
mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use checkpoints::{
    PostgresCheckpointStore, ProjectionReport, REPORT_COUNT_LIMIT, TransactionHolder,
};
pub use config::{ConfigError, PostgresConfig, SchemaName};
pub use insight::{
    Count, DEFAULT_RECENT_EVENTS, DayCount, EXACT_COUNT_LIMIT, StreamActivity, Totals, TypeCount,
    Watermark,
};
pub use leadership::{PostgresLeadership, PostgresLease};
pub use schema::{InitializeError, MigrationInfo, SchemaStatus};
pub use store::{
    ConnectError, ConnectionLimit, GroupCommit, PostgresEventStore, WaitError, WalPosition,
};
