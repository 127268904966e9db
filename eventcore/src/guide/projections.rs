//! Projections: read models from the global order.
//!
//! The full reference is the [`projection`](crate::projection) module; this
//! chapter is the path through it.
//!
//! - A [`Projection`](crate::Projection) folds events into a read model:
//!   `apply` for each event in global order, `reset` before a rebuild.
//! - A [`ProjectionRunner`](crate::ProjectionRunner) feeds it from a store,
//!   saves its [`Checkpoint`](crate::Checkpoint) every so many events or
//!   milliseconds, and resumes from it after a restart. Delivery is at least
//!   once: after a crash the events since the last checkpoint come again.
//! - **Exactly once** where the read model lives in the same database as
//!   the checkpoint: write the read model and the checkpoint in one
//!   transaction ([`Projection::save_checkpoint`](crate::Projection::save_checkpoint);
//!   `eventcore_examples::balances::PostgresBalances` does it on
//!   PostgreSQL). Otherwise make `apply` idempotent (remember the last
//!   version applied per stream).
//! - **One leader per projection name**, across processes:
//!   `with_leadership(store.leadership(poll))`. Leases are fenced: a
//!   runner that lost its lease cannot save a checkpoint, and a read model
//!   elsewhere can fence its own writes with the token it is given.
//! - **Errors**: an `ErrorPolicy` says what an event the projection
//!   refuses (or cannot read) does: stop, skip, or retry a bounded number
//!   of times. `last_error` always says what happened.
//! - **Steering**: pause, resume and rebuild are requested through the
//!   checkpoint store from any process ([`CheckpointStore::request`](crate::CheckpointStore::request),
//!   `eventcore projection pause NAME`); the running leader carries them out.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{collections::BTreeMap, convert::Infallible};
//! use eventcore::{Projection, ProjectionRunner, RecordedEvent, StreamId};
//! use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
//!
//! /// Events per stream: a read model kept in memory.
//! #[derive(Default)]
//! struct PerStream(BTreeMap<StreamId, u64>);
//!
//! impl Projection for PerStream {
//!     type Error = Infallible;
//!     fn name(&self) -> &str { "per-stream" }
//!     async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Infallible> {
//!         *self.0.entry(event.stream_id.clone()).or_default() += 1;
//!         Ok(())
//!     }
//!     async fn reset(&mut self) -> Result<(), Infallible> {
//!         self.0.clear();
//!         Ok(())
//!     }
//! }
//!
//! let store = InMemoryEventStore::new();
//! let runner = ProjectionRunner::new(store, PerStream::default(), InMemoryCheckpointStore::new());
//! let handle = runner.start();
//! let model = handle.stop().await?;
//! assert!(model.0.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! Next: [production](super::production).
