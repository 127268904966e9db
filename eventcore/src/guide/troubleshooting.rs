//! Troubleshooting: the errors users meet, what they mean, what to do.
//!
//! Print errors with their causes (anyhow's `{:#}`, or
//! [`error_chain`](crate::error_chain)): each names its own step, and the
//! cause below it says why.
//!
//! # Version conflicts
//!
//! `ExecutionError::RetriesExhausted { conflicting_streams, .. }`: another
//! writer changed one of the command's streams on every attempt. A few
//! conflicts are normal and retried; exhaustion means a hot stream. Split
//! the stream if the rule allows, raise the retry policy's attempts, or let
//! one process own the hot stream (commands of one executor on the same
//! streams already take turns instead of conflicting).
//!
//! # Pool timeouts and an unreachable server
//!
//! `StoreError::Unavailable`, "could not connect to PostgreSQL at
//! host:port: connection refused": the server is down or elsewhere. "...
//! accepts connections, but none became free within the acquire timeout":
//! every pooled connection is busy (raise `max_connections`, or look for
//! slow statements) or the server refuses new sessions (its own
//! `max_connections`). Reads and commands retry what could not have written
//! anything, within the execution's retry policy and timeout.
//!
//! # The schema
//!
//! "EventCore's tables are missing or out of date in this schema: call
//! initialize()": the store points at a schema that was never initialized,
//! or initialized by an older release. `initialize()` (or `eventcore init`)
//! creates and upgrades it; concurrent initializers take turns on an
//! advisory lock, so one that seems to hang waits for another process's
//! migration (look for `pg_advisory_xact_lock` in `pg_stat_activity`).
//! `eventcore migrate --dry-run` lists what it would apply.
//!
//! # An unknown outcome
//!
//! `is_unknown_outcome()` is true: the connection was lost while a commit
//! was in flight, so the command may or may not be written. With an
//! idempotency key, execute it again with the same key (it is applied at
//! most once); without one, read the streams before deciding to retry.
//!
//! # Events that cannot be read
//!
//! `StoreError::Undecodable { position, .. }`: a stored row is not EventCore
//! data (someone inserted it by hand). Readers get every good event before
//! it, then this error; repair the row, or skip it (`ErrorPolicy::Skip`,
//! `Subscription::skip_past`). A `DecodeError` or `StoreError::Upcast` names
//! an event that does not fit the current type or has no upcaster path:
//! register an upcaster for its stored schema version (see
//! [the upcasting guide](crate::upcast::guide)). `StoreError::Outdated`: this
//! code writes an event in a shape the upcasters treat as old (a deploy of
//! old code against new data).
//!
//! # Compile errors
//!
//! - "field `x` holds a StreamId but is not marked": add `#[stream]` if the
//!   command reads that stream, `#[stream(skip)]` if not.
//! - "`X` is not a stream id": implement [`AsStreamId`](crate::AsStreamId)
//!   for your id type, or mark the field `#[stream(skip)]`.
//! - "`StreamId` is not a stream this command declared": write through a
//!   `<field>_stream()` accessor, or discover the stream with
//!   `ctx.discover(&id)`.
//!
//! # Projections that do not move
//!
//! `eventcore status`: a projection `paused` waits for `eventcore projection
//! resume`; `failed` shows its `last_error`; a lag that does not fall with
//! "held back" events means an open transaction somewhere holds delivery
//! (see [production](super::production), "Long transactions"); `standby`
//! everywhere means no runner holds the lease (the store is unreachable
//! from the runners, or none runs).
//!
//! Next: [coming from EventStoreDB or Axon](super::coming_from).
