//! Concepts: streams, versions, the global order, multi-stream consistency.
//!
//! - A **stream** ([`StreamId`](crate::StreamId)) is an ordered,
//!   append-only list of events about one thing: an account, an order, a
//!   seat. Streams are cheap; make many small ones.
//! - A stream's **version** ([`StreamVersion`](crate::StreamVersion)) is
//!   how many events it holds. An append names the version it expects
//!   ([`ExpectedVersion`](crate::ExpectedVersion)); if the stream moved
//!   meanwhile, nothing is written and the append is a conflict.
//! - The **global order** ([`GlobalPosition`](crate::GlobalPosition)) is
//!   one order over every event of the store, the one projections and
//!   subscriptions follow. It is gap-safe: a reader that passed a position
//!   never later finds an event committed before it.
//! - An **event** is a serde type with a stable type name and a schema
//!   version ([`Event`](trait@crate::Event), `#[derive(Event)]`). Stored
//!   events never change; older shapes are read in the current one through
//!   [`Upcasters`](crate::Upcasters) ([guide](crate::upcast::guide)).
//!
//! # The consistency boundary is what a command reads
//!
//! There are no aggregate classes. A command declares the streams it reads
//! (`#[stream]` fields); the executor reads them all in one call, folds
//! their events into the command's state, lets it decide, and appends the
//! new events to any of those streams in one atomic write that checks
//! **every** stream's version, written to or not. So a transfer reads both
//! accounts and writes both, and a rule over three streams ("no booking
//! while the room is blocked") is kept by a command that reads all three.
//! If any of them moved, the command is run again on the new state
//! (conflicts are retried with backoff and jitter).
//!
//! ```
//! use eventcore::{Command, CommandStreams, StreamId};
//!
//! #[derive(Command)]
//! struct Book {
//!     #[stream]
//!     room: StreamId,
//!     #[stream]
//!     guest: StreamId,
//!     #[stream]
//!     blocks: StreamId, // read only: checked at append time, never written
//!     nights: u32,
//! }
//!
//! let id = |s: &str| StreamId::try_new(s).unwrap();
//! let book = Book { room: id("room-12"), guest: id("guest-7"), blocks: id("blocks-2026-12"), nights: 2 };
//! assert_eq!(book.declared_streams().len(), 3);
//! ```
//!
//! Choose streams so that each rule's data sits in the streams one command
//! reads: small enough that commands on unrelated things rarely meet, and
//! whole enough that a decision never needs a stream it did not read.
//!
//! Next: [writing commands](super::commands).
