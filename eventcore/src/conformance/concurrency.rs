//! Appends racing each other: one of two with the same expectation wins; disjoint ones all do.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::{append, append_ok, created, markers, read_everything, read_one, stream, v};
use crate::{AppendRequest, EventStore, ExpectedVersion, StoreError, StreamAppend};

/// Of N concurrent appends expecting the same version, exactly one is written.
pub async fn concurrent_appends_with_the_same_expectation_one_wins<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    const TASKS: u64 = 8;
    let contested = stream("contested");
    append_ok(&store, &contested, vec![created(0)]).await;
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let tasks: Vec<_> = (1..=TASKS)
        .map(|task| {
            let (store, barrier, contested) = (store.clone(), barrier.clone(), contested.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                append(
                    &store,
                    vec![
                        StreamAppend::new(
                            contested,
                            ExpectedVersion::Exact(v(1)),
                            vec![created(task)],
                        ),
                        StreamAppend::new(
                            stream(&format!("own-{task}")),
                            ExpectedVersion::NoStream,
                            vec![created(100 + task)],
                        ),
                    ],
                )
                .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (task, handle) in (1..=TASKS).zip(tasks) {
        match handle.await.unwrap() {
            Ok(_) => winners.push(task),
            Err(StoreError::Conflict { conflicts }) => {
                assert_eq!(conflicts.len(), 1);
                assert_eq!(conflicts[0].stream_id, contested);
                assert_eq!(conflicts[0].actual, v(2));
            }
            Err(other) => panic!("expected success or a conflict, got {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one append wins: {winners:?}");
    let winner = winners[0];
    let (events, version) = read_one(&store, &contested).await;
    assert_eq!(version, v(2));
    assert_eq!(markers(&events), vec![0, winner]);
    for task in 1..=TASKS {
        let (_, own_version) = read_one(&store, &stream(&format!("own-{task}"))).await;
        assert_eq!(own_version, v(u64::from(task == winner)), "own-{task}");
    }
}

/// Concurrent appends to disjoint streams never conflict with each other.
pub async fn concurrent_appends_to_disjoint_streams_all_succeed<S: EventStore + Clone + 'static>(
    store: S,
) {
    const TASKS: u64 = 8;
    const APPENDS: u64 = 25;
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let id = stream(&format!("disjoint-{task}"));
                barrier.wait().await;
                for n in 0..APPENDS {
                    store
                        .append(AppendRequest::single(
                            id.clone(),
                            ExpectedVersion::Exact(v(n)),
                            vec![created(task * 1000 + n)],
                        ))
                        .await
                        .unwrap_or_else(|e| panic!("append {n} of task {task} failed: {e}"));
                }
            })
        })
        .collect();
    for handle in tasks {
        handle.await.unwrap();
    }
    for task in 0..TASKS {
        let (events, version) = read_one(&store, &stream(&format!("disjoint-{task}"))).await;
        assert_eq!(version, v(APPENDS));
        assert_eq!(
            markers(&events),
            (0..APPENDS).map(|n| task * 1000 + n).collect::<Vec<_>>()
        );
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len() as u64, TASKS * APPENDS);
}
