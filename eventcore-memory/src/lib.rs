//! An in-memory [`EventStore`](eventcore::EventStore) with the same observable behaviour as the PostgreSQL adapter.
//!
//! Use it in tests, prototypes and demos. Appends are atomic across
//! streams, versions are contiguous, the global order is total, and
//! subscriptions see every append once and in order. Nothing is persisted.
//!
//! [`testing`] holds a given/when/then fixture for testing commands.
//!
//! ```
//! use eventcore::{AppendRequest, EventStore, ExpectedVersion, StreamId};
//! use eventcore_memory::InMemoryEventStore;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = InMemoryEventStore::new();
//! let account = StreamId::try_new("account-1")?;
//! let read = store.read_streams(&[account.clone()]).await?;
//! assert_eq!(read.version(&account).value(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod archive;
mod checkpoints;
mod leadership;
mod store;
pub mod testing;

pub use checkpoints::InMemoryCheckpointStore;
pub use leadership::{InMemoryLeadership, InMemoryLease};
pub use store::InMemoryEventStore;
