//! The gap-safe global order: commits that land out of position order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{event, stream};

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    AppendRequest, CheckpointStore, EventStore, ExpectedVersion, Projection, ProjectionOptions,
    ProjectionRunner, ReadAllQuery, RecordedEvent, StreamId,
};
use eventcore_postgres::PostgresEventStore;
use futures::StreamExt;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::{sync::mpsc::UnboundedReceiver, task::JoinHandle};

/// Calls the store's append function in a transaction the test holds open.
async fn begin_append_held_open(
    store: &PostgresEventStore,
    stream_id: &StreamId,
    payload: serde_json::Value,
) -> (PgConnection, (u64, u64)) {
    let channel = format!("eventcore_{}", store.schema());
    begin_append_on_channel(store, stream_id, payload, &channel).await
}

/// Like `begin_append_held_open`, notifying `channel` on commit.
async fn begin_append_on_channel(
    store: &PostgresEventStore,
    stream_id: &StreamId,
    payload: serde_json::Value,
    channel: &str,
) -> (PgConnection, (u64, u64)) {
    let url = eventcore_postgres::testing::test_database_url()
        .await
        .unwrap();
    support::begin_append_on(&url, store, stream_id, payload, channel).await
}

/// Follows the store's global order from the start on a task of its own.
fn follow(store: &PostgresEventStore) -> (JoinHandle<()>, UnboundedReceiver<RecordedEvent>) {
    let (tx, received) = tokio::sync::mpsc::unbounded_channel();
    let mut subscription = store.subscribe(ReadAllQuery::from_start());
    let follower = tokio::spawn(async move {
        while let Some(item) = subscription.next().await {
            if tx.send(item.unwrap()).is_err() {
                break;
            }
        }
    });
    (follower, received)
}

/// Transaction A takes a position, B takes a higher one and commits first:
/// no reader may hand out B before A commits, and A must not be skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_commits_are_delivered_in_order_without_skipping() {
    let config = support::fresh_config()
        .await
        .in_flight_wait(Duration::from_millis(100));
    let store = eventcore_postgres::testing::store_with(config)
        .await
        .unwrap();
    let (follower, mut received) = follow(&store);

    let (mut a, a_position) =
        begin_append_held_open(&store, &stream("a"), json!({"who": "A"})).await;
    let b = store
        .append(AppendRequest::single(
            stream("b"),
            ExpectedVersion::NoStream,
            vec![event(json!({"who": "B"}))],
        ))
        .await
        .unwrap();
    let b_position = b.events[0].position;
    assert!(
        (a_position.0, a_position.1) < (b_position.transaction(), b_position.sequence()),
        "A holds the lower position"
    );

    // B is committed, A is not: nothing may be delivered yet.
    let early = store.read_all(&ReadAllQuery::from_start()).await.unwrap();
    assert!(early.is_empty(), "read_all passed uncommitted A: {early:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "the subscription delivered B while A was in flight"
    );

    sqlx::query("COMMIT").execute(&mut a).await.unwrap();

    let all = store.read_all(&ReadAllQuery::from_start()).await.unwrap();
    let who: Vec<String> = all
        .iter()
        .map(|e| {
            e.payload.to_value().unwrap()["who"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(who, ["A", "B"]);

    let c = store
        .append(AppendRequest::single(
            stream("c"),
            ExpectedVersion::NoStream,
            vec![event(json!({"who": "C"}))],
        ))
        .await
        .unwrap();
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .expect("the subscription stalled")
            .unwrap();
        delivered.push(next);
    }
    let who: Vec<String> = delivered
        .iter()
        .map(|e| {
            e.payload.to_value().unwrap()["who"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(who, ["A", "B", "C"], "each event once, in position order");
    assert_eq!(delivered[2].position, c.events[0].position);
    follower.abort();
}

/// An append whose notification never arrives is still delivered, by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_notification_only_delays_delivery() {
    let config = support::fresh_config()
        .await
        .poll_interval(Duration::from_millis(200));
    let store = eventcore_postgres::testing::store_with(config)
        .await
        .unwrap();
    let (follower, mut received) = follow(&store);
    // The subscription LISTENs only once it has caught up and starts to wait:
    // from then on, a commit without notification reaches it only by polling.
    let url = eventcore_postgres::testing::test_database_url()
        .await
        .unwrap();
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"' || $1 || '\"'",
        )
        .bind(format!("eventcore_{}", store.schema()))
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if listening > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never started listening"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut silent, _) = begin_append_on_channel(
        &store,
        &stream("silent"),
        json!({"who": "silent"}),
        "a_channel_nobody_listens_on",
    )
    .await;
    sqlx::query("COMMIT").execute(&mut silent).await.unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(30), received.recv())
        .await
        .expect("polling delivers the event")
        .unwrap();
    assert_eq!(delivered.payload.to_value().unwrap()["who"], "silent");
    follower.abort();
}

/// Collects the `who` of every event it is given.
struct Who(Arc<Mutex<Vec<String>>>);

impl Projection for Who {
    type Error = std::convert::Infallible;

    fn name(&self) -> &str {
        "who"
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Self::Error> {
        let who = event.payload.to_value().unwrap()["who"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.0.lock().unwrap().push(who);
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), Self::Error> {
        self.0.lock().unwrap().clear();
        Ok(())
    }
}

/// The out-of-order case through a projection runner: B is not applied
/// before A commits, and A is not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_commits_reach_a_projection_in_order() {
    let config = support::fresh_config()
        .await
        .in_flight_wait(Duration::from_millis(100))
        .poll_interval(Duration::from_millis(50));
    let store = eventcore_postgres::testing::store_with(config)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle = ProjectionRunner::new(store.clone(), Who(seen.clone()), store.checkpoints())
        .with_options(ProjectionOptions::default().checkpoint_every_events(1))
        .start();

    let (mut a, _) = begin_append_held_open(&store, &stream("a"), json!({"who": "A"})).await;
    store
        .append(AppendRequest::single(
            stream("b"),
            ExpectedVersion::NoStream,
            vec![event(json!({"who": "B"}))],
        ))
        .await
        .unwrap();
    // Give the runner every chance to (wrongly) apply B while A is open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "applied {:?} while A was in flight",
        seen.lock().unwrap()
    );
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        handle.wait_for(|s| s.events_processed >= 2),
    )
    .await
    .expect("the runner applies both")
    .unwrap();
    handle.stop().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), ["A", "B"]);
    let saved = store.checkpoints().load("who").await.unwrap().unwrap();
    assert_eq!(saved.events_processed, 2);
}
