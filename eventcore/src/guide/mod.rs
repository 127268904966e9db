//! The guide: EventCore from a first command to production, read in order.
//!
//! 1. [Quick start](quick_start): the dependencies, a first command on the
//!    memory store, the same on PostgreSQL.
//! 2. [Concepts](concepts): streams, versions, the global order, and why a
//!    command's consistency boundary is the set of streams it reads.
//! 3. [Writing commands](commands): state and decisions, several streams,
//!    streams found while deciding, business errors, idempotency keys,
//!    timeouts, typed ids.
//! 4. [Testing](testing): given/when/then for commands; the conformance
//!    suites for a store adapter of your own.
//! 5. [Projections](projections): read models from the global order,
//!    exactly once with the checkpoint in the read model's transaction,
//!    leadership, rebuilds, steering from outside.
//! 6. [Production](production): the connection budget, pool sizing,
//!    timeouts, long transactions, replicas, PgBouncer, backups, retention,
//!    monitoring.
//! 7. [Troubleshooting](troubleshooting): every error a user has met, what
//!    it means and what to do.
//! 8. [Coming from EventStoreDB or Axon](coming_from): what maps to what.
//!
//! Every example here is compiled and run as a doctest.

pub mod coming_from;
pub mod commands;
pub mod concepts;
pub mod production;
pub mod projections;
pub mod quick_start;
pub mod testing;
pub mod troubleshooting;
