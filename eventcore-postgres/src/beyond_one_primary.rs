//! Beyond one primary: what the next steps would change in this adapter.
//!
//! A design note, not a feature: none of these systems can be installed on
//! the machines EventCore is tested on, so nothing here is tested. Where a
//! statement rests on the vendor's documentation, the page is named;
//! statements marked *unverified* are the author's understanding and must be
//! checked before work starts.
//!
//! # What the adapter relies on
//!
//! 1. **SERIALIZABLE** transactions for the append's version checks
//!    (index point lookups, predicate locks on the stream rows).
//! 2. **`xid8` and `pg_current_snapshot()`/`pg_snapshot_xmin`** for the
//!    gap-safe global order: events are ordered by writing transaction and
//!    delivered only below the oldest running one.
//! 3. **LISTEN/NOTIFY** to wake subscriptions (polling is the fallback).
//! 4. **Session advisory locks** for projection leadership (fenced by a
//!    generation row).
//! 5. **PL/pgSQL** for the append function and the append-only triggers.
//!
//! # Partitioning the events table by position
//!
//! The nearest step, on one primary. Range partitions on `transaction_id`
//! (or on `sequence`) keep every index small and let old partitions move to
//! cheaper storage or be detached into an archive; `read_all` is ordered by
//! `(transaction_id, sequence)`, so it reads partitions in order and prunes
//! those below the reader's position. What changes: the unique constraints
//! (`event_id`; `(stream_id, stream_version)`) must include the partition
//! key in PostgreSQL, so they become a separate lookup table (stream rows
//! already carry the version check; event ids would need their own unique
//! index table), and a stream's events spread over partitions, so stream
//! reads touch several (cheap with a per-partition index on
//! `(stream_id, stream_version)`).
//!
//! # Citus (distributing by stream id)
//!
//! Citus shards a table by a distribution column and enforces a primary
//! key only when it includes that column
//! (docs.citusdata.com, FAQ "Can I create primary keys on distributed
//! tables?"). Distributing `eventcore_events` and `eventcore_streams` by
//! `stream_id` keeps a single-stream append and a stream read on one
//! shard. What breaks: a **multi-stream append across shards** becomes a
//! distributed transaction, and (*unverified*) Citus does not give
//! SERIALIZABLE across nodes, so the cross-stream version check must move
//! to explicit row locks (`SELECT ... FOR UPDATE` on every listed stream
//! row, in stream-id order) under READ COMMITTED; the **global order**
//! cannot use one node's transaction ids (each worker has its own), so it
//! needs a store-wide sequence assigned at commit, or positions per shard
//! with readers merging shards (the gap-safe watermark then per shard).
//! LISTEN/NOTIFY only reaches sessions on the node that notified.
//!
//! # YugabyteDB
//!
//! YSQL reuses PostgreSQL's query layer, so SQL and PL/pgSQL mostly work
//! as written (docs.yugabyte.com, "YSQL language features"). Its
//! compatibility page lists **LISTEN/NOTIFY** as unsupported (issue 1872),
//! while the LISTEN/NOTIFY statement page marks it early access from
//! v2025.2.3 (docs.yugabyte.com, "LISTEN/NOTIFY"): subscriptions would poll
//! on older versions. The gap-safe order is the open question
//! (*unverified*): transaction ids are not assigned from one counter across
//! the cluster, so `xid8` positions and `pg_snapshot_xmin` would not mean
//! what the adapter needs; a hybrid-logical-clock commit time with a
//! bounded clock skew wait (deliver only events older than now minus the
//! maximum skew) is the likely replacement.
//!
//! # CockroachDB
//!
//! PostgreSQL wire protocol and SERIALIZABLE by default. Its compatibility
//! page (v23.2) lists as unsupported: triggers (the append-only guard
//! becomes a privilege rule: no UPDATE/DELETE grant), stored procedures
//! (v23.2 has user-defined functions; the append function would become
//! plain statements in one transaction), events (LISTEN/NOTIFY:
//! subscriptions poll, or use a changefeed), and **advisory lock functions,
//! "defined with no-op implementations"**: leadership on advisory locks
//! would elect every runner at once, so leases must become rows with an
//! expiry (a lease table with a fencing generation, renewed by the leader),
//! which the fencing token design already supports. There is no `xid8`
//! snapshot (*unverified*); the global order would come from the commit
//! timestamp (`crdb_internal_mvcc_timestamp` or a changefeed's resolved
//! timestamps, which say up to when no earlier commit can still appear).
//!
//! # What stays
//!
//! The store contract, the executor, projections and their conformance
//! suites do not change: each of these is another adapter behind
//! `EventStore`, held to the same suites.
