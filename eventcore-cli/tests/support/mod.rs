//! What the CLI tests share: a schema of their own, the built binary, a
//! command that writes events.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{convert::Infallible, process::Output};

use eventcore::{
    CommandExecutor, CommandLogic, Event, EventStore, ExecutionOptions, HandleContext, StoredEvent,
    StreamId, Writes,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing};
use serde::{Deserialize, Serialize};

/// A fresh schema on the test server, dropped by [`Schema::drop`].
pub struct Schema {
    pub url: String,
    pub name: String,
    pub store: PostgresEventStore,
}

impl Schema {
    /// A schema of its own, initialized unless `initialize` is false.
    pub async fn new(initialize: bool) -> Self {
        let url = testing::test_database_url().await.unwrap();
        let name = testing::fresh_schema_name();
        let config = PostgresConfig::new(url.clone()).schema(&name).unwrap();
        let store = PostgresEventStore::new(config).await.unwrap();
        if initialize {
            store.initialize().await.unwrap();
        }
        Self { url, name, store }
    }

    /// The `eventcore` binary, pointed at this schema.
    pub fn cli(&self) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::cargo_bin("eventcore").unwrap();
        command
            .env("DATABASE_URL", &self.url)
            .env("EVENTCORE_SCHEMA", &self.name)
            .env_remove("RUST_LOG");
        command
    }

    /// The same, as a tokio child process (for `tail`, and for killing).
    pub fn child(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("eventcore"));
        command
            .args(args)
            .env("DATABASE_URL", &self.url)
            .env("EVENTCORE_SCHEMA", &self.name)
            .kill_on_drop(true);
        command
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        // The name is one of our own test schema names.
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(self.store.pool())
            .await
            .unwrap();
    }
}

/// Runs the built binary's `args`; prints what it printed.
pub fn run(command: &mut assert_cmd::Command, args: &[&str]) -> Output {
    let output = command.args(args).output().unwrap();
    println!(
        "$ eventcore {}\nexit {:?}\n{}{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The events the tests write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TestEvent {
    /// A number in a stream.
    Ticked { n: u64 },
    /// A note.
    Noted { text: String },
}

impl Event for TestEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Ticked { .. } => "cli.Ticked",
            Self::Noted { .. } => "cli.Noted",
        }
    }
}

/// Writes `count` events on its stream: numbers going on from the stream's last.
#[derive(Debug, Clone, eventcore::Command)]
pub struct Tick {
    #[stream]
    pub counter: StreamId,
    pub count: u64,
}

impl CommandLogic for Tick {
    type State = u64;
    type Event = TestEvent;
    type Error = Infallible;

    fn apply(&self, state: &mut u64, event: &StoredEvent<TestEvent>) {
        if let TestEvent::Ticked { n } = event.payload {
            *state = n + 1;
        }
    }

    fn handle(
        &self,
        state: u64,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Infallible> {
        let mut writes = Writes::new();
        for n in state..state + self.count {
            writes = writes.emit(self.counter_stream(), TestEvent::Ticked { n });
        }
        Ok(writes)
    }
}

pub fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

/// Runs `Tick` `commands` times of `per_command` events each over
/// `streams` streams named `{prefix}-{i}`, from `tasks` tasks at once.
pub async fn tick<S: EventStore + Clone + 'static>(
    store: &S,
    prefix: &str,
    streams: u64,
    commands: u64,
    per_command: u64,
    tasks: u64,
) {
    let executor = CommandExecutor::new(store.clone());
    let mut handles = Vec::new();
    for task in 0..tasks {
        let executor = executor.clone();
        let prefix = prefix.to_owned();
        handles.push(tokio::spawn(async move {
            let mut i = task;
            while i < commands {
                let command = Tick {
                    counter: stream(&format!("{prefix}-{}", i % streams)),
                    count: per_command,
                };
                executor
                    .execute(&command, ExecutionOptions::default())
                    .await
                    .unwrap();
                i += tasks;
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}
