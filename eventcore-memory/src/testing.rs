//! Given/when/then tests for commands, on a fresh in-memory store.
//!
//! ```
//! use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes};
//! use eventcore_memory::testing::given;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum Light { On, Off }
//! impl Event for Light {
//!     fn event_type(&self) -> &'static str { "Light" }
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! #[error("already on")]
//! struct AlreadyOn;
//!
//! #[derive(Command)]
//! struct SwitchOn { #[stream] lamp: StreamId }
//!
//! impl CommandLogic for SwitchOn {
//!     type State = bool;
//!     type Event = Light;
//!     type Error = AlreadyOn;
//!     fn apply(&self, on: &mut bool, event: &StoredEvent<Light>) {
//!         *on = event.payload == Light::On;
//!     }
//!     fn handle(&self, on: bool, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, AlreadyOn> {
//!         if on { return Err(AlreadyOn); }
//!         Ok(Writes::new().emit(self.lamp_stream(), Light::On))
//!     }
//! }
//!
//! let lamp = StreamId::try_new("lamp-1")?;
//! given([(lamp.clone(), vec![Light::Off])])
//!     .when(&SwitchOn { lamp: lamp.clone() })
//!     .then_expect_events([(lamp.clone(), Light::On)]);
//! given([(lamp.clone(), vec![Light::On])])
//!     .when(&SwitchOn { lamp })
//!     .then_expect_error(AlreadyOn);
//! # Ok::<(), eventcore::InvalidStreamId>(())
//! ```
// A test fixture reports failure by panicking, like `assert!`.
#![allow(clippy::panic, clippy::expect_used)]

use std::fmt::Debug;

use eventcore::{
    AppendRequest, CommandExecutor, CommandLogic, Event, EventMetadata, EventStore, ExecutionError,
    ExecutionOptions, ExecutionResult, ExpectedVersion, NewEvent, StreamId, Upcasters,
};

use crate::InMemoryEventStore;

/// Starts a scenario: these streams already hold these events, in this order.
///
/// ```
/// # use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # enum Light { On, Off }
/// # impl Event for Light { fn event_type(&self) -> &'static str { "Light" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("already on")]
/// # struct AlreadyOn;
/// # #[derive(Command)]
/// # struct SwitchOn { #[stream] lamp: StreamId }
/// # impl CommandLogic for SwitchOn {
/// #     type State = bool;
/// #     type Event = Light;
/// #     type Error = AlreadyOn;
/// #     fn apply(&self, on: &mut bool, event: &StoredEvent<Light>) { *on = event.payload == Light::On; }
/// #     fn handle(&self, on: bool, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, AlreadyOn> {
/// #         if on { return Err(AlreadyOn); }
/// #         Ok(Writes::new().emit(self.lamp_stream(), Light::On))
/// #     }
/// # }
/// use eventcore_memory::testing::given;
///
/// let lamp = StreamId::try_new("lamp-1")?;
/// // No history: the stream starts empty.
/// given::<Light>([])
///     .when(&SwitchOn { lamp: lamp.clone() })
///     .then_expect_events([(lamp, Light::On)]);
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
pub fn given<E: Event>(history: impl IntoIterator<Item = (StreamId, Vec<E>)>) -> Given<E> {
    Given {
        history: history
            .into_iter()
            .map(|(stream, events)| (stream, History::Typed(events)))
            .collect(),
        options: ExecutionOptions::default(),
        upcasters: Upcasters::none(),
    }
}

/// A scenario's starting point; see [`given`].
///
/// ```
/// # use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # enum Light { On, Off }
/// # impl Event for Light { fn event_type(&self) -> &'static str { "Light" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("already on")]
/// # struct AlreadyOn;
/// # #[derive(Command)]
/// # struct SwitchOn { #[stream] lamp: StreamId }
/// # impl CommandLogic for SwitchOn {
/// #     type State = bool;
/// #     type Event = Light;
/// #     type Error = AlreadyOn;
/// #     fn apply(&self, on: &mut bool, event: &StoredEvent<Light>) { *on = event.payload == Light::On; }
/// #     fn handle(&self, on: bool, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, AlreadyOn> {
/// #         if on { return Err(AlreadyOn); }
/// #         Ok(Writes::new().emit(self.lamp_stream(), Light::On))
/// #     }
/// # }
/// use std::time::Duration;
/// use eventcore::{ExecutionOptions, RetryPolicy};
/// use eventcore_memory::testing::given;
///
/// let lamp = StreamId::try_new("lamp-1")?;
/// given([(lamp.clone(), vec![Light::On, Light::Off])])
///     .with_options(ExecutionOptions::default().with_retry_policy(RetryPolicy::no_retries()))
///     .when(&SwitchOn { lamp: lamp.clone() })
///     .then_expect_events([(lamp, Light::On)]);
/// # let _ = Duration::ZERO;
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[derive(Debug)]
pub struct Given<E> {
    history: Vec<(StreamId, History<E>)>,
    options: ExecutionOptions,
    upcasters: Upcasters,
}

/// Events of a scenario's history: current ones, or as older code stored them.
#[derive(Debug)]
enum History<E> {
    Typed(Vec<E>),
    Stored(Vec<NewEvent>),
}

impl<E: Event> Given<E> {
    /// Uses these options (metadata, retry policy, ...) for the command.
    #[must_use]
    pub fn with_options(mut self, options: ExecutionOptions) -> Self {
        self.options = options;
        self
    }

    /// Reads the history through `upcasters`, as the application's store
    /// does (see [`eventcore::upcast`]): events stored in old shapes reach
    /// the command in their current one.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Adds events to the history exactly as older code stored them (type
    /// name, schema version and JSON), after the events given so far.
    ///
    /// ```
    /// use eventcore::{EventMetadata, EventType, NewEvent, StreamId, Upcasters};
    /// # use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, Writes};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// # struct Deposited { cents: u64, reference: Option<String> }
    /// # impl Event for Deposited {
    /// #     fn event_type(&self) -> &'static str { "Deposited" }
    /// #     fn schema_version(&self) -> u32 { 2 }
    /// # }
    /// # #[derive(Command)]
    /// # struct Deposit { #[stream] account: StreamId, cents: u64 }
    /// # impl CommandLogic for Deposit {
    /// #     type State = u64;
    /// #     type Event = Deposited;
    /// #     type Error = std::convert::Infallible;
    /// #     fn apply(&self, total: &mut u64, e: &StoredEvent<Deposited>) { *total += e.payload.cents; }
    /// #     fn handle(&self, total: u64, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Self::Error> {
    /// #         Ok(Writes::new().emit(self.account_stream(), Deposited { cents: total + self.cents, reference: None }))
    /// #     }
    /// # }
    /// use eventcore_memory::testing::given;
    ///
    /// let upcasters = Upcasters::builder()
    ///     .step("Deposited", 1, |mut v| {
    ///         v["reference"] = serde_json::Value::Null;
    ///         Ok(v)
    ///     })
    ///     .build()?;
    /// let account = StreamId::try_new("account-1")?;
    /// let v1 = NewEvent::from_parts(
    ///     EventType::try_new("Deposited")?,
    ///     serde_json::json!({ "cents": 5 }),
    ///     EventMetadata::default(),
    /// )?;
    /// given::<Deposited>([])
    ///     .and_stored(account.clone(), vec![v1])
    ///     .with_upcasters(upcasters)
    ///     .when(&Deposit { account: account.clone(), cents: 1 })
    ///     .then_expect_events([(account, Deposited { cents: 6, reference: None })]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn and_stored(mut self, stream_id: StreamId, events: Vec<NewEvent>) -> Self {
        self.history.push((stream_id, History::Stored(events)));
        self
    }

    /// Executes `command` against the history, on a runtime of its own.
    ///
    /// For plain `#[test]` functions; inside an async test, use
    /// [`when_async`](Self::when_async) instead (a runtime cannot block inside another).
    pub fn when<C: CommandLogic<Event = E>>(self, command: &C) -> Then<C> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime for the scenario");
        runtime.block_on(self.when_async(command))
    }

    /// Executes `command` against the history, on the caller's runtime.
    pub async fn when_async<C: CommandLogic<Event = E>>(self, command: &C) -> Then<C> {
        let store = InMemoryEventStore::new().with_upcasters(self.upcasters);
        // Written as it was stored, whatever the upcasters say of its shape.
        let writer = store.without_upcasters();
        for (stream_id, events) in self.history {
            let events = match events {
                History::Typed(events) => events
                    .iter()
                    .map(|e| NewEvent::from_event(e, EventMetadata::default()))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("the given events serialize"),
                History::Stored(events) => events,
            };
            writer
                .append(AppendRequest::single(
                    stream_id,
                    ExpectedVersion::Any,
                    events,
                ))
                .await
                .expect("the given events are stored");
        }
        let result = CommandExecutor::new(store.clone())
            .execute(command, self.options)
            .await;
        let written = match &result {
            Ok(done) => {
                let ids: Vec<_> = done.events.iter().map(|e| e.id).collect();
                let streams: Vec<StreamId> = done.versions.keys().cloned().collect();
                let read = store
                    .read_streams(&streams)
                    .await
                    .expect("the memory store reads");
                read.events
                    .into_iter()
                    .filter(|e| ids.contains(&e.id))
                    .map(|e| {
                        let payload = e.decode::<E>().expect("the written events decode").payload;
                        (e.stream_id, payload)
                    })
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        Then {
            result,
            written,
            store,
        }
    }
}

/// The outcome of a scenario, to check with `then_*`.
///
/// ```
/// # use eventcore::{Command, CommandLogic, Event, HandleContext, StoredEvent, StreamId, Writes};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// # enum Light { On, Off }
/// # impl Event for Light { fn event_type(&self) -> &'static str { "Light" } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("already on")]
/// # struct AlreadyOn;
/// # #[derive(Command)]
/// # struct SwitchOn { #[stream] lamp: StreamId }
/// # impl CommandLogic for SwitchOn {
/// #     type State = bool;
/// #     type Event = Light;
/// #     type Error = AlreadyOn;
/// #     fn apply(&self, on: &mut bool, event: &StoredEvent<Light>) { *on = event.payload == Light::On; }
/// #     fn handle(&self, on: bool, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, AlreadyOn> {
/// #         if on { return Err(AlreadyOn); }
/// #         Ok(Writes::new().emit(self.lamp_stream(), Light::On))
/// #     }
/// # }
/// use eventcore::{EventStore, ExecutionError};
/// use eventcore_memory::testing::given;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lamp = StreamId::try_new("lamp-1")?;
/// // Inside an async test, `when_async` runs on the test's runtime.
/// let then = given([(lamp.clone(), vec![Light::On])])
///     .when_async(&SwitchOn { lamp: lamp.clone() })
///     .await
///     .then_expect_failure(|e| matches!(e, ExecutionError::Rejected(AlreadyOn)));
/// // What the `then_*` checks do not cover: the result and the store itself.
/// assert!(then.result().is_err());
/// let read = then.store().read_streams(std::slice::from_ref(&lamp)).await?;
/// assert_eq!(read.version(&lamp).value(), 1); // the history only
/// # Ok(())
/// # }
/// ```
pub struct Then<C: CommandLogic> {
    result: Result<ExecutionResult, ExecutionError<C::Error>>,
    written: Vec<(StreamId, C::Event)>,
    store: InMemoryEventStore,
}

impl<C: CommandLogic> Then<C>
where
    C::Event: PartialEq + Debug,
    C::Error: Debug,
{
    /// Asserts the command succeeded and wrote exactly these events, in this order.
    pub fn then_expect_events(
        self,
        expected: impl IntoIterator<Item = (StreamId, C::Event)>,
    ) -> Self {
        let expected: Vec<(StreamId, C::Event)> = expected.into_iter().collect();
        if let Err(error) = &self.result {
            panic!("expected the command to write {expected:?}, but it failed: {error}");
        }
        assert_eq!(self.written, expected, "events written by the command");
        self
    }

    /// Asserts the command succeeded without writing anything.
    pub fn then_expect_no_events(self) -> Self {
        self.then_expect_events([])
    }

    /// Asserts `handle` refused the command with exactly this business error.
    pub fn then_expect_error(self, expected: C::Error) -> Self
    where
        C::Error: PartialEq,
    {
        match &self.result {
            Err(ExecutionError::Rejected(error)) if *error == expected => self,
            Err(other) => {
                panic!("expected the command to be refused with {expected:?}, got {other:?}")
            }
            Ok(done) => panic!(
                "expected the command to be refused with {expected:?}, but it wrote {} events: {:?}",
                done.events.len(),
                self.written
            ),
        }
    }

    /// Asserts the execution failed with an error matching `predicate` (any kind of failure).
    pub fn then_expect_failure(
        self,
        predicate: impl FnOnce(&ExecutionError<C::Error>) -> bool,
    ) -> Self {
        match &self.result {
            Err(error) if predicate(error) => self,
            Err(error) => panic!("the command failed, but not as expected: {error:?}"),
            Ok(_) => panic!(
                "expected the command to fail, but it wrote {:?}",
                self.written
            ),
        }
    }

    /// The execution's result, for checks the `then_*` methods do not cover.
    pub fn result(&self) -> &Result<ExecutionResult, ExecutionError<C::Error>> {
        &self.result
    }

    /// The store the scenario ran on, holding the history and what the command wrote.
    pub fn store(&self) -> &InMemoryEventStore {
        &self.store
    }
}
