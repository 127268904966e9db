//! The read side under faults, each on a throwaway cluster of its own (never
//! the shared server: these tests kill backends, crash the server and count
//! on a delivery watermark no other test moves). Each prints what it counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use eventcore::{
    AppendRequest, Checkpoint, CheckpointStore, ErrorPolicy, EventId, EventStore, ExpectedVersion,
    GlobalPosition, Projection, ProjectionHandle, ProjectionOptions, ProjectionRunner,
    ProjectionState, ProjectionStatus, ReadAllQuery, RecordedEvent, StoreError, StreamVersion,
};
use eventcore_postgres::{
    PostgresCheckpointStore, PostgresConfig, PostgresEventStore, testing::ThrowawayCluster,
};
use futures::StreamExt;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use support::{event, stream};

const WAIT: Duration = Duration::from_secs(90);

/// How often a standby tries the lock in the lease-loss test: far longer
/// than the old leader needs to finish the batch in hand and notice (it
/// never yields inside a batch), and about as long as the old leader's own
/// pause before it competes again, so either may win the next lease.
const TAKEOVER_POLL: Duration = Duration::from_millis(150);

async fn initialized(config: PostgresConfig) -> PostgresEventStore {
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    store
}

fn config(cluster: &ThrowawayCluster) -> PostgresConfig {
    PostgresConfig::new(cluster.url())
        .acquire_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(50))
}

async fn append_one(store: &impl EventStore, name: &str, n: u64) -> Result<(), StoreError> {
    store
        .append(AppendRequest::single(
            stream(name),
            ExpectedVersion::Any,
            vec![event(json!({ "n": n }))],
        ))
        .await
        .map(|_| ())
}

async fn wait_status<P>(
    handle: &ProjectionHandle<P>,
    what: &str,
    condition: impl FnMut(&ProjectionStatus) -> bool,
) -> ProjectionStatus {
    match tokio::time::timeout(WAIT, handle.wait_for(condition)).await {
        Ok(Ok(status)) => status,
        Ok(Err(last)) => panic!("the runner ended before {what}: {last:?}"),
        Err(_) => panic!("timed out waiting for {what}: {:?}", handle.status()),
    }
}

/// Every event in the store, in global order; reads that fail while the
/// server restarts (a pooled connection it cut) are tried again.
async fn everything(store: &impl EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut query = ReadAllQuery::from_start();
    let deadline = Instant::now() + WAIT;
    loop {
        let page = match store.read_all(&query).await {
            Ok(page) => page,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the store stays unreadable: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(last) = page.last() else {
            return all;
        };
        query.after = last.position;
        all.extend(page);
    }
}

/// One application: which runner, under which lease (its fencing
/// token), which position, when.
type Entry = (&'static str, u64, GlobalPosition, Instant);

/// Who applied which position when: shared by every runner of a test.
#[derive(Debug, Clone, Default)]
struct Journal(Arc<Mutex<Vec<Entry>>>);

impl Journal {
    fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap().clone()
    }
}

/// Records every application in a [`Journal`], with the lease it was
/// applied under; at-least-once.
struct Journaling {
    runner: &'static str,
    fence: u64,
    journal: Journal,
}

impl Projection for Journaling {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        "journaling"
    }
    async fn resume_from(&mut self, checkpoint: &Checkpoint) -> Result<(), Self::Error> {
        self.fence = checkpoint.fence.map_or(0, |f| f.value());
        Ok(())
    }
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Self::Error> {
        self.journal.0.lock().unwrap().push((
            self.runner,
            self.fence,
            event.position,
            Instant::now(),
        ));
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Keeps going until told to stop: appends one event at a time, counting acknowledgements.
fn keep_appending(
    store: PostgresEventStore,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut acknowledged, mut failed) = (0_u64, 0_u64);
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            match append_one(&store, &format!("flow-{}", n % 7), n).await {
                Ok(()) => acknowledged += 1,
                Err(_) => {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (acknowledged, failed)
    })
}

/// (b) The leader's lock backend is terminated while events flow: whoever
/// leads next (the other runner, or the same one under a new lease), no
/// event is applied under the old lease once one was applied under the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_connection_dies_stops_applying_before_the_next_lease_starts() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let store = initialized(config(&cluster)).await;
    let journal = Journal::default();
    // Checkpoints almost never: only the lease check can stop the old leader.
    let options = ProjectionOptions::default()
        .checkpoint_every_events(1_000_000)
        .checkpoint_interval(Duration::from_secs(3600));
    let start = |runner: &'static str| {
        ProjectionRunner::new(
            store.clone(),
            Journaling {
                runner,
                fence: 0,
                journal: journal.clone(),
            },
            store.checkpoints(),
        )
        .with_leadership(store.leadership(TAKEOVER_POLL))
        .with_options(options.clone())
        .start()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let appender = keep_appending(store.clone(), stop.clone());
    let first = start("first");
    wait_status(&first, "the first leader applies", |s| {
        s.events_processed >= 50
    })
    .await;
    let second = start("second");
    wait_status(&second, "the second runner waits", |s| {
        s.state == ProjectionState::Standby
    })
    .await;
    let killed_fence = journal.entries().last().map(|e| e.1).unwrap();

    let pool = store.pool().clone();
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(terminated);
    let killed_at = Instant::now();

    // Events flow for a while under the next lease, whoever holds it.
    let deadline = Instant::now() + WAIT;
    loop {
        let under_new = journal
            .entries()
            .iter()
            .filter(|e| e.1 > killed_fence)
            .count();
        if under_new >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new lease took over: {:?} / {:?}",
            first.status(),
            second.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, failed) = appender.await.unwrap();
    let all = everything(&store).await;
    let last = all.last().unwrap().position;
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let (a, b) = (first.status(), second.status());
        match (a.state, b.state) {
            (ProjectionState::Running, ProjectionState::Standby) if a.position >= last => {
                break "first";
            }
            (ProjectionState::Standby, ProjectionState::Running) if b.position >= last => {
                break "second";
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "not one caught-up leader: {a:?} / {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let entries = journal.entries();
    let mut fences: BTreeMap<u64, (Instant, Instant, &'static str)> = BTreeMap::new();
    for (runner, fence, _, at) in &entries {
        let span = fences.entry(*fence).or_insert((*at, *at, runner));
        span.0 = span.0.min(*at);
        span.1 = span.1.max(*at);
    }
    let overlapping: usize = fences
        .iter()
        .zip(fences.iter().skip(1))
        .map(|((_, older), (_, newer))| {
            entries
                .iter()
                .filter(|(_, _, _, at)| *at >= newer.0 && *at <= older.1)
                .count()
        })
        .sum();
    let old_after_kill = entries
        .iter()
        .filter(|(_, fence, _, at)| *fence == killed_fence && *at >= killed_at)
        .count();
    let mut per_position: BTreeMap<GlobalPosition, u32> = BTreeMap::new();
    for (_, _, position, _) in &entries {
        *per_position.entry(*position).or_default() += 1;
    }
    let missing = all
        .iter()
        .filter(|e| !per_position.contains_key(&e.position))
        .count();
    let doubled = per_position.values().filter(|&&n| n > 1).count();
    let leases: Vec<String> = fences
        .iter()
        .map(|(fence, (_, _, runner))| format!("{fence} ({runner})"))
        .collect();
    println!(
        "appends acknowledged {acknowledged}, failed {failed}; events {}; leases {leases:?}; \
         applied under the killed lease after the kill {old_after_kill}; applications \
         in an overlap of two leases {overlapping}; positions applied twice {doubled}; \
         missing {missing}; one leader at the end ({leader}), the other in standby",
        all.len(),
    );
    assert_eq!(overlapping, 0, "two leases applied events at the same time");
    assert_eq!(missing, 0, "an event was never applied");
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

/// A read model in the store's database, committed with its checkpoint:
/// a table counting how often each event's effect was committed.
struct Committed {
    pool: PgPool,
    checkpoints: PostgresCheckpointStore,
    pending: Vec<EventId>,
    applications: Arc<AtomicU64>,
}

impl Committed {
    async fn create(store: &PostgresEventStore) -> Self {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS public.committed (event_id uuid PRIMARY KEY, times int NOT NULL)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        Self {
            pool: store.pool().clone(),
            checkpoints: store.checkpoints(),
            pending: Vec::new(),
            applications: Arc::default(),
        }
    }

    async fn flush(&mut self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let backend = |e: sqlx::Error| StoreError::Backend {
            reason: e.to_string(),
            source: None,
        };
        let ids: Vec<uuid::Uuid> = self.pending.iter().map(|id| *id.as_uuid()).collect();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let connection: &mut PgConnection = &mut tx;
        sqlx::query(
            "INSERT INTO public.committed (event_id, times) SELECT unnest($1::uuid[]), 1 \
             ON CONFLICT (event_id) DO UPDATE SET times = committed.times + 1",
        )
        .bind(&ids)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
        self.checkpoints
            .save_in(&mut *connection, checkpoint)
            .await?;
        tx.commit().await.map_err(backend)?;
        self.pending.clear();
        Ok(())
    }
}

impl Projection for Committed {
    type Error = StoreError;
    fn name(&self) -> &str {
        "committed"
    }
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), StoreError> {
        self.applications.fetch_add(1, Ordering::SeqCst);
        self.pending.push(event.id);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), StoreError> {
        self.pending.clear();
        Ok(())
    }
    async fn resume_from(&mut self, _checkpoint: &Checkpoint) -> Result<(), StoreError> {
        // What was applied but not committed is lost with its checkpoint.
        self.pending.clear();
        Ok(())
    }
    async fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<bool, StoreError> {
        self.flush(checkpoint).await?;
        Ok(true)
    }
}

/// (a) A leader and a standby under continuous appends through three
/// crashes of the server: afterwards one runner leads, and the read model
/// holds every stored event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_survive_three_server_crashes_and_one_leads_afterwards() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let store = initialized(config(&cluster).max_connections(4)).await;
    let options = ProjectionOptions::default()
        .checkpoint_every_events(20)
        .checkpoint_interval(Duration::from_millis(200));
    let mut runners = Vec::new();
    let mut applications = Vec::new();
    for _ in 0..2 {
        let projection = Committed::create(&store).await;
        applications.push(projection.applications.clone());
        runners.push(
            ProjectionRunner::new(store.clone(), projection, store.checkpoints())
                .with_leadership(store.leadership(Duration::from_millis(100)))
                .with_options(options.clone())
                .start(),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let appender = keep_appending(store.clone(), stop.clone());
    for round in 0..3 {
        // Some progress before each crash.
        let before = everything(&store).await.len() as u64;
        let deadline = Instant::now() + WAIT;
        while runners
            .iter()
            .map(|r| r.status().events_processed)
            .max()
            .unwrap_or(0)
            < before
        {
            assert!(
                Instant::now() < deadline,
                "no progress before crash {round}: {:?}",
                runners
                    .iter()
                    .map(ProjectionHandle::status)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.crash().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.start_server().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, failed) = appender.await.unwrap();
    let all = everything(&store).await;
    let last = all.last().unwrap().position;
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses: Vec<ProjectionStatus> =
            runners.iter().map(ProjectionHandle::status).collect();
        let leaders = statuses
            .iter()
            .filter(|s| s.state == ProjectionState::Running)
            .count();
        let caught_up = statuses
            .iter()
            .any(|s| s.state == ProjectionState::Running && s.position >= last);
        if leaders == 1 && caught_up {
            assert!(
                statuses.iter().all(|s| matches!(
                    s.state,
                    ProjectionState::Running | ProjectionState::Standby
                )),
                "{statuses:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no single caught-up leader: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The leader commits what it applied at its next checkpoint.
    for runner in runners {
        runner.stop().await.unwrap();
    }
    let rows: Vec<(uuid::Uuid, i32)> =
        sqlx::query_as("SELECT event_id, times FROM public.committed")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let committed: BTreeMap<uuid::Uuid, i32> = rows.into_iter().collect();
    let missing = all
        .iter()
        .filter(|e| !committed.contains_key(e.id.as_uuid()))
        .count();
    let doubled = committed.values().filter(|&&t| t > 1).count();
    let applied: u64 = applications.iter().map(|a| a.load(Ordering::SeqCst)).sum();
    println!(
        "appends acknowledged {acknowledged}, failed {failed}; events stored {}; applications \
         {applied} (re-applied after crashes {}); committed once {}, missing {missing}, \
         committed twice {doubled}",
        all.len(),
        applied.saturating_sub(all.len() as u64),
        committed.len() - doubled,
    );
    assert!(acknowledged as usize <= all.len());
    assert_eq!(missing, 0, "an event's effect was never committed");
    assert_eq!(doubled, 0, "an event's effect was committed twice");
    assert_eq!(committed.len(), all.len());
}

/// Inserts a row no reader can turn into an event (metadata that is not
/// EventCore metadata), as a hand-written INSERT or another tool could.
async fn insert_poison_row(store: &PostgresEventStore) {
    let sql = format!(
        "INSERT INTO \"{}\".eventcore_events \
         (event_id, stream_id, stream_version, event_type, payload, metadata) \
         VALUES ($1, 'poison', 1, 'Marked', '{{}}', '[\"not\", \"metadata\"]')",
        store.schema().as_str()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(uuid::Uuid::now_v7())
        .execute(store.pool())
        .await
        .unwrap();
}

/// Counts what it applied; never fails.
#[derive(Debug)]
struct Counting(Arc<Mutex<Vec<u64>>>, Arc<AtomicU64>);

impl Counting {
    fn new(seen: &Arc<Mutex<Vec<u64>>>) -> Self {
        Self(seen.clone(), Arc::default())
    }
}

impl Projection for Counting {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        "counting"
    }
    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), Self::Error> {
        let n = event.payload.to_value().unwrap()["n"].as_u64().unwrap();
        self.0.lock().unwrap().push(n);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), Self::Error> {
        self.0.lock().unwrap().clear();
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// (c) A poison row between good events: the good ones before it are
/// delivered, `Stop` fails naming it, `Skip` passes it, and a subscription
/// goes on after it is told to skip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_row_is_an_error_at_its_position_after_the_good_events_before_it() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let store = initialized(config(&cluster)).await;
    for n in 0..3 {
        append_one(&store, "good", n).await.unwrap();
    }
    insert_poison_row(&store).await;
    for n in 3..6 {
        append_one(&store, "good", n).await.unwrap();
    }

    // Stop: the three good events, then failed with the position named.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle =
        ProjectionRunner::new(store.clone(), Counting::new(&seen), store.checkpoints()).start();
    let error = tokio::time::timeout(WAIT, handle.join())
        .await
        .expect("the Stop policy ends the runner")
        .unwrap_err();
    let saved = store.checkpoints().load("counting").await.unwrap().unwrap();
    println!(
        "stop: applied {:?}, error {error}, saved {saved:?}",
        seen.lock().unwrap()
    );
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
    assert_eq!(saved.state, ProjectionState::Failed);
    assert_eq!(saved.events_processed, 3);
    let last_error = saved.last_error.expect("last_error is set");
    assert!(last_error.contains("cannot be read"), "{last_error}");

    // Skip: restarted with the skip policy, it passes the row and applies the rest.
    let handle = ProjectionRunner::new(store.clone(), Counting::new(&seen), store.checkpoints())
        .with_options(ProjectionOptions::default().on_error(ErrorPolicy::Skip))
        .start();
    let status = wait_status(&handle, "the rest applied", |s| s.events_processed >= 6).await;
    println!(
        "skip: applied {:?}, status {status:?}",
        seen.lock().unwrap()
    );
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(status.events_skipped, 1);
    assert!(status.last_error.is_some());
    handle.stop().await.unwrap();

    // A subscription yields the good events, then the error, then (told to
    // skip) the events after the row.
    let mut subscription = store.subscribe(ReadAllQuery::from_start());
    let mut delivered = Vec::new();
    let poison = loop {
        let item = tokio::time::timeout(WAIT, subscription.next())
            .await
            .unwrap()
            .unwrap();
        match item {
            Ok(event) => delivered.push(event.payload.to_value().unwrap()["n"].as_u64().unwrap()),
            Err(error) => break error,
        }
    };
    assert_eq!(delivered, [0, 1, 2]);
    let position = poison.undecodable_position().expect("names the position");
    subscription.skip_past(position);
    for _ in 0..3 {
        let event = tokio::time::timeout(WAIT, subscription.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        delivered.push(event.payload.to_value().unwrap()["n"].as_u64().unwrap());
    }
    println!("subscription: {delivered:?} around the poison row at {position}: {poison}");
    assert_eq!(delivered, [0, 1, 2, 3, 4, 5]);
}

/// (d) One connection per pool, three live subscriptions and a stream of
/// commands: listening holds no pool connection, so every command succeeds
/// and every subscription delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_subscriptions_and_commands_share_a_pool_of_one() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let store = initialized(config(&cluster).max_connections(1)).await;
    let commands = 60_u64;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut subscription = store.subscribe(ReadAllQuery::from_start());
        readers.push(tokio::spawn(async move {
            let mut received = 0_u64;
            while received < commands {
                match tokio::time::timeout(WAIT, subscription.next()).await {
                    Ok(Some(Ok(_))) => received += 1,
                    Ok(Some(Err(error))) => println!("subscription error: {error}"),
                    Ok(None) | Err(_) => break,
                }
            }
            received
        }));
    }
    // Let every subscription start listening before the commands.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut ok, mut failed) = (0_u64, 0_u64);
    for n in 0..commands {
        // A command: read the stream, then append at the version read.
        let id = stream(&format!("account-{}", n % 5));
        let outcome = async {
            let read = store.read_streams(std::slice::from_ref(&id)).await?;
            let version = read.versions.get(&id).unwrap_or(StreamVersion::INITIAL);
            store
                .append(AppendRequest::single(
                    id.clone(),
                    ExpectedVersion::Exact(version),
                    vec![event(json!({ "n": n }))],
                ))
                .await
        }
        .await;
        match outcome {
            Ok(_) => ok += 1,
            Err(error) => {
                failed += 1;
                println!("command {n} failed: {error}");
            }
        }
    }
    let mut delivered = Vec::new();
    for reader in readers {
        delivered.push(reader.await.unwrap());
    }
    println!("commands ok {ok}, failed {failed}; delivered per subscription {delivered:?}");
    assert_eq!(failed, 0);
    assert_eq!(delivered, [commands; 3]);
}

/// (e) Pause, resume and rebuild asked from another process (`psql`, as an
/// operator would) are carried out by the running leader; prints how long each took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_steers_the_leader_from_another_process() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let store = initialized(config(&cluster)).await;
    let poll = Duration::from_millis(200);
    for n in 0..10 {
        append_one(&store, "steered", n).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let projection = Counting::new(&seen);
    let resets = projection.1.clone();
    let handle = ProjectionRunner::new(store.clone(), projection, store.checkpoints())
        .with_leadership(store.leadership(Duration::from_millis(100)))
        .with_options(ProjectionOptions::default().poll_requests_every(poll))
        .start();
    wait_status(&handle, "caught up", |s| s.events_processed >= 10).await;
    let table = format!("\"{}\".eventcore_checkpoints", store.schema().as_str());
    let ask = |request: &str| {
        format!(
            "UPDATE {table} SET request = '{request}', requested_at = now() \
             WHERE projection = 'counting'"
        )
    };

    let asked = Instant::now();
    cluster.psql(&ask("pause")).await.unwrap();
    wait_status(&handle, "paused", |s| s.state == ProjectionState::Paused).await;
    let pause_took = asked.elapsed();
    for n in 10..15 {
        append_one(&store, "steered", n).await.unwrap();
    }
    let stored = cluster
        .psql(&format!(
            "SELECT status, request IS NULL FROM {table} WHERE projection = 'counting'"
        ))
        .await
        .unwrap();
    assert_eq!(
        stored.trim(),
        "paused|t",
        "the pause is stored and the request cleared"
    );
    assert_eq!(seen.lock().unwrap().len(), 10);

    let asked = Instant::now();
    cluster.psql(&ask("resume")).await.unwrap();
    wait_status(&handle, "resumed", |s| s.events_processed >= 15).await;
    let resume_took = asked.elapsed();

    let asked = Instant::now();
    cluster.psql(&ask("rebuild")).await.unwrap();
    let rebuilt = async {
        while store
            .checkpoints()
            .pending_request("counting")
            .await
            .unwrap()
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, rebuilt)
        .await
        .expect("the rebuild starts");
    wait_status(&handle, "rebuilt", |s| {
        s.state == ProjectionState::Running && s.events_processed == 15
    })
    .await;
    let rebuild_took = asked.elapsed();
    handle.stop().await.unwrap();
    let applied = seen.lock().unwrap().clone();
    println!(
        "request poll {poll:?}: pause carried out after {pause_took:?}, resume after \
         {resume_took:?}, rebuild (15 events) done after {rebuild_took:?}; applied {applied:?}"
    );
    assert_eq!(
        resets.load(Ordering::SeqCst),
        1,
        "the rebuild reset the read model"
    );
    assert_eq!(applied, (0..15).collect::<Vec<_>>());
}

/// The report tells the truth while a transaction left open holds delivery
/// back: the new events show as held back (not as lag 0 and nothing else),
/// with the holder's pid and age; once it ends they are lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_events_held_back_and_the_transaction_holding_them() {
    let cluster = ThrowawayCluster::start().await.unwrap();
    let store = initialized(config(&cluster)).await;
    for n in 0..3 {
        append_one(&store, "reported", n).await.unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle =
        ProjectionRunner::new(store.clone(), Counting::new(&seen), store.checkpoints()).start();
    wait_status(&handle, "caught up", |s| s.events_processed >= 3).await;
    handle.pause();
    wait_status(&handle, "paused", |s| s.state == ProjectionState::Paused).await;

    // A transaction left open, holding an id: the watermark stops below it.
    let mut holder = store.pool().acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *holder).await.unwrap();
    let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *holder)
        .await
        .unwrap();
    for n in 3..7 {
        append_one(&store, "reported", n).await.unwrap();
    }
    let report = store.checkpoints().report().await.unwrap();
    println!("while held: {report:?}");
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].lag, 0, "nothing deliverable yet");
    assert_eq!(report[0].held_back, 4);
    assert!(!report[0].counts_capped);
    let holding = report[0].holder.clone().expect("names the holder");
    assert_eq!(holding.pid, holder_pid);
    assert_eq!(holding.state, "idle in transaction");
    let watermark = store.watermark().await.unwrap();
    println!("watermark while held: {watermark:?}");
    assert_eq!(watermark.held_back.value, 4);
    assert!(watermark.held_back.exact);
    assert_eq!(watermark.holder.map(|h| h.pid), Some(holder_pid));

    sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
    let watermark = store.watermark().await.unwrap();
    assert_eq!(watermark.held_back.value, 0);
    assert_eq!(watermark.holder, None);
    let report = store.checkpoints().report().await.unwrap();
    println!("after the holder ended: {report:?}");
    assert_eq!((report[0].lag, report[0].held_back), (4, 0));
    assert_eq!(report[0].holder, None);
    handle.stop().await.unwrap();
}
