//! Versions and expected versions: what an append checks, and what it writes.

use super::{
    TestEvent, append, append_ok, created, expect_conflict, markers, read_everything, read_one,
    stream, v,
};
use crate::{
    AppendRequest, CausationId, CorrelationId, Event, EventMetadata, EventStore, ExpectedVersion,
    NewEvent, StreamAppend, StreamVersion, UserId,
};

/// An absent stream reads as no events at version 0, alone and beside others.
pub async fn absent_stream_reads_as_version_zero<S: EventStore>(store: S) {
    let (absent, present) = (stream("absent"), stream("present"));
    let (events, version) = read_one(&store, &absent).await;
    assert!(events.is_empty());
    assert_eq!(version, StreamVersion::INITIAL);

    append_ok(&store, &present, vec![created(1)]).await;
    let read = store
        .read_streams(&[absent.clone(), present.clone()])
        .await
        .unwrap();
    assert_eq!(
        read.versions.len(),
        2,
        "every requested stream has a version"
    );
    assert_eq!(read.version(&absent), v(0));
    assert_eq!(read.version(&present), v(1));
    assert_eq!(read.events.len(), 1);
}

/// What an append wrote reads back equal: ids, versions, positions, times, types, payloads, metadata.
pub async fn append_then_read_back_is_equal<S: EventStore>(store: S) {
    let id = stream("order-'; DROP TABLE events; --ü");
    let metadata = EventMetadata::default()
        .with_correlation_id(CorrelationId::new_v7())
        .with_causation_id(CausationId::from_uuid(uuid::Uuid::now_v7()))
        .with_user_id(UserId::try_new("alice").unwrap())
        .with_entry("source", "conformance")
        .with_entry(
            "nested",
            serde_json::json!({"a": [1, 2, {"b": null}], "big": u64::MAX}),
        );
    let sent = [
        TestEvent::Created { marker: 1 },
        TestEvent::Noted {
            marker: 2,
            text: "line\nbreak \t tab \u{1b} escape \"quoted\" \\ 🦀 ünïcødé".to_owned(),
        },
    ];
    let events: Vec<NewEvent> = sent
        .iter()
        .map(|e| NewEvent::from_event(e, metadata.clone()).unwrap())
        .collect();
    let written = store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::NoStream,
            events,
        ))
        .await
        .unwrap();
    assert_eq!(written.events.len(), 2);
    assert_eq!(written.versions.get(&id), Some(v(2)));

    let (read, version) = read_one(&store, &id).await;
    assert_eq!(version, v(2));
    assert_eq!(read.len(), 2);
    for ((stored, written), sent) in read.iter().zip(&written.events).zip(&sent) {
        assert_eq!(stored.id, written.id);
        assert_eq!(stored.stream_id, id);
        assert_eq!(stored.version, written.version);
        assert_eq!(stored.position, written.position);
        assert_eq!(stored.recorded_at, written.recorded_at);
        assert_eq!(stored.event_type.as_ref(), sent.event_type());
        assert_eq!(stored.metadata, metadata);
        assert_eq!(&stored.decode::<TestEvent>().unwrap().payload, sent);
    }
    assert_eq!(
        read[0].id.as_uuid().get_version_num(),
        7,
        "event ids are UUIDv7"
    );
    assert_ne!(read[0].id, read[1].id);
    assert!(read[0].position < read[1].position);
    assert_eq!(
        read_everything(&store).await,
        read,
        "read_all returns the same events"
    );
}

/// Versions start at 1 and grow by one per event, over single and multi-event appends.
pub async fn versions_are_contiguous_from_one<S: EventStore>(store: S) {
    let id = stream("counter");
    let mut expected_version = 0;
    for batch in [1_u64, 3, 1, 5, 2] {
        let events = (0..batch).map(|i| created(expected_version + i)).collect();
        let written = store
            .append(AppendRequest::single(
                id.clone(),
                ExpectedVersion::Exact(v(expected_version)),
                events,
            ))
            .await
            .unwrap();
        let versions: Vec<u64> = written.events.iter().map(|e| e.version.value()).collect();
        let wanted: Vec<u64> = (expected_version + 1..=expected_version + batch).collect();
        assert_eq!(versions, wanted);
        expected_version += batch;
    }
    let (events, version) = read_one(&store, &id).await;
    assert_eq!(version, v(expected_version));
    let versions: Vec<u64> = events.iter().map(|e| e.version.value()).collect();
    assert_eq!(versions, (1..=expected_version).collect::<Vec<_>>());
    assert_eq!(markers(&events), (0..expected_version).collect::<Vec<_>>());
}

/// `ExpectedVersion::Any` appends to absent and existing streams alike.
pub async fn expected_any_accepts_every_version<S: EventStore>(store: S) {
    let id = stream("any");
    for marker in 0..3 {
        let result = store
            .append(AppendRequest::single(
                id.clone(),
                ExpectedVersion::Any,
                vec![created(marker)],
            ))
            .await
            .unwrap();
        assert_eq!(result.events[0].version, v(marker + 1));
    }
}

/// `ExpectedVersion::NoStream` (and `Exact(0)`) succeed only while the stream has no events.
pub async fn expected_no_stream_accepts_only_absent_streams<S: EventStore>(store: S) {
    let id = stream("fresh");
    store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::NoStream,
            vec![created(1)],
        ))
        .await
        .unwrap();
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(v(0))] {
        let conflicts = expect_conflict(
            store
                .append(AppendRequest::single(
                    id.clone(),
                    expected,
                    vec![created(2)],
                ))
                .await,
        );
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].stream_id, id);
        assert_eq!(conflicts[0].expected, expected);
        assert_eq!(conflicts[0].actual, v(1));
    }
    let other = stream("other-fresh");
    store
        .append(AppendRequest::single(
            other,
            ExpectedVersion::Exact(v(0)),
            vec![created(3)],
        ))
        .await
        .expect("Exact(0) means the stream has no events");
    assert_eq!(read_one(&store, &id).await.1, v(1));
}

/// `ExpectedVersion::Exact(n)` succeeds only at version n, and a refusal names the actual version.
pub async fn expected_exact_accepts_only_that_version<S: EventStore>(store: S) {
    let id = stream("exact");
    append_ok(&store, &id, vec![created(1), created(2)]).await;
    for wrong in [0, 1, 3, 100] {
        let conflicts = expect_conflict(
            store
                .append(AppendRequest::single(
                    id.clone(),
                    ExpectedVersion::Exact(v(wrong)),
                    vec![created(9)],
                ))
                .await,
        );
        assert_eq!(
            conflicts,
            vec![crate::VersionConflict {
                stream_id: id.clone(),
                expected: ExpectedVersion::Exact(v(wrong)),
                actual: v(2),
            }]
        );
    }
    store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::Exact(v(2)),
            vec![created(3)],
        ))
        .await
        .unwrap();
    let (events, version) = read_one(&store, &id).await;
    assert_eq!(version, v(3));
    assert_eq!(
        markers(&events),
        vec![1, 2, 3],
        "refused appends wrote nothing"
    );
}

/// A conflict on one stream of a multi-stream append writes nothing to any stream.
pub async fn conflict_on_one_stream_writes_nothing_to_any<S: EventStore>(store: S) {
    let (a, b, c) = (stream("a"), stream("b"), stream("c"));
    append_ok(&store, &b, vec![created(1)]).await;
    let before = read_everything(&store).await;
    let conflicts = expect_conflict(
        append(
            &store,
            vec![
                StreamAppend::new(a.clone(), ExpectedVersion::NoStream, vec![created(2)]),
                StreamAppend::new(b.clone(), ExpectedVersion::NoStream, vec![created(3)]),
                StreamAppend::new(
                    c.clone(),
                    ExpectedVersion::Any,
                    vec![created(4), created(5)],
                ),
            ],
        )
        .await,
    );
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].stream_id, b);
    let read = store
        .read_streams(&[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    assert_eq!(read.version(&a), v(0));
    assert_eq!(read.version(&b), v(1));
    assert_eq!(read.version(&c), v(0));
    assert_eq!(
        read_everything(&store).await,
        before,
        "nothing was written anywhere"
    );
}

/// A refused append names every stream whose check failed, each with expected and actual versions.
pub async fn conflict_names_every_conflicting_stream<S: EventStore>(store: S) {
    let (a, b, c) = (stream("a"), stream("b"), stream("c"));
    append_ok(&store, &a, vec![created(1)]).await;
    append_ok(&store, &b, vec![created(2), created(3)]).await;
    let mut conflicts = expect_conflict(
        append(
            &store,
            vec![
                StreamAppend::new(a.clone(), ExpectedVersion::NoStream, vec![created(4)]),
                StreamAppend::new(b.clone(), ExpectedVersion::Exact(v(1)), vec![created(5)]),
                StreamAppend::new(c.clone(), ExpectedVersion::NoStream, vec![created(6)]),
            ],
        )
        .await,
    );
    conflicts.sort_by(|x, y| x.stream_id.cmp(&y.stream_id));
    assert_eq!(
        conflicts,
        vec![
            crate::VersionConflict {
                stream_id: a,
                expected: ExpectedVersion::NoStream,
                actual: v(1),
            },
            crate::VersionConflict {
                stream_id: b,
                expected: ExpectedVersion::Exact(v(1)),
                actual: v(2),
            },
        ]
    );
    assert_eq!(read_one(&store, &c).await.1, v(0));
}

/// A stream listed only as a check that has moved fails the whole append.
pub async fn moved_check_only_stream_fails_the_whole_append<S: EventStore>(store: S) {
    let (written, checked) = (stream("written"), stream("checked"));
    append_ok(&store, &checked, vec![created(1)]).await;
    let read = store
        .read_streams(&[written.clone(), checked.clone()])
        .await
        .unwrap();
    // Someone else moves the checked stream between our read and our write.
    append_ok(&store, &checked, vec![created(2)]).await;
    let conflicts = expect_conflict(
        append(
            &store,
            vec![
                StreamAppend::new(
                    written.clone(),
                    ExpectedVersion::Exact(read.version(&written)),
                    vec![created(3)],
                ),
                StreamAppend::check_only(
                    checked.clone(),
                    ExpectedVersion::Exact(read.version(&checked)),
                ),
            ],
        )
        .await,
    );
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].stream_id, checked);
    assert_eq!(conflicts[0].actual, v(2));
    assert_eq!(read_one(&store, &written).await.1, v(0));
}

/// A check-only stream that did not move lets the append through and is left unchanged.
pub async fn check_only_stream_is_not_written<S: EventStore>(store: S) {
    let (written, checked, absent) = (stream("written"), stream("checked"), stream("absent"));
    append_ok(&store, &checked, vec![created(1)]).await;
    let result = append(
        &store,
        vec![
            StreamAppend::new(written.clone(), ExpectedVersion::NoStream, vec![created(2)]),
            StreamAppend::check_only(checked.clone(), ExpectedVersion::Exact(v(1))),
            StreamAppend::check_only(absent.clone(), ExpectedVersion::NoStream),
        ],
    )
    .await
    .unwrap();
    assert_eq!(result.events.len(), 1);
    assert_eq!(result.events[0].stream_id, written);
    assert_eq!(result.versions.get(&checked), Some(v(1)));
    assert_eq!(result.versions.get(&absent), Some(v(0)));
    let read = store
        .read_streams(&[written.clone(), checked.clone(), absent.clone()])
        .await
        .unwrap();
    assert_eq!(read.version(&written), v(1));
    assert_eq!(read.version(&checked), v(1));
    assert_eq!(read.version(&absent), v(0));
    assert_eq!(markers(&read.events), vec![1, 2]);
}

/// Appends to one stream never show up in, or change the version of, another.
pub async fn streams_are_isolated<S: EventStore>(store: S) {
    let (a, b, prefix) = (stream("acct-1"), stream("acct-10"), stream("acct"));
    append_ok(&store, &a, vec![created(1), created(2)]).await;
    append_ok(&store, &b, vec![created(3)]).await;
    let (events_a, version_a) = read_one(&store, &a).await;
    let (events_b, version_b) = read_one(&store, &b).await;
    let (events_p, version_p) = read_one(&store, &prefix).await;
    assert_eq!((markers(&events_a), version_a), (vec![1, 2], v(2)));
    assert_eq!((markers(&events_b), version_b), (vec![3], v(1)));
    assert_eq!((events_p.len(), version_p), (0, v(0)));
    assert!(events_a.iter().all(|e| e.stream_id == a));
}
