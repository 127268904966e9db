//! Group commit: appends queued while the writer is busy share one
//! transaction, and each keeps its own checks, key and result.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use eventcore::{
    AppendRequest, AppendResult, EventStore, ExpectedVersion, IdempotencyKey, StoreError, StreamId,
    StreamVersion,
};
use eventcore_postgres::{GroupCommit, PostgresEventStore, testing};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use support::{event, hold_row, lock_waiters, stream};

/// A store whose appends wait for one writer, so that what queues behind
/// a blocked append goes in the next batch, together.
async fn one_writer_store() -> PostgresEventStore {
    testing::store_with(
        support::fresh_config()
            .await
            .group_commit(GroupCommit::new().batches_in_flight(1)),
    )
    .await
    .unwrap()
}

/// Waits (bounded) until `ready` holds.
async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut ready: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ready().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_append(
    store: &PostgresEventStore,
    request: AppendRequest,
) -> tokio::task::JoinHandle<Result<AppendResult, StoreError>> {
    let store = store.clone();
    tokio::spawn(async move { store.append(request).await })
}

/// Gives each of `streams` its first event, `{"n": 1}`.
async fn open_streams(store: &PostgresEventStore, streams: &[&StreamId]) {
    for s in streams {
        store
            .append(AppendRequest::single(
                (*s).clone(),
                ExpectedVersion::NoStream,
                vec![event(json!({ "n": 1 }))],
            ))
            .await
            .unwrap();
    }
}

/// Occupies a one-writer store's writer: holds `lead`'s row from another
/// connection and starts `first`, an append to it, which waits on the row
/// until the holder closes. Appends started meanwhile queue, and go in
/// the writer's next batch together.
async fn occupy_writer(
    url: &str,
    store: &PostgresEventStore,
    lead: &StreamId,
    first: AppendRequest,
) -> (
    PgConnection,
    tokio::task::JoinHandle<Result<AppendResult, StoreError>>,
) {
    let holder = hold_row(url, store, lead).await;
    let first = spawn_append(store, first);
    let schema = store.schema().as_str().to_owned();
    let mut watcher = PgConnection::connect(url).await.unwrap();
    wait_until("the first append waits on the held row", async || {
        lock_waiters(&mut watcher, &schema, "eventcore_append").await > 0
    })
    .await;
    (holder, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_append_in_a_batch_fails_alone_and_its_neighbours_commit_together() {
    let url = testing::test_database_url().await.unwrap();
    let store = one_writer_store().await;
    let (held, stale, fresh_a, fresh_b, keyed) = (
        stream("held"),
        stream("stale"),
        stream("fresh-a"),
        stream("fresh-b"),
        stream("keyed"),
    );
    open_streams(&store, &[&held, &stale]).await;

    // The writer's first batch blocks on a held row...
    let (holder, first) = occupy_writer(
        &url,
        &store,
        &held,
        AppendRequest::single(
            held.clone(),
            ExpectedVersion::Exact(StreamVersion::new(1)),
            vec![event(json!({ "n": 2 }))],
        ),
    )
    .await;

    // ...while four appends queue behind it: one at a stale version.
    let key = IdempotencyKey::try_new("batch-key-1").unwrap();
    let refused = spawn_append(
        &store,
        AppendRequest::single(
            stale.clone(),
            ExpectedVersion::Exact(StreamVersion::new(7)),
            vec![event(json!({ "n": "never" }))],
        ),
    );
    let written_a = spawn_append(
        &store,
        AppendRequest::single(
            fresh_a.clone(),
            ExpectedVersion::NoStream,
            vec![event(json!({ "n": "a1" })), event(json!({ "n": "a2" }))],
        ),
    );
    let written_b = spawn_append(
        &store,
        AppendRequest::single(
            fresh_b.clone(),
            ExpectedVersion::NoStream,
            vec![event(json!({ "n": "b1" }))],
        ),
    );
    let keyed_request = AppendRequest::single(
        keyed.clone(),
        ExpectedVersion::NoStream,
        vec![event(json!({ "n": "k1" }))],
    )
    .with_idempotency_key(key.clone());
    let written_keyed = spawn_append(&store, keyed_request.clone());
    wait_until("four appends queue behind the blocked one", async || {
        store.appends_queued() == 4
    })
    .await;
    holder.close().await.unwrap();

    first.await.unwrap().unwrap();
    let refusal = refused.await.unwrap();
    let a = written_a.await.unwrap().unwrap();
    let b = written_b.await.unwrap().unwrap();
    let k = written_keyed.await.unwrap().unwrap();
    match refusal {
        Err(StoreError::Conflict { conflicts }) => {
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].stream_id, stale);
            assert_eq!(conflicts[0].actual, StreamVersion::new(1));
        }
        other => panic!("expected the stale append's conflict, got {other:?}"),
    }
    // The three neighbours committed in one transaction, each with its own result.
    let transactions: Vec<u64> = [&a, &b, &k]
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.position.transaction()))
        .collect();
    assert_eq!(transactions.len(), 4);
    assert!(
        transactions.iter().all(|t| *t == transactions[0]),
        "one transaction for the batch: {transactions:?}"
    );
    assert_eq!(a.versions.get(&fresh_a), Some(StreamVersion::new(2)));
    assert_eq!(b.versions.get(&fresh_b), Some(StreamVersion::new(1)));
    assert_eq!(k.versions.get(&keyed), Some(StreamVersion::new(1)));
    assert!(a.events.iter().all(|e| e.stream_id == fresh_a));
    for result in [&a, &b, &k] {
        let positions: Vec<_> = result.events.iter().map(|e| e.position).collect();
        assert!(
            positions
                .windows(2)
                .all(|w| w[0].sequence() + 1 == w[1].sequence()),
            "an append's events are numbered together, in its order: {positions:?}"
        );
    }

    // Nothing of the refused append; the key replays its own append's result.
    let read = store
        .read_streams(&[
            stale.clone(),
            fresh_a.clone(),
            fresh_b.clone(),
            keyed.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(read.version(&stale), StreamVersion::new(1));
    let mut stored: Vec<(String, serde_json::Value)> = read
        .events
        .iter()
        .map(|e| {
            let payload: serde_json::Value = e.payload.decode().unwrap();
            (e.stream_id.as_ref().to_owned(), payload["n"].clone())
        })
        .collect();
    // By stream; within a stream in version order, as read.
    stored.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        stored,
        [
            ("fresh-a".to_owned(), json!("a1")),
            ("fresh-a".to_owned(), json!("a2")),
            ("fresh-b".to_owned(), json!("b1")),
            ("keyed".to_owned(), json!("k1")),
            ("stale".to_owned(), json!(1)),
        ],
        "each append's own events, in order, and nothing of the refused one"
    );
    let replay = store.append(keyed_request).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.events, k.events);
    println!(
        "batch of 4: 1 refused (conflict), 3 committed in transaction {}, 0 lost",
        transactions[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_the_same_stream_never_share_a_batch() {
    let url = testing::test_database_url().await.unwrap();
    let store = one_writer_store().await;
    let (held, shared) = (stream("held"), stream("shared"));
    open_streams(&store, &[&held]).await;
    let (holder, first) = occupy_writer(
        &url,
        &store,
        &held,
        AppendRequest::single(held.clone(), ExpectedVersion::Any, vec![event(json!({}))]),
    )
    .await;
    // Three appends to one stream, any version: each must follow the other.
    let queued: Vec<_> = (0..3)
        .map(|n| {
            spawn_append(
                &store,
                AppendRequest::single(
                    shared.clone(),
                    ExpectedVersion::Any,
                    vec![event(json!({ "n": n }))],
                ),
            )
        })
        .collect();
    wait_until("three appends queue", async || store.appends_queued() == 3).await;
    holder.close().await.unwrap();
    first.await.unwrap().unwrap();
    let mut transactions = Vec::new();
    for append in queued {
        let result = append.await.unwrap().unwrap();
        transactions.push(result.events[0].position.transaction());
    }
    transactions.sort_unstable();
    transactions.dedup();
    assert_eq!(transactions.len(), 3, "one transaction each");
    let read = store
        .read_streams(std::slice::from_ref(&shared))
        .await
        .unwrap();
    let versions: Vec<u64> = read.events.iter().map(|e| e.version.value()).collect();
    assert_eq!(versions, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbours_lock_wait_limit_does_not_fail_an_append_without_one() {
    let url = testing::test_database_url().await.unwrap();
    let store = one_writer_store().await;
    let (lead, locked, free) = (stream("lead"), stream("locked"), stream("free"));
    open_streams(&store, &[&lead, &locked, &free]).await;
    let locked_holder = hold_row(&url, &store, &locked).await;
    let (lead_holder, first) = occupy_writer(
        &url,
        &store,
        &lead,
        AppendRequest::single(lead.clone(), ExpectedVersion::Any, vec![event(json!({}))]),
    )
    .await;
    // Batched together: one with a bound on lock waits, on a row that stays
    // locked, and one without a bound, on a free row.
    let bounded = spawn_append(
        &store,
        AppendRequest::single(
            locked.clone(),
            ExpectedVersion::Exact(StreamVersion::new(1)),
            vec![event(json!({ "n": "bounded" }))],
        )
        .with_max_lock_wait(Duration::from_millis(200)),
    );
    let unbounded = spawn_append(
        &store,
        AppendRequest::single(
            free.clone(),
            ExpectedVersion::Exact(StreamVersion::new(1)),
            vec![event(json!({ "n": "unbounded" }))],
        ),
    );
    wait_until("both queue", async || store.appends_queued() == 2).await;
    lead_holder.close().await.unwrap();
    first.await.unwrap().unwrap();

    let refused = bounded.await.unwrap();
    assert!(
        matches!(refused, Err(StoreError::Transient { .. })),
        "the bounded append gives up on the locked row: {refused:?}"
    );
    let written = unbounded.await.unwrap().unwrap();
    assert_eq!(written.versions.get(&free), Some(StreamVersion::new(2)));
    locked_holder.close().await.unwrap();
    let read = store
        .read_streams(&[locked.clone(), free.clone()])
        .await
        .unwrap();
    assert_eq!(read.version(&locked), StreamVersion::new(1));
    assert_eq!(read.version(&free), StreamVersion::new(2));
    println!("batch of 2, one past its lock wait limit: 1 refused (transient), 1 committed");
}

/// The group-commit metrics, read from a recorder of this thread: the test
/// runs on a runtime of this thread, so the writer tasks the store spawns
/// record into it too.
#[tokio::test(flavor = "current_thread")]
async fn batch_sizes_and_split_batches_are_measured() {
    use eventcore_postgres::telemetry::{GROUP_COMMIT_BATCH, GROUP_COMMIT_SPLIT};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let recorded = || {
        let (mut batches, mut splits) = (Vec::new(), 0);
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            match (key.key().name(), value) {
                (GROUP_COMMIT_BATCH, DebugValue::Histogram(sizes)) => {
                    batches.extend(sizes.into_iter().map(|s| s.into_inner()));
                }
                (GROUP_COMMIT_SPLIT, DebugValue::Counter(n)) => splits += n,
                _ => {}
            }
        }
        (batches, splits)
    };

    let url = testing::test_database_url().await.unwrap();
    let store = one_writer_store().await;
    let (lead, locked, free, other) = (
        stream("lead"),
        stream("locked"),
        stream("free"),
        stream("other"),
    );
    open_streams(&store, &[&lead, &locked, &free, &other]).await;

    // A batch of two that commits whole.
    let (lead_holder, first) = occupy_writer(
        &url,
        &store,
        &lead,
        AppendRequest::single(lead.clone(), ExpectedVersion::Any, vec![event(json!({}))]),
    )
    .await;
    let pair = [&free, &other].map(|s| {
        spawn_append(
            &store,
            AppendRequest::single(s.clone(), ExpectedVersion::Any, vec![event(json!({}))]),
        )
    });
    wait_until("both queue", async || store.appends_queued() == 2).await;
    lead_holder.close().await.unwrap();
    first.await.unwrap().unwrap();
    for append in pair {
        append.await.unwrap().unwrap();
    }
    assert_eq!(recorded(), (vec![2.0], 0), "one batch of 2, not split");

    // A batch of two that one append's lock wait limit splits.
    let locked_holder = hold_row(&url, &store, &locked).await;
    let (lead_holder, first) = occupy_writer(
        &url,
        &store,
        &lead,
        AppendRequest::single(lead.clone(), ExpectedVersion::Any, vec![event(json!({}))]),
    )
    .await;
    let bounded = spawn_append(
        &store,
        AppendRequest::single(locked.clone(), ExpectedVersion::Any, vec![event(json!({}))])
            .with_max_lock_wait(Duration::from_millis(200)),
    );
    let unbounded = spawn_append(
        &store,
        AppendRequest::single(free.clone(), ExpectedVersion::Any, vec![event(json!({}))]),
    );
    wait_until("both queue", async || store.appends_queued() == 2).await;
    lead_holder.close().await.unwrap();
    first.await.unwrap().unwrap();
    assert!(matches!(
        bounded.await.unwrap(),
        Err(StoreError::Transient { .. })
    ));
    unbounded.await.unwrap().unwrap();
    locked_holder.close().await.unwrap();
    let (batches, splits) = recorded();
    // A snapshot takes the histogram's values: these are the second batch's.
    assert_eq!(batches, vec![2.0], "another batch of 2");
    assert_eq!(splits, 1, "the second batch was split");
    println!("batches recorded: {batches:?}, split: {splits}");
}
