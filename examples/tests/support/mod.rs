//! Helpers shared by the examples' PostgreSQL tests.
#![allow(dead_code, clippy::unwrap_used)]

use eventcore::{EventStore, ReadAllQuery, RecordedEvent};

/// Every event in the store's global order, page by page.
pub async fn everything(store: &impl EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut query = ReadAllQuery::from_start();
    loop {
        let page = store.read_all(&query).await.unwrap();
        let Some(last) = page.last() else {
            return all;
        };
        query.after = last.position;
        all.extend(page);
    }
}
