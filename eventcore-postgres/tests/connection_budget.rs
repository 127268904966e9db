//! The connection budget the crate docs state ("Connections"), checked
//! from `pg_stat_activity` under load: commands, subscriptions and
//! projection runners with leases, on a primary and its replica of their
//! own (never the shared server, where other tests' sessions count too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use eventcore::{
    AppendRequest, EventStore, ExpectedVersion, Projection, ProjectionRunner, ReadAllQuery,
    RecordedEvent,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing::ThrowawayCluster};
use futures::StreamExt;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::{event, stream};

const WAIT: Duration = Duration::from_secs(60);

/// Counts applied events.
#[derive(Debug, Clone)]
struct Count(&'static str, Arc<AtomicU32>);

impl Projection for Count {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        self.0
    }
    async fn apply(&mut self, _: &RecordedEvent) -> Result<(), Self::Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Samples the client sessions of a server (other than its own) until told
/// to stop; returns the most seen at once.
fn sample(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let mut most = 0;
        while !stop.load(Ordering::SeqCst) {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap();
            most = most.max(u32::try_from(count).unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most
    })
}

/// Runs commands, three subscriptions (one on the replica) and two
/// projection runners with leases (one reading from the replica) until
/// everything has been delivered; returns the most sessions seen on the
/// primary and on the replica.
async fn load(store: &PostgresEventStore, primary: &str, replica: Option<&str>) -> (u32, u32) {
    let stop = Arc::new(AtomicBool::new(false));
    let on_primary = sample(primary.to_owned(), stop.clone());
    let on_replica = replica.map(|url| sample(url.to_owned(), stop.clone()));
    let reader = store.replica().unwrap_or_else(|| store.clone());
    let (commands, writers) = (60_u32, 6_u32);
    let total = commands * writers;
    let mut subscriptions = Vec::new();
    for source in [store.clone(), store.clone(), reader.clone()] {
        let mut subscription = source.subscribe(ReadAllQuery::from_start());
        subscriptions.push(tokio::spawn(async move {
            for _ in 0..total {
                tokio::time::timeout(WAIT, subscription.next())
                    .await
                    .expect("the subscription delivers")
                    .unwrap()
                    .unwrap();
            }
        }));
    }
    let counts = [Arc::default(), Arc::default()];
    let runners: Vec<_> = [("first", store.clone()), ("second", reader.clone())]
        .into_iter()
        .zip(&counts)
        .map(|((name, source), count)| {
            ProjectionRunner::new(source, Count(name, Arc::clone(count)), store.checkpoints())
                .with_leadership(store.leadership(Duration::from_millis(100)))
                .start()
        })
        .collect();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..commands {
                let id = stream(&format!("budget-{w}-{}", n % 3));
                store.read_streams(std::slice::from_ref(&id)).await.unwrap();
                store
                    .append(AppendRequest::single(
                        id,
                        ExpectedVersion::Any,
                        vec![event(json!({ "n": n }))],
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks.into_iter().chain(subscriptions) {
        task.await.unwrap();
    }
    for (runner, count) in runners.iter().zip(&counts) {
        tokio::time::timeout(WAIT, async {
            while count.load(Ordering::SeqCst) < total {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the projection applies every event");
        assert!(runner.status().events_processed >= u64::from(total));
    }
    stop.store(true, Ordering::SeqCst);
    let most_primary = on_primary.await.unwrap();
    let most_replica = match on_replica {
        Some(task) => task.await.unwrap(),
        None => 0,
    };
    for runner in runners {
        runner.stop().await.unwrap();
    }
    (most_primary, most_replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_never_opens_more_connections_than_its_stated_limit() {
    let primary = ThrowawayCluster::start().await.unwrap();
    let replica = primary.start_replica().await.unwrap();
    let config = PostgresConfig::new(primary.url())
        .max_connections(3)
        .write_connections(2)
        .read_replica(replica.url())
        .poll_interval(Duration::from_millis(50));
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    let position = store.wal_position().await.unwrap();
    store
        .replica()
        .unwrap()
        .wait_for(&position, WAIT)
        .await
        .unwrap();
    let limit = store.connection_limit();
    assert_eq!((limit.read, limit.write, limit.listener), (3, 2, 1));
    assert_eq!(limit.replicas, [3]);
    let (most_primary, most_replica) = load(&store, &primary.url(), Some(&replica.url())).await;
    println!(
        "new(max 3, writers 2, one replica), 6 writers, 3 subscriptions, 2 runners: at most \
         {most_primary} sessions on the primary (stated {}), {most_replica} on the replica \
         (stated {})",
        limit.on_primary(2),
        limit.replicas[0]
    );
    assert!(
        most_primary <= limit.on_primary(2),
        "{most_primary} > {}",
        limit.on_primary(2)
    );
    assert!(
        most_replica <= limit.replicas[0],
        "{most_replica} > {}",
        limit.replicas[0]
    );
    assert!(most_primary >= 2, "the sampler saw the load");

    // A store on the caller's pool opens no second pool for appends (on
    // a server of its own: the first store's sessions stay open).
    let other = ThrowawayCluster::start().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&other.url())
        .await
        .unwrap();
    let schema = eventcore_postgres::SchemaName::new("from_pool").unwrap();
    let shared = PostgresEventStore::from_pool_with_schema(pool, schema);
    shared.initialize().await.unwrap();
    let limit = shared.connection_limit();
    assert_eq!((limit.read, limit.write), (3, 0));
    let (most, _) = load(&shared, &other.url(), None).await;
    println!(
        "from_pool(max 3), the same load: at most {most} sessions on the primary (stated {})",
        limit.on_primary(2)
    );
    assert!(
        most <= limit.on_primary(2),
        "{most} > {}",
        limit.on_primary(2)
    );
}
