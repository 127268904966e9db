//! What the store holds or refuses: undecodable rows, a large append, NUL characters.

use super::{TestEvent, append_ok, created, markers, read_everything, read_one, stream, v};
use crate::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, GlobalPosition, NewEvent,
};

/// A stored event that does not fit the caller's type is a typed error naming it, and is not skipped.
pub async fn undecodable_event_is_a_typed_error<S: EventStore>(store: S) {
    let id = stream("mixed");
    let foreign = NewEvent::from_parts(
        EventType::try_new("legacy.Something").unwrap(),
        serde_json::json!({"completely": ["different", 1]}),
        EventMetadata::default(),
    )
    .unwrap();
    let written = append_ok(&store, &id, vec![created(1), foreign, created(3)]).await;
    let (events, _) = read_one(&store, &id).await;
    assert_eq!(events.len(), 3, "the undecodable event is still read");
    assert!(events[0].decode::<TestEvent>().is_ok());
    let error = events[1].decode::<TestEvent>().unwrap_err();
    assert_eq!(error.event_id, written.events[1].id);
    assert_eq!(error.stream_id, id);
    assert_eq!(error.version, v(2));
    assert_eq!(error.event_type.as_ref(), "legacy.Something");
    assert!(
        error
            .to_string()
            .contains(&written.events[1].id.to_string())
    );
    assert_eq!(
        events[1].payload.to_value().unwrap(),
        serde_json::json!({"completely": ["different", 1]}),
        "the raw payload is still available"
    );
}

/// One append of 10,000 events is written whole, in order, with contiguous
/// versions and UUIDv7 ids that increase in write order.
pub async fn ten_thousand_events_in_one_append<S: EventStore>(store: S) {
    const COUNT: u64 = 10_000;
    let id = stream("big");
    let events = (1..=COUNT).map(created).collect();
    let written = store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::NoStream,
            events,
        ))
        .await
        .unwrap();
    assert_eq!(written.events.len() as u64, COUNT);
    assert_eq!(written.versions.get(&id), Some(v(COUNT)));
    let (events, version) = read_one(&store, &id).await;
    assert_eq!(version, v(COUNT));
    assert_eq!(markers(&events), (1..=COUNT).collect::<Vec<_>>());
    assert!(events.iter().zip(1..).all(|(e, n)| e.version == v(n)));
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert!(events.iter().all(|e| e.id.as_uuid().get_version_num() == 7));
    assert!(
        events
            .windows(2)
            .all(|w| w[0].id.as_uuid() < w[1].id.as_uuid())
    );
    assert!(
        events
            .iter()
            .zip(&written.events)
            .all(|(e, w)| e.id == w.id)
    );
    let _: GlobalPosition = events[0].position;
}

/// Text the PostgreSQL adapter cannot store (U+0000) is refused before any store sees it.
pub async fn nul_characters_are_refused_before_the_store<S: EventStore>(store: S) {
    let payload = NewEvent::from_parts(
        EventType::try_new("conformance.Noted").unwrap(),
        serde_json::json!({"Noted": {"marker": 1, "text": "a\u{0}b"}}),
        EventMetadata::default(),
    );
    assert!(matches!(
        payload,
        Err(crate::EncodeError::NulCharacter {
            part: "payload",
            ..
        })
    ));
    let metadata = NewEvent::from_event(
        &TestEvent::Created { marker: 1 },
        EventMetadata::default().with_entry("k", "nul\u{0}"),
    );
    assert!(matches!(
        metadata,
        Err(crate::EncodeError::NulCharacter {
            part: "metadata",
            ..
        })
    ));
    assert!(read_everything(&store).await.is_empty());
}
