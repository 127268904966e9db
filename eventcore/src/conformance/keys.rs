//! Idempotency keys belong to one purpose.

use super::{created, read_one, stream};
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
