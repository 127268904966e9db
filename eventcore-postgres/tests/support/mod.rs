//! Every test gets an initialized store in a schema of its own; without a
//! usable server the test fails saying what to install (see `eventcore_postgres::testing`).
#![allow(dead_code, clippy::panic)]

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
