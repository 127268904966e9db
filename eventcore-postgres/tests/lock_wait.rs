//! An execution's timeout bounds the append's wait for a locked stream row,
//! on a throwaway cluster of its own (the test holds a transaction open).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use eventcore::{
    CommandExecutor, EventStore, ExecutionError, ExecutionOptions, RetryPolicy, StreamId,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing::ThrowawayCluster};
use sqlx::{Connection, PgConnection};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Bumped;

impl eventcore::Event for Bumped {
    fn event_type(&self) -> &'static str {
        "Bumped"
    }
}

#[derive(eventcore::Command)]
struct Bump {
    #[stream]
    counter: StreamId,
}

impl eventcore::CommandLogic for Bump {
    type State = ();
    type Event = Bumped;
    type Error = std::convert::Infallible;

    fn apply(&self, _: &mut (), _: &eventcore::StoredEvent<Bumped>) {}

    fn handle(
        &self,
        _: (),
        _: &mut eventcore::HandleContext<'_, Self>,
    ) -> Result<eventcore::Writes<Self>, Self::Error> {
        Ok(eventcore::Writes::new().emit(self.counter_stream(), Bumped))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_bounds_the_wait_for_a_locked_stream() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    // The statement timeout is far longer than the execution's.
    let store = PostgresEventStore::new(
        PostgresConfig::new(cluster.url()).statement_timeout(Some(Duration::from_secs(60))),
    )
    .await
    .unwrap();
    store.initialize().await.unwrap();
    let executor = CommandExecutor::new(store.clone())
        .with_retry_policy(RetryPolicy::default().with_base_delay(Duration::from_millis(50)));
    let counter = StreamId::try_new("counter").unwrap();
    let bump = Bump {
        counter: counter.clone(),
    };
    executor
        .execute(&bump, ExecutionOptions::default())
        .await
        .unwrap();

    // Another session holds the stream's row.
    let mut holder = PgConnection::connect(&cluster.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT version FROM eventcore_streams WHERE stream_id = 'counter' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();

    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        executor.execute(
            &bump,
            ExecutionOptions::default().with_timeout(Duration::from_secs(1)),
        ),
    )
    .await
    .expect("the execution ends long before the statement timeout");
    let took = started.elapsed();
    println!("with a 1 s timeout and the row held: {outcome:?} after {took:?}");
    let error = outcome.unwrap_err();
    assert!(matches!(error, ExecutionError::Timeout { .. }), "{error:?}");
    assert!(
        !error.is_unknown_outcome(),
        "nothing was written: {error:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let read = store.read_streams(&[counter]).await.unwrap();
    assert_eq!(read.events.len(), 1, "the timed-out command wrote nothing");
}
