//! Every error names each cause once: an error prints its own message and
//! returns what caused it as its source, never both (the Rust API
//! guidelines), so a chain printer (anyhow's `{:#}`, `eventcore::error_chain`)
//! shows no message twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::error::Error;

use eventcore::{ExecutionError, GlobalPosition, ProjectionError, StoreError, error_chain};
use eventcore_postgres::{InitializeError, PostgresConfig, PostgresEventStore};

/// Each message of the chain from `error` down.
fn chain(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut messages = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(next) = cause {
        messages.push(next.to_string());
        cause = next.source();
    }
    messages
}

/// Asserts that none of the first `ours` messages of the chain (EventCore's
/// own; sqlx's errors below them are not ours to change) repeats a message
/// below it; prints the chain.
fn assert_each_cause_once(what: &str, error: &(dyn Error + 'static), ours: usize) {
    let messages = chain(error);
    println!("{what}:\n  {}", messages.join("\n  caused by: "));
    for (i, above) in messages.iter().enumerate().take(ours) {
        for below in &messages[i + 1..] {
            assert!(
                !above.contains(below.as_str()),
                "{what}: {above:?} repeats its cause {below:?}"
            );
        }
    }
    assert!(messages.len() >= 2, "{what} keeps its cause as a source");
}

/// A business error with a cause of its own.
#[derive(Debug, thiserror::Error)]
#[error("account frozen")]
struct Frozen(#[source] std::io::Error);

fn unavailable() -> StoreError {
    StoreError::Unavailable {
        reason: "connection refused at 127.0.0.1:1: is PostgreSQL running there?".into(),
        source: Some(Box::new(std::io::Error::other("os error 111"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_names_each_cause_once() {
    // Connecting: an invalid URL, and a server that is not there.
    let invalid = PostgresEventStore::new(PostgresConfig::new("postgres://db:notaport/x"))
        .await
        .unwrap_err();
    assert_each_cause_once("ConnectError (invalid URL)", &invalid, 1);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = PostgresConfig::new(format!("postgres://app@127.0.0.1:{port}/db"))
        .acquire_timeout(std::time::Duration::from_millis(500));
    let down = PostgresEventStore::new(config).await.unwrap_err();
    assert_each_cause_once("ConnectError (nothing listening)", &down, 1);

    // Initializing.
    let database = InitializeError::Database {
        schema: "bank".into(),
        source: sqlx::Error::PoolTimedOut,
    };
    assert_each_cause_once("InitializeError::Database", &database, 1);
    let migration = InitializeError::Migration {
        schema: "bank".into(),
        version: 3,
        source: sqlx::Error::Protocol("unexpected message".into()),
    };
    assert_each_cause_once("InitializeError::Migration", &migration, 1);

    // Executing.
    let rejected: ExecutionError<Frozen> =
        ExecutionError::Rejected(Frozen(std::io::Error::other("frozen by the bank")));
    assert_each_cause_once("ExecutionError::Rejected", &rejected, 1);
    assert_eq!(
        rejected.to_string(),
        "account frozen",
        "a refusal prints as itself"
    );
    let store: ExecutionError<Frozen> = ExecutionError::Store {
        command: "Transfer",
        source: unavailable(),
        outcome_unknown: false,
    };
    assert_each_cause_once("ExecutionError::Store", &store, 2);
    let exhausted: ExecutionError<Frozen> = ExecutionError::RetriesExhausted {
        command: "Transfer",
        attempts: 4,
        conflicting_streams: Vec::new(),
        last_error: unavailable(),
        outcome_unknown: false,
    };
    assert_each_cause_once("ExecutionError::RetriesExhausted", &exhausted, 2);

    // Projecting.
    let apply = ProjectionError::Apply {
        name: "balances".into(),
        position: GlobalPosition::new(7, 42),
        source: Box::new(Frozen(std::io::Error::other("read model offline"))),
    };
    assert_each_cause_once("ProjectionError::Apply", &apply, 2);
    let unreadable = ProjectionError::Unreadable {
        name: "balances".into(),
        position: GlobalPosition::new(7, 42),
        source: StoreError::Undecodable {
            position: GlobalPosition::new(7, 43),
            reason: "metadata of event x: invalid type".into(),
        },
    };
    assert_each_cause_once("ProjectionError::Unreadable", &unreadable, 2);

    // The one-line form keeps every cause.
    let line = error_chain(&store);
    assert!(
        line.starts_with("Transfer: the event store failed: "),
        "{line}"
    );
    assert!(line.ends_with("os error 111"), "{line}");
}
