//! Idempotency keys: an append is written once, and a key belongs to one purpose.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::{created, markers, read_everything, read_one, stream, v};
use crate::{AppendRequest, EventStore, ExpectedVersion, IdempotencyKey, KeyPurpose, StoreError};

/// A key recorded for one command is refused for another (a different type
/// or other streams): the append writes nothing and the lookup says why,
/// instead of replaying a result that belongs to another command.
pub async fn an_idempotency_key_is_refused_for_another_purpose<S: EventStore>(store: S) {
    let key = IdempotencyKey::try_new("order-7/payment").unwrap();
    let (paid, other) = (stream("order-7"), stream("order-8"));
    let pay = KeyPurpose::new("shop::Pay", std::slice::from_ref(&paid));
    let refund = KeyPurpose::new("shop::Refund", std::slice::from_ref(&paid));
    let request = |stream_id: &crate::StreamId, purpose: &KeyPurpose| {
        AppendRequest::single(stream_id.clone(), ExpectedVersion::Any, vec![created(1)])
            .with_idempotency_key(key.clone())
            .with_key_purpose(purpose.clone())
    };
    let first = store.append(request(&paid, &pay)).await.unwrap();
    assert!(!first.replayed);

    let same = store.append(request(&paid, &pay)).await.unwrap();
    assert!(same.replayed, "the same purpose replays");

    for (stream_id, purpose) in [
        (&paid, refund.clone()),
        (
            &other,
            KeyPurpose::new("shop::Pay", std::slice::from_ref(&other)),
        ),
    ] {
        let refused = store
            .append(request(stream_id, &purpose))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::KeyReused { recorded, .. } if recorded == &pay),
            "{refused:?}"
        );
        let looked_up = store
            .idempotent_result(&key, Some(&purpose))
            .await
            .unwrap_err();
        assert!(
            matches!(looked_up, StoreError::KeyReused { .. }),
            "{looked_up:?}"
        );
    }
    let (events, _) = read_one(&store, &paid).await;
    assert_eq!(events.len(), 1, "written once");
    let (events, _) = read_one(&store, &other).await;
    assert!(events.is_empty(), "nothing written for the refused purpose");
    assert!(
        store
            .idempotent_result(&key, Some(&pay))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store.idempotent_result(&key, None).await.unwrap().is_some(),
        "a lookup without a purpose is not checked"
    );
}

fn idempotency_key(name: &str) -> crate::IdempotencyKey {
    crate::IdempotencyKey::try_new(name).expect("a valid idempotency key")
}

/// An append with a recorded key writes nothing and returns the first
/// append's result, even when its own expectations no longer hold.
pub async fn an_idempotency_key_writes_once_and_replays_the_result<S: EventStore>(store: S) {
    let s = stream("keyed");
    let key = idempotency_key("payment-42");
    assert_eq!(store.idempotent_result(&key, None).await.unwrap(), None);
    let request = || {
        AppendRequest::single(s.clone(), ExpectedVersion::NoStream, vec![created(1)])
            .with_idempotency_key(key.clone())
    };
    let first = store.append(request()).await.unwrap();
    assert!(!first.replayed);
    let again = store.append(request()).await.unwrap();
    assert!(again.replayed, "the second append is a replay");
    assert_eq!(again.events, first.events);
    assert_eq!(again.versions, first.versions);
    let (events, version) = read_one(&store, &s).await;
    assert_eq!((markers(&events), version), (vec![1], v(1)), "written once");
    let recorded = store
        .idempotent_result(&key, None)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(recorded.events, first.events);

    // Another key is another append, with its own version check.
    let other = store
        .append(
            AppendRequest::single(s.clone(), ExpectedVersion::NoStream, vec![created(2)])
                .with_idempotency_key(idempotency_key("payment-43")),
        )
        .await;
    assert!(
        matches!(other, Err(StoreError::Conflict { .. })),
        "{other:?}"
    );
    // A conflicting append records nothing under its key.
    assert_eq!(
        store
            .idempotent_result(&idempotency_key("payment-43"), None)
            .await
            .unwrap(),
        None
    );
}

/// Tasks racing with one key: exactly one append is written, and every
/// task that succeeds gets its result.
pub async fn concurrent_appends_with_one_idempotency_key_write_once<
    S: EventStore + Clone + 'static,
>(
    store: S,
) {
    const TASKS: u64 = 8;
    let key = idempotency_key("shared-key");
    let barrier = Arc::new(Barrier::new(TASKS as usize));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                loop {
                    let request = AppendRequest::single(
                        stream(&format!("keyed-{task}")),
                        ExpectedVersion::Any,
                        vec![created(task)],
                    )
                    .with_idempotency_key(key.clone());
                    match store.append(request).await {
                        Ok(result) => return result,
                        // Nothing was written: try again, as an executor would.
                        Err(error) if error.is_retryable() => tokio::task::yield_now().await,
                        Err(other) => panic!("a keyed append failed: {other}"),
                    }
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in tasks {
        results.push(handle.await.unwrap());
    }
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 1, "one key, one append: {:?}", markers(&all));
    for result in &results {
        assert_eq!(result.events.len(), 1);
        assert_eq!(
            result.events[0].id, all[0].id,
            "every task sees the one append"
        );
    }
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
}
