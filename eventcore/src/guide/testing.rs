//! Testing: commands with given/when/then; a store adapter with the
//! conformance suites.
//!
//! # Commands
//!
//! `eventcore_memory::testing::given` sets up streams with events, runs a
//! command on a fresh in-memory store and checks what it wrote or how it
//! refused, without a database:
//!
//! ```
//! use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes};
//! use eventcore_memory::testing::given;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
//! enum Seat { Reserved, Released }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! #[error("the seat is taken")]
//! struct Taken;
//!
//! #[derive(Command)]
//! struct Reserve { #[stream] seat: StreamId }
//!
//! impl CommandLogic for Reserve {
//!     type State = bool; // taken?
//!     type Event = Seat;
//!     type Error = Taken;
//!     fn apply(&self, taken: &mut bool, event: &StoredEvent<Seat>) {
//!         *taken = event.payload == Seat::Reserved;
//!     }
//!     fn handle(&self, taken: bool, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Taken> {
//!         if taken { return Err(Taken); }
//!         Ok(Writes::new().emit(self.seat_stream(), Seat::Reserved))
//!     }
//! }
//!
//! let seat = StreamId::try_new("seat-14C")?;
//! given([(seat.clone(), vec![Seat::Reserved, Seat::Released])])
//!     .when(&Reserve { seat: seat.clone() })
//!     .then_expect_events([(seat.clone(), Seat::Reserved)]);
//! given([(seat.clone(), vec![Seat::Reserved])])
//!     .when(&Reserve { seat })
//!     .then_expect_error(Taken);
//! # Ok::<(), eventcore::InvalidStreamId>(())
//! ```
//!
//! Events stored in older shapes are given with `Given::and_stored`, read
//! through the store's upcasters (`Given::with_upcasters`).
//!
//! # A store adapter
//!
//! With the `conformance` feature, `eventcore::conformance_tests!` turns
//! the store suite into one `#[test]` per case, each on a fresh store
//! from your factory; `evolution_conformance_tests!`,
//! `archive_conformance_tests!` and `projection_conformance_tests!` do the
//! same for upcasting, export and import, and projections. Both EventCore
//! stores pass all of them; see the README, "Testing your own adapter".
//!
//! Next: [projections](super::projections).
