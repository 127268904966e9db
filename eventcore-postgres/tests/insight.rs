//! The operator's queries: totals, events per day, the most active
//! streams, events per type (the watermark is tested where a transaction
//! is held open on purpose, in `projection_faults.rs`).

mod support;

use eventcore::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamVersion,
};
use eventcore_postgres::DEFAULT_RECENT_EVENTS;
use serde_json::json;
use support::stream;

fn typed(event_type: &str) -> NewEvent {
    NewEvent::from_parts(
        EventType::try_new(event_type).unwrap(),
        json!({}),
        EventMetadata::default(),
    )
    .unwrap()
}

/// Appends `n` events of `event_type` to `name`, one append each.
async fn append(store: &impl EventStore, name: &str, event_type: &str, n: usize) {
    for _ in 0..n {
        store
            .append(AppendRequest::single(
                stream(name),
                ExpectedVersion::Any,
                vec![typed(event_type)],
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_operators_queries_count_what_was_written() {
    let store = support::fresh_store().await;
    let empty = store.totals().await.unwrap();
    assert_eq!((empty.events.value, empty.streams.value), (0, 0));
    assert!(empty.events.exact && empty.streams.exact);

    append(&store, "orders-1", "OrderPlaced", 5).await;
    append(&store, "orders-2", "OrderPlaced", 2).await;
    append(&store, "payments-1", "PaymentReceived", 3).await;
    // A stream row left at version 0 by an append that failed is no stream.
    let conflict = store
        .append(AppendRequest::single(
            stream("never-written"),
            ExpectedVersion::Exact(StreamVersion::new(7)),
            vec![typed("OrderPlaced")],
        ))
        .await;
    assert!(conflict.is_err());

    let totals = store.totals().await.unwrap();
    println!("{totals:?}");
    assert_eq!(totals.events.value, 10);
    assert_eq!(totals.streams.value, 3);
    assert!(totals.events.exact && totals.streams.exact);

    let days = store.events_per_day(7).await.unwrap();
    assert_eq!(days.len(), 1, "{days:?}");
    assert_eq!(days[0].events, 10);
    assert_eq!(days[0].day, chrono::Utc::now().date_naive());

    let active = store
        .most_active_streams(DEFAULT_RECENT_EVENTS, 10, None)
        .await
        .unwrap();
    let ranked: Vec<(&str, u64, u64)> = active
        .iter()
        .map(|a| (a.stream_id.as_ref(), a.events, a.version.value()))
        .collect();
    assert_eq!(
        ranked,
        [("orders-1", 5, 5), ("payments-1", 3, 3), ("orders-2", 2, 2)]
    );
    // Only the latest events count: the last 4 are orders-2 twice and payments-1 ...
    let recent = store.most_active_streams(4, 10, None).await.unwrap();
    let recent: Vec<(&str, u64)> = recent
        .iter()
        .map(|a| (a.stream_id.as_ref(), a.events))
        .collect();
    assert_eq!(recent, [("payments-1", 3), ("orders-2", 1)]);
    let prefixed = store
        .most_active_streams(DEFAULT_RECENT_EVENTS, 1, Some("orders-"))
        .await
        .unwrap();
    assert_eq!(prefixed.len(), 1);
    assert_eq!(prefixed[0].stream_id.as_ref(), "orders-1");

    let types = store.events_per_type(DEFAULT_RECENT_EVENTS).await.unwrap();
    let types: Vec<(&str, u64)> = types
        .iter()
        .map(|t| (t.event_type.as_ref(), t.events))
        .collect();
    assert_eq!(types, [("OrderPlaced", 7), ("PaymentReceived", 3)]);

    let watermark = store.watermark().await.unwrap();
    assert!(watermark.oldest_running_transaction > 0);
}
