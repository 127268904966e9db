//! Production: connections, timeouts, long transactions, replicas,
//! poolers, backups, retention, monitoring.
//!
//! # Connections
//!
//! A PostgreSQL store opens at most `max_connections` (reads) +
//! `write_connections` (appends; `max_connections` unless set) + 1 (the
//! LISTEN connection all its subscriptions share) + 1 per projection
//! runner holding a lease, and `max_connections` on each read replica:
//! `PostgresEventStore::connection_limit()` says it in numbers. Clone a
//! store to share its pools; two `new` stores have two sets. Size the
//! pools so that every process's budget fits the server's
//! `max_connections`; appends hold a connection for one round trip, so a
//! small writer pool serves many commands.
//!
//! # Timeouts
//!
//! `ExecutionOptions::with_timeout` bounds an execution, including its
//! waits on row locks (the append's `lock_timeout` is set from the time
//! left); `PostgresConfig::statement_timeout` bounds each statement (30 s
//! by default); `acquire_timeout` bounds the wait for a pooled connection
//! (5 s), after which the error names the server and what a probe found.
//!
//! # Long transactions
//!
//! A transaction left open anywhere on the server holds back delivery of
//! the global order (gap safety: nothing after its id is handed out until
//! it ends) and PostgreSQL's cleanup of old row versions. `eventcore status`
//! and `PostgresEventStore::watermark()` name the transaction (pid, age,
//! database); keep transactions on the event store's server short, and
//! watch `eventcore_postgres_delivery_held_back_events`.
//!
//! # Growing
//!
//! Reads can move to streaming replicas (`PostgresConfig::read_replica`,
//! `store.replica()`), with read-your-writes through
//! `wal_position`/`wait_for`; PgBouncer in transaction mode works when
//! declared (`transaction_pooler(session_url)`). See the README, "Growing
//! past one server".
//!
//! # Backups and moving data
//!
//! The events table is append-only (updates, deletes and truncation are
//! refused by triggers): any PostgreSQL backup (`pg_dump`, base backups with
//! WAL archiving) keeps it. `eventcore export` writes the events as JSON
//! Lines and `eventcore import` reads them into another schema, keeping ids,
//! versions, times and order; a rerun after an interruption doubles
//! nothing.
//!
//! # Retention
//!
//! Events are kept forever. Idempotency keys are kept 24 hours by default
//! (`PostgresConfig::idempotency_retention`): a retry within that window
//! is safe. Snapshots are a cache: dropping them costs only longer folds.
//!
//! # Monitoring
//!
//! Metrics go through the `metrics` facade (names in
//! [`telemetry`](crate::telemetry)); spans through `tracing`, with
//! OpenTelemetry's database fields. The README's "Monitoring" section lists
//! what to alert on.
//!
//! Next: [troubleshooting](super::troubleshooting).
