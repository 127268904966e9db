//! Coming from EventStoreDB or Axon: what maps to what.
//!
//! # EventStoreDB (KurrentDB)
//!
//! | EventStoreDB | EventCore |
//! |---|---|
//! | stream, event number | [`StreamId`](crate::StreamId), [`StreamVersion`](crate::StreamVersion) (from 1) |
//! | `expectedRevision` on append | [`ExpectedVersion`](crate::ExpectedVersion) per stream, for every stream a command read, in one atomic append across streams |
//! | `$all` with its positions | the global order, [`GlobalPosition`](crate::GlobalPosition), [`EventStore::read_all`](crate::EventStore::read_all) |
//! | catch-up subscription | [`EventStore::subscribe`](crate::EventStore::subscribe) |
//! | persistent subscription / competing consumers | a [`ProjectionRunner`](crate::ProjectionRunner) with leadership: one leader applies, the others stand by |
//! | server-side projections | [`Projection`](crate::Projection)s in your process, over the global order |
//! | reading a stream backwards | [`EventStore::read_stream`](crate::EventStore::read_stream) with `StreamQuery::last` |
//!
//! The main difference: an append is checked against every stream the
//! command read, not one, so an invariant spanning streams needs no
//! process manager and no compensation.
//!
//! # Axon
//!
//! | Axon | EventCore |
//! |---|---|
//! | aggregate, `@AggregateIdentifier` | none: a command declares the streams it reads with `#[stream]` fields; the consistency boundary is that set |
//! | `@CommandHandler` on an aggregate | [`CommandLogic::handle`](crate::CommandLogic::handle) on the command |
//! | `@EventSourcingHandler` | [`CommandLogic::apply`](crate::CommandLogic::apply) (the state is the command's own, rebuilt per execution, snapshotted when asked) |
//! | `AggregateLifecycle.apply(event)` | `Writes::new().emit(self.<field>_stream(), event)` |
//! | tracking event processor, token store | [`ProjectionRunner`](crate::ProjectionRunner) and its [`CheckpointStore`](crate::CheckpointStore) |
//! | upcasters | [`Upcasters`](crate::Upcasters), attached to the store |
//! | sagas | a projection that runs commands (with idempotency keys derived from the event id, so a replayed event runs its command once) |
//!
//! The main difference: no aggregate decides alone. A command that must
//! see two accounts reads both, and its append fails if either moved.
