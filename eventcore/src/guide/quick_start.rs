//! Quick start: the dependencies, a first command in memory, then PostgreSQL.
//!
//! # Dependencies
//!
//! The crates are not on crates.io (the `eventcore*` names there belong to
//! another project): depend on them by path or git (see the README,
//! "Install"), with serde for events and tokio for the runtime. The
//! executor needs a tokio runtime with the time driver (`#[tokio::main]`
//! has it; a runtime built by hand needs `enable_time()`): timeouts and
//! retry pauses use it.
//!
//! ```toml
//! [dependencies]
//! eventcore = { path = "../eventcore/eventcore" }
//! eventcore-memory = { path = "../eventcore/eventcore-memory" }
//! eventcore-postgres = { path = "../eventcore/eventcore-postgres" }
//! serde = { version = "1", features = ["derive"] }
//! thiserror = "2"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "time"] }
//! ```
//!
//! # A first command, in memory
//!
//! An event type, a command that declares the stream it reads with
//! `#[stream]`, its fold (`apply`) and its decision (`handle`), and an
//! executor that runs it:
//!
//! ```
//! use eventcore::{
//!     Command, CommandExecutor, CommandLogic, Event, ExecutionOptions, HandleContext,
//!     StoredEvent, StreamId, Writes,
//! };
//! use eventcore_memory::InMemoryEventStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize, Event)]
//! enum TaskEvent {
//!     Added { title: String },
//!     Done,
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("the task is already done")]
//! struct AlreadyDone;
//!
//! #[derive(Command)]
//! struct Complete {
//!     #[stream]
//!     task: StreamId,
//! }
//!
//! impl CommandLogic for Complete {
//!     type State = bool; // done?
//!     type Event = TaskEvent;
//!     type Error = AlreadyDone;
//!
//!     fn apply(&self, done: &mut bool, event: &StoredEvent<TaskEvent>) {
//!         *done |= matches!(event.payload, TaskEvent::Done);
//!     }
//!
//!     fn handle(&self, done: bool, _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, AlreadyDone> {
//!         if done {
//!             return Err(AlreadyDone);
//!         }
//!         Ok(Writes::new().emit(self.task_stream(), TaskEvent::Done))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = CommandExecutor::new(InMemoryEventStore::new());
//! let task = StreamId::try_new("task-1")?;
//! let done = executor.execute(&Complete { task: task.clone() }, ExecutionOptions::default()).await?;
//! assert_eq!(done.events.len(), 1);
//! let again = executor.execute(&Complete { task }, ExecutionOptions::default()).await;
//! assert!(matches!(again, Err(eventcore::ExecutionError::Rejected(AlreadyDone))));
//! # Ok(())
//! # }
//! ```
//!
//! # The same on PostgreSQL
//!
//! Only the store changes. `initialize()` creates or upgrades the tables
//! (safe at every start, from every process):
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use eventcore::CommandExecutor;
//! use eventcore_postgres::{PostgresConfig, PostgresEventStore};
//!
//! let config = PostgresConfig::new("postgres://app@localhost/app").schema("tasks")?;
//! let store = PostgresEventStore::new(config).await?;
//! store.initialize().await?;
//! let executor = CommandExecutor::new(store);
//! # let _ = executor;
//! # Ok(())
//! # }
//! ```
//!
//! Next: [concepts](super::concepts).
