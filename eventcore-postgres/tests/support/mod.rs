//! Every test gets an initialized store in a schema of its own; without a
//! usable server the test fails saying what to install (see `eventcore_postgres::testing`).
#![allow(dead_code, clippy::panic, clippy::unwrap_used)]

use eventcore::{EventMetadata, EventType, NewEvent, StreamId};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing};

/// An initialized store in a fresh schema.
pub async fn fresh_store() -> PostgresEventStore {
    testing::fresh_store()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Settings for a store in a fresh schema, not yet initialized.
pub async fn fresh_config() -> PostgresConfig {
    testing::fresh_config()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A stream id from a literal.
pub fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

/// A `Marked` event carrying `payload`.
pub fn event(payload: serde_json::Value) -> NewEvent {
    NewEvent::from_parts(
        EventType::try_new("Marked").unwrap(),
        payload,
        EventMetadata::default(),
    )
    .unwrap()
}
