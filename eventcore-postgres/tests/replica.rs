//! Reading from a streaming replica: the gap-safe order on a hot standby,
//! projections catching up from it, and reading one's own writes there.
//! Each test starts a primary and a replica of its own (never the shared
//! server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use eventcore::{
    AppendRequest, EventId, EventStore, ExpectedVersion, Projection, ProjectionRunner,
    ReadAllQuery, RecordedEvent, StreamId, StreamQuery,
};
use eventcore_postgres::{
    PostgresConfig, PostgresEventStore, WaitError, testing::ThrowawayCluster,
};
use futures::StreamExt;
use serde_json::json;
use sqlx::PgConnection;
use support::{event, stream};

const WAIT: Duration = Duration::from_secs(60);

/// A primary, its replica, and a store on both (initialized, and the
/// schema replayed on the replica).
async fn pair() -> (ThrowawayCluster, ThrowawayCluster, PostgresEventStore) {
    let primary = ThrowawayCluster::start().await.unwrap();
    let replica = primary.start_replica().await.unwrap();
    let config = PostgresConfig::new(primary.url())
        .read_replica(replica.url())
        .poll_interval(Duration::from_millis(50))
        .in_flight_wait(Duration::from_millis(100));
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    let on_replica = store.replica().expect("a replica is configured");
    let position = store.wal_position().await.unwrap();
    on_replica.wait_for(&position, WAIT).await.unwrap();
    (primary, replica, store)
}

/// Calls the store's append function in a transaction the test holds open
/// on the primary: it takes a position, and commits when the test says.
async fn begin_append_held_open(
    primary: &ThrowawayCluster,
    store: &PostgresEventStore,
    stream_id: &StreamId,
) -> PgConnection {
    let channel = format!("eventcore_{}", store.schema());
    let (conn, _) = support::begin_append_on(
        &primary.url(),
        store,
        stream_id,
        json!({"who": "A"}),
        &channel,
    )
    .await;
    conn
}

fn who(events: &[RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e.payload.to_value().unwrap()["who"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// Applies every event to a shared list, in order.
#[derive(Debug, Clone)]
struct Collect(String, Arc<Mutex<Vec<EventId>>>);

impl Collect {
    fn named(name: &str) -> Self {
        Self(name.to_owned(), Arc::default())
    }
}

impl Projection for Collect {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        &self.0
    }
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Self::Error> {
        self.1.lock().unwrap().push(event.id);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), Self::Error> {
        self.1.lock().unwrap().clear();
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// On the replica as on the primary: an event committed after a lower
/// position's transaction began is not delivered before that transaction
/// ends; then a subscription and a projection on the replica deliver every
/// event of concurrent appends once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_delivers_the_gap_safe_order_once_and_in_order() {
    let (primary, _replica, store) = pair().await;
    let on_replica = store.replica().unwrap();
    assert!(on_replica.reads_from_replica() && !store.reads_from_replica());

    let mut a = begin_append_held_open(&primary, &store, &stream("a")).await;
    store
        .append(AppendRequest::single(
            stream("b"),
            ExpectedVersion::NoStream,
            vec![event(json!({"who": "B"}))],
        ))
        .await
        .unwrap();
    // The replica has replayed B's commit (and A's insert), not A's commit.
    let after_b = store.wal_position().await.unwrap();
    on_replica.wait_for(&after_b, WAIT).await.unwrap();
    let visible_b = on_replica
        .read_stream(&StreamQuery::forwards(stream("b")))
        .await
        .unwrap();
    assert_eq!(visible_b.events.len(), 1, "B is visible on the replica");
    let early = on_replica
        .read_all(&ReadAllQuery::from_start())
        .await
        .unwrap();
    assert!(
        early.is_empty(),
        "the replica delivered B past A in flight: {early:?}"
    );
    let mut subscription = on_replica.subscribe(ReadAllQuery::from_start());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), subscription.next())
            .await
            .is_err(),
        "a subscription on the replica delivered B while A was in flight"
    );
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();
    let mut first = Vec::new();
    while first.len() < 2 {
        let next = tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("the replica subscription delivers A and B")
            .unwrap()
            .unwrap();
        first.push(next);
    }
    assert_eq!(who(&first), ["A", "B"]);
    println!(
        "out-of-order commits on the primary, read on the replica: {:?}",
        who(&first)
    );

    // Under load: 4 writers on the primary, a subscription and a projection
    // (lease and checkpoint on the primary) on the replica.
    let collected = Collect::named("collect");
    let runner = ProjectionRunner::new(on_replica.clone(), collected.clone(), store.checkpoints())
        .with_leadership(store.leadership(Duration::from_millis(100)))
        .start();
    let acknowledged: Arc<Mutex<HashMap<EventId, Instant>>> = Arc::default();
    let (writers, per_writer) = (4_u64, 100_u64);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let acknowledged = acknowledged.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_writer {
                // Writers meet on 7 streams: a serialization failure is
                // retried, as the executor would.
                let result = loop {
                    match store
                        .append(AppendRequest::single(
                            stream(&format!("load-{}", n % 7)),
                            ExpectedVersion::Any,
                            vec![event(json!({"who": format!("w{w}-{n}")}))],
                        ))
                        .await
                    {
                        Ok(result) => break result,
                        Err(error) if error.is_retryable() => continue,
                        Err(error) => panic!("{error}"),
                    }
                };
                acknowledged
                    .lock()
                    .unwrap()
                    .insert(result.events[0].id, Instant::now());
            }
        }));
    }
    let total = (writers * per_writer) as usize;
    let mut delivered = Vec::new();
    let mut lags = Vec::new();
    while delivered.len() < total {
        let next = tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("the replica subscription keeps delivering")
            .unwrap()
            .unwrap();
        let received = Instant::now();
        if let Some(acked) = acknowledged.lock().unwrap().get(&next.id) {
            lags.push(received.saturating_duration_since(*acked));
        }
        delivered.push(next);
    }
    for task in tasks {
        task.await.unwrap();
    }
    let on_primary = store
        .read_all(
            &ReadAllQuery::from_start().page_size(std::num::NonZeroUsize::new(10_000).unwrap()),
        )
        .await
        .unwrap();
    let expected: Vec<EventId> = on_primary[2..].iter().map(|e| e.id).collect();
    let got: Vec<EventId> = delivered.iter().map(|e| e.id).collect();
    assert_eq!(
        got, expected,
        "every event once, in the primary's global order"
    );
    assert!(delivered.windows(2).all(|w| w[0].position < w[1].position));
    let status = tokio::time::timeout(
        WAIT,
        runner.wait_for(|s| s.events_processed >= total as u64 + 2),
    )
    .await
    .expect("the projection on the replica catches up")
    .unwrap();
    let applied = collected.1.lock().unwrap().clone();
    let all: Vec<EventId> = on_primary.iter().map(|e| e.id).collect();
    assert_eq!(
        applied, all,
        "the projection applied every event once, in order"
    );
    runner.stop().await.unwrap();
    let saved = eventcore::CheckpointStore::load(&store.checkpoints(), "collect")
        .await
        .unwrap()
        .expect("the checkpoint is saved on the primary");
    lags.sort();
    println!(
        "replica: {total} events from {writers} writers delivered once and in order \
         ({} with an acknowledgement time); delivery lag after the primary's acknowledgement \
         p50 {:?}, p99 {:?}, max {:?}; projection on the replica applied {} (checkpoint on \
         the primary at {})",
        lags.len(),
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or_default(),
        status.events_processed,
        saved.position,
    );
}

/// A reader on the replica waits for the position of a write; with replay
/// paused the wait ends in the typed timeout and the write is not visible
/// there; resumed, the wait succeeds and the write reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_for_the_replica_and_times_out_while_replay_is_paused() {
    let (_primary, replica, store) = pair().await;
    let on_replica = store.replica().unwrap();
    replica.pause_replay().await.unwrap();
    let written = store
        .append(AppendRequest::single(
            stream("mine"),
            ExpectedVersion::NoStream,
            vec![event(json!({"who": "me"}))],
        ))
        .await
        .unwrap();
    // The append's own token: the WAL position after its commit.
    let token = written
        .commit_token
        .clone()
        .expect("a store with replicas returns a token");
    let position = eventcore_postgres::WalPosition::parse(&token).expect("an LSN");
    let started = Instant::now();
    match on_replica
        .wait_for(&position, Duration::from_millis(500))
        .await
    {
        Err(error @ WaitError::Timeout { .. }) => {
            println!("paused replay: {error} ({:?})", started.elapsed());
            assert!(error.to_string().contains(position.as_str()));
        }
        other => panic!("expected a timeout while replay is paused, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the wait is bounded"
    );
    let unseen = on_replica
        .read_stream(&StreamQuery::forwards(stream("mine")))
        .await
        .unwrap();
    assert!(unseen.events.is_empty(), "not replayed, not visible");
    store
        .wait_for(&position, Duration::ZERO)
        .await
        .expect("the primary has it");

    replica.resume_replay().await.unwrap();
    let started = Instant::now();
    on_replica.wait_for(&position, WAIT).await.unwrap();
    println!("resumed: replayed after {:?}", started.elapsed());
    let seen = on_replica
        .read_stream(&StreamQuery::forwards(stream("mine")))
        .await
        .unwrap();
    assert_eq!(seen.events.len(), 1);
    assert_eq!(seen.events[0].id, written.events[0].id);
}

/// Projection catch-up over 20,000 stored events, from the replica and
/// from the primary, alternated; prints the figures (no timing is asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_catch_up_from_the_replica_and_from_the_primary() {
    let (_primary, _replica, store) = pair().await;
    let (appends, per_append) = (200_u64, 100_u64);
    for n in 0..appends {
        let events = (0..per_append)
            .map(|k| event(json!({ "who": format!("{n}-{k}") })))
            .collect();
        store
            .append(AppendRequest::single(
                stream(&format!("catch-up-{}", n % 50)),
                ExpectedVersion::Any,
                events,
            ))
            .await
            .unwrap();
    }
    let total = appends * per_append;
    let position = store.wal_position().await.unwrap();
    let on_replica = store.replica().unwrap();
    on_replica.wait_for(&position, WAIT).await.unwrap();
    let mut figures = Vec::new();
    for round in 0..2 {
        for (source, reader) in [("replica", on_replica.clone()), ("primary", store.clone())] {
            let projection = Collect::named(&format!("catch-up-{source}-{round}"));
            let applied = projection.1.clone();
            let started = Instant::now();
            let runner = ProjectionRunner::new(reader, projection, store.checkpoints()).start();
            tokio::time::timeout(WAIT, runner.wait_for(|s| s.events_processed >= total))
                .await
                .expect("the projection catches up")
                .unwrap();
            let took = started.elapsed();
            runner.stop().await.unwrap();
            assert_eq!(applied.lock().unwrap().len() as u64, total);
            figures.push(format!(
                "{source} {:.0} events/s ({:.2} s)",
                total as f64 / took.as_secs_f64(),
                took.as_secs_f64()
            ));
        }
    }
    println!(
        "projection catch-up over {total} events: {}",
        figures.join(", ")
    );
}

/// The events the command reads count.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counted {
    n: u64,
}

impl eventcore::Event for Counted {
    fn event_type(&self) -> &'static str {
        "replica.Counted"
    }
}

/// Appends the next number of its stream: every decision needs the
/// stream's latest event.
#[derive(Debug, Clone, eventcore::Command)]
struct CountUp {
    #[stream]
    counter: StreamId,
}

impl eventcore::CommandLogic for CountUp {
    type State = u64;
    type Event = Counted;
    type Error = std::convert::Infallible;

    fn apply(&self, state: &mut u64, event: &eventcore::StoredEvent<Counted>) {
        *state = event.payload.n + 1;
    }

    fn handle(
        &self,
        state: u64,
        _: &mut eventcore::HandleContext<'_, Self>,
    ) -> Result<eventcore::Writes<Self>, Self::Error> {
        Ok(eventcore::Writes::new().emit(self.counter_stream(), Counted { n: state }))
    }
}

/// Runs `CountUp` from 4 tasks over `streams` streams; returns the retries.
async fn count_up(store: PostgresEventStore, streams: u64, commands: u64) -> u64 {
    let executor = eventcore::CommandExecutor::new(store);
    let mut tasks = Vec::new();
    for task in 0..4_u64 {
        let executor = executor.clone();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0;
            for n in 0..commands {
                let command = CountUp {
                    counter: stream(&format!("count-{}", (task + n) % streams)),
                };
                let result = executor
                    .execute(&command, eventcore::ExecutionOptions::default())
                    .await
                    .unwrap();
                retries += u64::from(result.attempts - 1);
            }
            retries
        }));
    }
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    retries
}

/// Command reads from the replica stay correct (the append checks every
/// version on the primary) but cost retries when a stream is written again
/// within the replica's lag; prints the retry rate against reads from the
/// primary, on the same streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_reads_from_a_replica_are_correct_and_cost_retries() {
    let (_primary, _replica, store) = pair().await;
    let (streams, commands) = (8_u64, 100_u64);
    let mut figures = Vec::new();
    for (reads, handle) in [
        ("primary", store.clone()),
        ("replica", store.replica().unwrap()),
    ] {
        let retries = count_up(handle, streams, commands).await;
        figures.push(format!(
            "{reads}: {retries} retries in {} commands ({:.1}%)",
            4 * commands,
            100.0 * retries as f64 / (4 * commands) as f64
        ));
    }
    // Every stream counts 0, 1, 2, ... without a gap or a repeat.
    let all = store
        .read_all(
            &ReadAllQuery::from_start().page_size(std::num::NonZeroUsize::new(10_000).unwrap()),
        )
        .await
        .unwrap();
    let mut next: HashMap<StreamId, u64> = HashMap::new();
    for event in &all {
        let n = event.decode::<Counted>().unwrap().payload.n;
        let expected = next.entry(event.stream_id.clone()).or_default();
        assert_eq!(
            n, *expected,
            "{} counted {n} after {}",
            event.stream_id, *expected
        );
        *expected += 1;
    }
    assert_eq!(all.len() as u64, 2 * 4 * commands);
    println!(
        "command reads, 4 tasks over {streams} streams: {}",
        figures.join("; ")
    );
}
