//! A guide to evolving events: the change, the upcaster that reads old
//! events in the new shape, and when a new event type is the better answer.
//!
//! Stored events never change. When the code's idea of an event changes,
//! raise the event's [`schema_version`](crate::Event::schema_version) and
//! register, on the store, an upcaster from the old version: every reader
//! (commands, projections, subscriptions, tools) then sees the new shape,
//! and the store refuses to write the old one. Test the upcaster with
//! events written as the old code wrote them (`NewEvent::from_parts` with
//! [`with_schema_version`](crate::NewEvent::with_schema_version), through a
//! store without upcasters, or `Given::and_stored` in
//! `eventcore_memory::testing`).
//!
//! The examples use a struct event; for a serde enum (externally tagged, the
//! default) the fields sit one level down, under the variant's name:
//! `v["Deposited"]["reference"]`.
//!
//! # Add a field with a default
//!
//! The most common change. Version 2 of `Deposited` has a `reference`; old
//! deposits have none.
//!
//! ```
//! use eventcore::{Event, Upcasters};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Deposited {
//!     cents: u64,
//!     reference: Option<String>,
//! }
//!
//! impl Event for Deposited {
//!     fn event_type(&self) -> &'static str { "Deposited" }
//!     fn schema_version(&self) -> u32 { 2 }
//! }
//!
//! let upcasters = Upcasters::builder()
//!     .step("Deposited", 1, |mut v| {
//!         v["reference"] = serde_json::Value::Null;
//!         Ok(v)
//!     })
//!     .build()?;
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```
//!
//! serde would read a missing `Option` as `None` by itself; the upcaster
//! still says which shape each stored event has, so that a missing field
//! that is not optional, or a default that is not "nothing" (a currency
//! that was always EUR), is written down once, in the upcaster.
//!
//! # Rename a field
//!
//! Version 3 calls `cents` `amount`. A typed step reads better when the
//! shapes are worth naming.
//!
//! ```
//! use eventcore::Upcasters;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct DepositedV2 { cents: u64, reference: Option<String> }
//! #[derive(Serialize)]
//! struct DepositedV3 { amount: u64, reference: Option<String> }
//!
//! let upcasters = Upcasters::builder()
//!     .step("Deposited", 1, |mut v| {
//!         v["reference"] = serde_json::Value::Null;
//!         Ok(v)
//!     })
//!     .typed_step("Deposited", 2, |old: DepositedV2| DepositedV3 {
//!         amount: old.cents,
//!         reference: old.reference,
//!     })
//!     .build()?;
//! // A version 1 deposit runs both steps, in order.
//! assert_eq!(upcasters.current_version("Deposited"), Some(3));
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```
//!
//! A serde `#[serde(alias = "cents")]` would read both names too, but only
//! in the one Rust type that has it; the upcaster makes every reader agree.
//!
//! # Rename a type
//!
//! Stored `AccountCredited` events are read as `Deposited`, at the version
//! they were stored with; upcasters of the old name run first, those of the
//! new name after. A type filter for `Deposited` finds them too.
//!
//! ```
//! use eventcore::Upcasters;
//!
//! let upcasters = Upcasters::builder()
//!     .rename("AccountCredited", "Deposited")
//!     .build()?;
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```
//!
//! For an enum event, whose variant name is in the payload, retag it on the
//! way with [`rename_with`](super::UpcastersBuilder::rename_with):
//!
//! ```
//! use eventcore::Upcasters;
//! use serde_json::{Value, json};
//!
//! let upcasters = Upcasters::builder()
//!     .rename_with("AccountCredited", "Deposited", |v: Value| match v {
//!         Value::Object(mut tagged) => {
//!             let fields = tagged.remove("AccountCredited").ok_or("not an AccountCredited")?;
//!             Ok(json!({ "Deposited": fields }))
//!         }
//!         _ => Err("an AccountCredited event is an object".into()),
//!     })
//!     .build()?;
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```
//!
//! # Split an event
//!
//! One stored `PaymentReceived { method, cents }` turns out to be two
//! facts: `CardPaid` and `CashPaid`. A split chooses, per stored event, the
//! type it is read as. (An upcaster reads one stored event as one event:
//! a stored event that should have been *two* events stays one; give the
//! new shape both facts, or write the second event from now on.)
//!
//! ```
//! use eventcore::Upcasters;
//!
//! let upcasters = Upcasters::builder()
//!     .split("PaymentReceived", &["CardPaid", "CashPaid"], |mut v| {
//!         let method = v["method"].take();
//!         match method.as_str() {
//!             Some("card") => Ok(("CardPaid", v)),
//!             Some("cash") => Ok(("CashPaid", v)),
//!             _ => Err(format!("a payment by {method} is neither card nor cash").into()),
//!         }
//!     })
//!     .build()?;
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```
//!
//! # Remove an event type
//!
//! A stored event cannot be removed, and a fold that meets a type it cannot
//! decode fails. Keep reading it: either keep its variant and ignore it in
//! `apply`, or read every retired type as one `Retired` variant the code
//! never writes:
//!
//! ```
//! use eventcore::Upcasters;
//! use serde_json::json;
//!
//! let upcasters = Upcasters::builder()
//!     .rename_with("CouponApplied", "Retired", |_| {
//!         Ok(json!({ "Retired": {} }))
//!     })
//!     .build()?;
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```
//!
//! Writing `CouponApplied` is then refused, and projections that filter on
//! the types they want never see it.
//!
//! # When to add a new event type instead
//!
//! An upcaster is for the same fact told in a new shape. When the fact
//! itself changed (a "deposit" now means something a v1 deposit did not),
//! when old events cannot be given the new field honestly (no default is
//! true for them), or when readers must tell old from new, add a new event
//! type and keep handling the old one: its history stays what it was. Keep
//! upcasters pure and cheap: they run on every read of every old event,
//! with no access to the store or the clock.
//!
//! # Schema versions and snapshot versions
//!
//! The two are independent. An event's schema version is the shape of its
//! payload; a [`SnapshotPolicy`](crate::SnapshotPolicy)'s `state_version`
//! is the shape of one command's folded state. Snapshots hold state folded
//! from events already upcast, so adding an upcaster never invalidates one;
//! changing what `apply` does with events does: raise `state_version`.
