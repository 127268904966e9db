//! A PostgreSQL server that goes away and comes back: on a throwaway
//! cluster this test owns, never the shared server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use eventcore::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing::ThrowawayCluster};
use serde_json::json;
use support::{event, stream};

fn one(name: &str, n: u64) -> AppendRequest {
    AppendRequest::single(
        stream(name),
        ExpectedVersion::Any,
        vec![event(json!({ "n": n }))],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_fails_fast_while_the_server_is_down_and_recovers_after() {
    let cluster = ThrowawayCluster::start()
        .await
        .expect("a throwaway cluster");
    let acquire_timeout = Duration::from_secs(2);
    let store = PostgresEventStore::new(
        PostgresConfig::new(cluster.url())
            .max_connections(4)
            .acquire_timeout(acquire_timeout),
    )
    .await
    .unwrap();
    store.initialize().await.unwrap();
    store.append(one("before", 1)).await.unwrap();

    cluster.stop().await.unwrap();
    // Pooled connections are dead now; whatever the call, it fails with a
    // typed error within the acquire timeout (plus a margin for a loaded machine).
    for attempt in 0..3 {
        let started = Instant::now();
        let error = store.append(one("during", attempt)).await.unwrap_err();
        let took = started.elapsed();
        println!("append while down: {error} after {took:?}");
        assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
        assert!(!error.is_retryable(), "not a conflict: the caller decides");
        assert!(took < acquire_timeout * 5, "took {took:?}");
        let read = store.read_streams(&[stream("before")]).await.unwrap_err();
        assert!(!read.is_retryable());
    }

    cluster.start_server().await.unwrap();
    // The same store, without a restart of the application, works again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match store.append(one("after", 1)).await {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the store never recovered: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let read = store
        .read_streams(&[stream("before"), stream("after")])
        .await
        .unwrap();
    assert_eq!(
        read.events.len(),
        2,
        "nothing lost, nothing from the outage written"
    );
    let during = store.read_streams(&[stream("during")]).await.unwrap();
    assert!(during.events.is_empty());
}
