//! Writing commands: state, several streams, streams found while deciding,
//! business errors, idempotency keys, timeouts, typed ids.
//!
//! # State and decisions
//!
//! `State` starts from `Default`; `apply` folds each stored event of the
//! declared streams into it, in version order per stream and global order
//! across streams; `handle` looks at the state and returns the events to
//! write, each aimed at a stream through the accessor the derive generates
//! (`<field>_stream()`). `handle` is pure: it may run more than once (on a
//! conflict the command runs again on fresh state), so it must not have
//! side effects.
//!
//! With several streams, `apply` tells them apart by
//! [`StoredEvent::stream_id`](crate::StoredEvent::stream_id); the README's
//! transfer shows it.
//!
//! # Streams found while deciding
//!
//! A command may learn which stream it needs from what it read (the
//! account an order is billed to). [`HandleContext::discover`](crate::HandleContext::discover)
//! returns a write target for a stream already read, or `None` and asks
//! the executor to read it too: the executor reads it with the others,
//! folds everything again and calls `handle` once more. Its version is
//! checked at append time like every other.
//!
//! ```
//! use eventcore::{
//!     Command, CommandExecutor, CommandLogic, Event, ExecutionOptions, HandleContext,
//!     StoredEvent, StreamId, Writes,
//! };
//! use eventcore_memory::InMemoryEventStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize, Event)]
//! enum OrderEvent {
//!     Placed { billed_to: StreamId },
//!     Invoiced { order: StreamId },
//! }
//!
//! #[derive(Command)]
//! struct Invoice {
//!     #[stream]
//!     order: StreamId,
//! }
//!
//! impl CommandLogic for Invoice {
//!     type State = Option<StreamId>; // who the order is billed to
//!     type Event = OrderEvent;
//!     type Error = std::convert::Infallible;
//!
//!     fn apply(&self, billed_to: &mut Option<StreamId>, event: &StoredEvent<OrderEvent>) {
//!         if let OrderEvent::Placed { billed_to: account } = &event.payload {
//!             *billed_to = Some(account.clone());
//!         }
//!     }
//!
//!     fn handle(
//!         &self,
//!         billed_to: Option<StreamId>,
//!         ctx: &mut HandleContext<'_, Self>,
//!     ) -> Result<Writes<Self>, Self::Error> {
//!         let Some(account) = billed_to else { return Ok(Writes::new()) };
//!         let Some(account) = ctx.discover(&account) else {
//!             return Ok(Writes::new()); // read it, then come back
//!         };
//!         Ok(Writes::new().emit(account, OrderEvent::Invoiced { order: self.order.clone() }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use eventcore::{AppendRequest, EventMetadata, EventStore, ExpectedVersion, NewEvent};
//! let store = InMemoryEventStore::new();
//! let (order, account) = (StreamId::try_new("order-1")?, StreamId::try_new("account-9")?);
//! let placed = NewEvent::from_event(&OrderEvent::Placed { billed_to: account.clone() }, EventMetadata::default())?;
//! store.append(AppendRequest::single(order.clone(), ExpectedVersion::NoStream, vec![placed])).await?;
//! let result = CommandExecutor::new(store).execute(&Invoice { order }, ExecutionOptions::default()).await?;
//! assert_eq!(result.events[0].stream_id, account);
//! # Ok(())
//! # }
//! ```
//!
//! # Business errors
//!
//! `type Error` is the command's own refusal ("insufficient funds"); it
//! comes back as [`ExecutionError::Rejected`](crate::ExecutionError::Rejected),
//! printed as itself, and is never retried. Everything else
//! (conflicts on every attempt, a timeout, the store) is another variant of
//! [`ExecutionError`](crate::ExecutionError); `is_unknown_outcome()` says
//! when the command may have been written although the call failed.
//!
//! # Idempotency keys, timeouts, metadata
//!
//! [`ExecutionOptions`](crate::ExecutionOptions) carries what one call
//! needs: `with_idempotency_key` (a key the caller chose, say from an
//! HTTP `Idempotency-Key` header: a second execution with the same key
//! writes nothing and returns the first result; keys are tied to their
//! command and kept 24 hours by default), `with_timeout` (bounds the whole
//! execution, lock waits included), and `with_metadata` (correlation,
//! causation and user ids, stored with every event).
//!
//! ```
//! use std::time::Duration;
//! use eventcore::{ExecutionOptions, IdempotencyKey};
//!
//! let options = ExecutionOptions::default()
//!     .with_idempotency_key(IdempotencyKey::try_new("payment-8812")?)
//!     .with_timeout(Duration::from_secs(2));
//! # let _ = options;
//! # Ok::<(), eventcore::InvalidIdempotencyKey>(())
//! ```
//!
//! # Typed ids
//!
//! A `#[stream]` field may hold an application's own id type: implement
//! [`AsStreamId`](crate::AsStreamId) for it. Collections of such ids work
//! too (`Vec<AccountId>`, `Option<AccountId>`). A field that holds a
//! `StreamId` the command does not read is marked `#[stream(skip)]`.
//!
//! ```
//! use eventcore::{AsStreamId, Command, CommandStreams, StreamId};
//!
//! struct AccountId(StreamId);
//! impl AsStreamId for AccountId {
//!     fn as_stream_id(&self) -> &StreamId { &self.0 }
//! }
//!
//! #[derive(Command)]
//! struct Close {
//!     #[stream]
//!     account: AccountId,
//!     #[stream(skip)]
//!     requested_by: StreamId, // carried along, not read
//! }
//!
//! let id = |s: &str| StreamId::try_new(s).unwrap();
//! let close = Close { account: AccountId(id("account-3")), requested_by: id("user-1") };
//! assert_eq!(close.declared_streams(), vec![id("account-3")]);
//! # let _ = close.requested_by;
//! ```
//!
//! Next: [testing](super::testing).
