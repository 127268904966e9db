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
//! - **Appends**: one `SERIALIZABLE` transaction per multi-stream append,
//!   calling a server-side function that checks the expected version of
//!   every listed stream (check-only streams included) with index point
//!   lookups, inserts the events and bumps the versions, or writes nothing.
//!   Serialization failures (40001), deadlocks (40P01) and unique violations
//!   on (stream, version) become retryable: a `StoreError::Conflict` naming
//!   the streams whose versions moved, or `StoreError::Transient` when none
//!   did. A connection lost during `COMMIT` is `StoreError::UnknownOutcome`.
//! - **Reads** are single statements: a multi-stream read is one snapshot.
//! - **The global order** is (writing transaction id, sequence), delivered
//!   only below `pg_snapshot_xmin(pg_current_snapshot())`: a reader that
//!   passed a position never finds a later commit below it.
//! - **Subscriptions** page through that order and wait on LISTEN/NOTIFY,
//!   polling as a fallback.
//! - Stream ids, event types, payloads and metadata are always bound
//!   parameters; the only name written into SQL is the configured schema,
//!   validated as a plain identifier and quoted.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod config;
mod error;
mod notify;
mod schema;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ConfigError, PostgresConfig, SchemaName};
pub use schema::InitializeError;
pub use store::{ConnectError, PostgresEventStore};
