//! The behaviour every [`EventStore`] adapter must show, as a reusable test suite.
//!
//! Each case is a public `async fn` taking a fresh, empty store. Run them all
//! as `#[test]`s with [`conformance_tests!`](crate::conformance_tests),
//! giving it a factory that returns a future of a new, empty store. Each
//! test calls the factory once; stores must not share events.
//!
//! ```text
//! // In an adapter's tests/conformance.rs
//! eventcore::conformance_tests!(|| async { my_adapter::MyStore::connect_fresh().await });
//! ```
//!
//! Cases fail by panicking, like any test; the suite runs each on a
//! two-thread tokio runtime with a two-minute time limit.
// A test suite reports failure by panicking; nothing here runs in production.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashSet, future::Future, num::NonZeroUsize, sync::Arc, time::Duration};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

use crate::{
    AppendRequest, AppendResult, CausationId, CorrelationId, Event, EventMetadata, EventStore,
    EventType, ExpectedVersion, GlobalPosition, NewEvent, ReadAllQuery, RecordedEvent, StoreError,
    StreamAppend, StreamId, StreamVersion, UserId,
};

pub mod archive;
pub mod evolution;
mod keys;
mod order;
mod streams;

pub use keys::an_idempotency_key_is_refused_for_another_purpose;

pub use streams::{
    stream_pages_backwards_newest_first, stream_pages_filter_by_event_type,
    stream_pages_forwards_without_holes_or_duplicates,
    stream_pages_past_the_end_and_of_absent_streams,
};

pub use order::{
    a_commands_events_keep_the_order_it_emitted_them, an_event_order_must_match_the_streams_events,
    one_appends_events_keep_the_order_they_were_given,
};

/// How long one case may take before it fails.
pub const CASE_TIME_LIMIT: Duration = Duration::from_secs(120);

/// Runs one case on a fresh store from `factory`, on a two-thread runtime, within [`CASE_TIME_LIMIT`].
pub fn run<S, F, Fut, C, CFut>(factory: F, case: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = S>,
    C: FnOnce(S) -> CFut,
    CFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance case");
    runtime.block_on(async {
        let store = factory().await;
        tokio::time::timeout(CASE_TIME_LIMIT, case(store))
            .await
            .expect("the conformance case did not finish within its time limit");
    });
}

/// Generates one `#[test]` per conformance case, each on a fresh store from `$factory`.
///
/// `$factory` is an expression evaluating to a closure (or function) that
/// returns a future of a new, empty store. It is evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__conformance_cases!(
            $factory;
            absent_stream_reads_as_version_zero,
            append_then_read_back_is_equal,
            versions_are_contiguous_from_one,
            expected_any_accepts_every_version,
            expected_no_stream_accepts_only_absent_streams,
            expected_exact_accepts_only_that_version,
            conflict_on_one_stream_writes_nothing_to_any,
            conflict_names_every_conflicting_stream,
            moved_check_only_stream_fails_the_whole_append,
            check_only_stream_is_not_written,
            streams_are_isolated,
            multi_stream_read_is_in_global_order,
            read_all_pages_without_duplicates_or_holes,
            read_all_filters_by_event_type,
            subscription_catches_up_then_follows_live_appends,
            subscription_starts_after_its_position_and_filters,
            concurrent_appends_with_the_same_expectation_one_wins,
            concurrent_appends_to_disjoint_streams_all_succeed,
            undecodable_event_is_a_typed_error,
            ten_thousand_events_in_one_append,
            nul_characters_are_refused_before_the_store,
            an_idempotency_key_writes_once_and_replays_the_result,
            concurrent_appends_with_one_idempotency_key_write_once,
            snapshots_keep_the_one_reaching_furthest,
            read_streams_after_returns_only_later_events,
            read_from_snapshot_returns_the_snapshot_and_what_follows,
            snapshots_shorten_folds_without_changing_decisions,
            own_appends_keep_the_executors_snapshot_current,
            unusable_snapshots_are_ignored,
            one_appends_events_keep_the_order_they_were_given,
            an_event_order_must_match_the_streams_events,
            a_commands_events_keep_the_order_it_emitted_them,
            an_idempotency_key_is_refused_for_another_purpose,
            stream_pages_forwards_without_holes_or_duplicates,
            stream_pages_backwards_newest_first,
            stream_pages_past_the_end_and_of_absent_streams,
            stream_pages_filter_by_event_type,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run($factory, $crate::conformance::$case);
            }
        )*
    };
}

/// The event type the suite writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestEvent {
    /// A first kind of event.
    Created {
        /// Unique per event within a case.
        marker: u64,
    },
    /// A second kind, to test type filters.
    Noted {
        /// Unique per event within a case.
        marker: u64,
        /// Free text, including characters that need escaping.
        text: String,
    },
}

impl TestEvent {
    /// The event's marker.
    pub fn marker(&self) -> u64 {
        match self {
            Self::Created { marker } | Self::Noted { marker, .. } => *marker,
        }
    }
}

impl Event for TestEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Created { .. } => "conformance.Created",
            Self::Noted { .. } => "conformance.Noted",
        }
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).expect("a valid stream id")
}

fn created(marker: u64) -> NewEvent {
    NewEvent::from_event(&TestEvent::Created { marker }, EventMetadata::default()).unwrap()
}

fn noted(marker: u64) -> NewEvent {
    let text = format!("note {marker}: quotes ' \" ; -- ünïcødé");
    NewEvent::from_event(&TestEvent::Noted { marker, text }, EventMetadata::default()).unwrap()
}

fn markers(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.decode::<TestEvent>().unwrap().payload.marker())
        .collect()
}

fn v(n: u64) -> StreamVersion {
    StreamVersion::new(n)
}

async fn append<S: EventStore>(
    store: &S,
    streams: Vec<StreamAppend>,
) -> Result<AppendResult, StoreError> {
    store.append(AppendRequest::new(streams).unwrap()).await
}

async fn append_ok<S: EventStore>(store: &S, id: &StreamId, events: Vec<NewEvent>) -> AppendResult {
    store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::Any,
            events,
        ))
        .await
        .expect("an append with ExpectedVersion::Any succeeds")
}

async fn read_one<S: EventStore>(store: &S, id: &StreamId) -> (Vec<RecordedEvent>, StreamVersion) {
    let read = store.read_streams(std::slice::from_ref(id)).await.unwrap();
    let version = read.version(id);
    (read.events, version)
}

async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    store
        .read_all(&ReadAllQuery::from_start().page_size(NonZeroUsize::new(1_000_000).unwrap()))
        .await
        .unwrap()
}

fn expect_conflict(result: Result<AppendResult, StoreError>) -> Vec<crate::VersionConflict> {
    match result {
        Err(StoreError::Conflict { conflicts }) => conflicts,
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

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
    assert_eq!(written.versions.get(&id), Some(&v(2)));

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
    assert_eq!(result.versions.get(&checked), Some(&v(1)));
    assert_eq!(result.versions.get(&absent), Some(&v(0)));
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

/// Reading several streams returns their events in global order, each requested stream once.
pub async fn multi_stream_read_is_in_global_order<S: EventStore>(store: S) {
    let (a, b, c) = (stream("a"), stream("b"), stream("c"));
    append_ok(&store, &a, vec![created(1)]).await;
    append_ok(&store, &b, vec![created(2)]).await;
    append_ok(&store, &c, vec![created(3)]).await;
    append(
        &store,
        vec![
            StreamAppend::new(b.clone(), ExpectedVersion::Any, vec![created(4)]),
            StreamAppend::new(a.clone(), ExpectedVersion::Any, vec![created(5)]),
        ],
    )
    .await
    .unwrap();
    let read = store
        .read_streams(&[b.clone(), a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(markers(&read.events), vec![1, 2, 4, 5]);
    assert!(
        read.events
            .windows(2)
            .all(|w| w[0].position < w[1].position)
    );
    assert_eq!(read.versions.len(), 2);
    assert_eq!((read.version(&a), read.version(&b)), (v(2), v(2)));
}

/// Paging through the global order yields every event once, in increasing position, with no holes.
pub async fn read_all_pages_without_duplicates_or_holes<S: EventStore>(store: S) {
    let ids: Vec<StreamId> = (0..5).map(|i| stream(&format!("stream-{i}"))).collect();
    let mut written = Vec::new();
    let mut marker = 0;
    for round in 0..12_usize {
        let streams = (0..=round % 3)
            .map(|k| {
                let id = ids[(round + k) % ids.len()].clone();
                let events = (0..=(round + k) % 4)
                    .map(|_| {
                        marker += 1;
                        created(marker)
                    })
                    .collect();
                StreamAppend::new(id, ExpectedVersion::Any, events)
            })
            .collect();
        written.extend(append(&store, streams).await.unwrap().events);
    }
    written.sort_by_key(|e| e.position);
    let written_ids: Vec<_> = written.iter().map(|e| e.id).collect();

    let mut paged = Vec::new();
    let mut query = ReadAllQuery::from_start().page_size(NonZeroUsize::new(7).unwrap());
    loop {
        let page = store.read_all(&query).await.unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        query.after = last.position;
        paged.extend(page);
    }
    let paged_ids: Vec<_> = paged.iter().map(|e| e.id).collect();
    assert_eq!(
        paged_ids, written_ids,
        "every written event once, in position order"
    );
    assert!(paged.windows(2).all(|w| w[0].position < w[1].position));
    let unique: HashSet<_> = paged.iter().map(|e| e.position).collect();
    assert_eq!(unique.len(), paged.len());
    assert_eq!(read_everything(&store).await, paged);
}

/// A type filter returns only events of the named types, still in global order.
pub async fn read_all_filters_by_event_type<S: EventStore>(store: S) {
    let (a, b) = (stream("a"), stream("b"));
    append_ok(&store, &a, vec![created(1), noted(2), created(3)]).await;
    append_ok(&store, &b, vec![noted(4), noted(5), created(6)]).await;
    let noted_type = EventType::try_new("conformance.Noted").unwrap();
    let page = store
        .read_all(&ReadAllQuery::from_start().event_types([noted_type.clone()]))
        .await
        .unwrap();
    assert_eq!(markers(&page), vec![2, 4, 5]);
    assert!(page.iter().all(|e| e.event_type == noted_type));

    let small = ReadAllQuery::from_start()
        .event_types([noted_type.clone()])
        .page_size(NonZeroUsize::new(2).unwrap());
    let first = store.read_all(&small).await.unwrap();
    assert_eq!(markers(&first), vec![2, 4]);
    let rest = store
        .read_all(&ReadAllQuery {
            after: first[1].position,
            ..small.clone()
        })
        .await
        .unwrap();
    assert_eq!(markers(&rest), vec![5]);

    let unknown = ReadAllQuery::from_start().event_types([EventType::try_new("nope").unwrap()]);
    assert!(store.read_all(&unknown).await.unwrap().is_empty());
    let both = ReadAllQuery::from_start().event_types([
        noted_type,
        EventType::try_new("conformance.Created").unwrap(),
    ]);
    assert_eq!(store.read_all(&both).await.unwrap().len(), 6);
}

async fn next_within<S>(subscription: &mut S) -> RecordedEvent
where
    S: futures::Stream<Item = Result<RecordedEvent, StoreError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), subscription.next())
        .await
        .expect("the subscription delivers the next event")
        .expect("the subscription does not end")
        .expect("the subscription yields no error")
}

/// A subscription delivers stored events, then live appends, each exactly once and in order.
pub async fn subscription_catches_up_then_follows_live_appends<S: EventStore + Clone + 'static>(
    store: S,
) {
    let (a, b) = (stream("a"), stream("b"));
    append_ok(&store, &a, vec![created(1), created(2)]).await;
    append_ok(&store, &b, vec![created(3)]).await;

    let mut subscription = store.subscribe(ReadAllQuery::from_start());
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_within(&mut subscription).await);
    }
    assert_eq!(markers(&seen), vec![1, 2, 3]);

    // Live appends from another task while the subscriber is waiting.
    let writer = {
        let store = store.clone();
        let (a, b) = (a.clone(), b.clone());
        tokio::spawn(async move {
            for marker in 4..=9 {
                let id = if marker % 2 == 0 { &a } else { &b };
                append_ok(&store, id, vec![created(marker)]).await;
            }
        })
    };
    for _ in 4..=9 {
        seen.push(next_within(&mut subscription).await);
    }
    writer.await.unwrap();
    assert_eq!(markers(&seen), (1..=9).collect::<Vec<_>>());
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));

    // Nothing more than what was appended: the next event is one appended now.
    append_ok(&store, &a, vec![created(10)]).await;
    assert_eq!(markers(&[next_within(&mut subscription).await]), vec![10]);
    assert_eq!(read_everything(&store).await.len(), 10);
}

/// A subscription starts strictly after its position and honours its type filter, live too.
pub async fn subscription_starts_after_its_position_and_filters<S: EventStore + Clone + 'static>(
    store: S,
) {
    let a = stream("a");
    let written = append_ok(&store, &a, vec![created(1), noted(2), created(3), noted(4)]).await;
    let mut from_middle = store.subscribe(ReadAllQuery::after(written.events[1].position));
    assert_eq!(markers(&[next_within(&mut from_middle).await]), vec![3]);
    assert_eq!(markers(&[next_within(&mut from_middle).await]), vec![4]);

    let noted_type = EventType::try_new("conformance.Noted").unwrap();
    let mut only_noted = store.subscribe(ReadAllQuery::from_start().event_types([noted_type]));
    assert_eq!(markers(&[next_within(&mut only_noted).await]), vec![2]);
    assert_eq!(markers(&[next_within(&mut only_noted).await]), vec![4]);
    append_ok(&store, &a, vec![created(5), noted(6)]).await;
    assert_eq!(markers(&[next_within(&mut only_noted).await]), vec![6]);
    assert_eq!(markers(&[next_within(&mut from_middle).await]), vec![5]);
    assert_eq!(markers(&[next_within(&mut from_middle).await]), vec![6]);
}

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
    assert_eq!(written.versions.get(&id), Some(&v(COUNT)));
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

fn snapshot_at(
    key: &crate::SnapshotKey,
    state_version: u32,
    at: &[(&StreamId, u64)],
    state: serde_json::Value,
) -> crate::Snapshot {
    crate::Snapshot {
        key: key.clone(),
        state_version,
        versions: at.iter().map(|(id, n)| ((*id).clone(), v(*n))).collect(),
        state: crate::Payload::encode(&state).unwrap().unwrap(),
    }
}

/// A saved snapshot loads back equal; a save that reaches less far than the
/// stored one (same state version) is ignored, one that reaches further or
/// carries another state version replaces it; keys do not mix.
pub async fn snapshots_keep_the_one_reaching_furthest<S: EventStore>(store: S) {
    let (a, b) = (stream("snap-a"), stream("snap-b"));
    let key = crate::SnapshotKey::new("balances", &[a.clone(), b.clone()]);
    let reversed = crate::SnapshotKey::new("balances", &[b.clone(), a.clone()]);
    assert_eq!(store.load_snapshot(&key).await.unwrap(), None);

    let first = snapshot_at(&key, 1, &[(&a, 2), (&b, 1)], serde_json::json!({ "n": 3 }));
    store.save_snapshot(&first).await.unwrap();
    assert_eq!(
        store.load_snapshot(&key).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.load_snapshot(&reversed).await.unwrap(), None);

    let behind = snapshot_at(&key, 1, &[(&a, 1), (&b, 1)], serde_json::json!({ "n": 2 }));
    store.save_snapshot(&behind).await.unwrap();
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(first));

    let ahead = snapshot_at(&key, 1, &[(&a, 4), (&b, 3)], serde_json::json!({ "n": 7 }));
    store.save_snapshot(&ahead).await.unwrap();
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(ahead));

    let reshaped = snapshot_at(
        &key,
        2,
        &[(&a, 1), (&b, 0)],
        serde_json::json!(["new", "shape"]),
    );
    store.save_snapshot(&reshaped).await.unwrap();
    assert_eq!(store.load_snapshot(&key).await.unwrap(), Some(reshaped));
}

/// Reading after versions returns only the later events, in global order,
/// and every listed stream's current version, also when it is below the
/// version given.
pub async fn read_streams_after_returns_only_later_events<S: EventStore>(store: S) {
    let (a, b, absent) = (stream("after-a"), stream("after-b"), stream("after-none"));
    append_ok(&store, &a, vec![created(1), created(2)]).await;
    append_ok(&store, &b, vec![created(3)]).await;
    append_ok(&store, &a, vec![created(4)]).await;
    append_ok(&store, &b, vec![created(5)]).await;

    let after = [(a.clone(), v(1)), (b.clone(), v(1)), (absent.clone(), v(0))].into();
    let read = store.read_streams_after(&after).await.unwrap();
    assert_eq!(markers(&read.events), vec![2, 4, 5]);
    assert_eq!(read.version(&a), v(3));
    assert_eq!(read.version(&b), v(2));
    assert_eq!(read.version(&absent), v(0));
    assert_eq!(read.versions.len(), 3);

    let beyond = [(a.clone(), v(9))].into();
    let read = store.read_streams_after(&beyond).await.unwrap();
    assert!(read.events.is_empty());
    assert_eq!(
        read.version(&a),
        v(3),
        "the real version, below the one given"
    );
}

/// Reading from a snapshot returns the stored snapshot of the asked state
/// version and only the events after it; without one (or of another state
/// version), every event.
pub async fn read_from_snapshot_returns_the_snapshot_and_what_follows<S: EventStore>(store: S) {
    let (a, b) = (stream("from-snap-a"), stream("from-snap-b"));
    let streams = [a.clone(), b.clone()];
    let key = crate::SnapshotKey::new("pair", &streams);
    append_ok(&store, &a, vec![created(1), created(2)]).await;
    append_ok(&store, &b, vec![created(3)]).await;

    let (none, read) = store.read_from_snapshot(&key, 1, &streams).await.unwrap();
    assert_eq!(none, None);
    assert_eq!(markers(&read.events), vec![1, 2, 3]);
    assert_eq!((read.version(&a), read.version(&b)), (v(2), v(1)));

    let saved = snapshot_at(
        &key,
        1,
        &[(&a, 1), (&b, 1)],
        serde_json::json!({ "seen": 2 }),
    );
    store.save_snapshot(&saved).await.unwrap();
    append_ok(&store, &b, vec![created(4)]).await;
    append_ok(&store, &a, vec![created(5)]).await;

    let (found, read) = store.read_from_snapshot(&key, 1, &streams).await.unwrap();
    assert_eq!(found, Some(saved));
    assert_eq!(
        markers(&read.events),
        vec![2, 4, 5],
        "only after the snapshot, in global order"
    );
    assert_eq!((read.version(&a), read.version(&b)), (v(3), v(2)));

    let (other_version, read) = store.read_from_snapshot(&key, 2, &streams).await.unwrap();
    assert_eq!(other_version, None);
    assert_eq!(markers(&read.events), vec![1, 2, 3, 4, 5]);
}

/// A counter command that records how many events its executions folded.
struct CountingCommand {
    stream: StreamId,
    folded: Arc<std::sync::atomic::AtomicU64>,
    snapshots: bool,
}

impl crate::CommandStreams for CountingCommand {
    fn declared_streams(&self) -> Vec<StreamId> {
        vec![self.stream.clone()]
    }
}

impl crate::CommandLogic for CountingCommand {
    type State = u64;
    type Event = TestEvent;
    type Error = std::convert::Infallible;

    fn apply(&self, state: &mut u64, event: &crate::StoredEvent<TestEvent>) {
        self.folded
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            event.payload.marker(),
            *state,
            "events fold in version order"
        );
        *state += 1;
    }

    fn handle(
        &self,
        state: u64,
        _: &mut crate::HandleContext<'_, Self>,
    ) -> Result<crate::Writes<Self>, Self::Error> {
        let stream = crate::__private::declared(&self.stream);
        Ok(crate::Writes::new().emit(stream, TestEvent::Created { marker: state }))
    }

    fn snapshots(&self) -> Option<crate::SnapshotPolicy<u64>> {
        self.snapshots
            .then(|| crate::SnapshotPolicy::new("counting", 1).every(4))
    }
}

/// Runs the counting command `times` times; every decision must have seen
/// exactly the events before it (its marker equals its version minus one).
async fn count_up<S: EventStore>(
    executor: &crate::CommandExecutor<S>,
    command: &CountingCommand,
    times: u64,
) {
    for _ in 0..times {
        let result = executor
            .execute(command, crate::ExecutionOptions::default())
            .await
            .unwrap();
        assert_eq!(result.events.len(), 1);
    }
    let (events, version) = read_one(executor.store(), &command.stream).await;
    assert_eq!(markers(&events), (0..version.value()).collect::<Vec<_>>());
}

/// With snapshots the executor folds only the events after the newest
/// snapshot and decides exactly as without them.
pub async fn snapshots_shorten_folds_without_changing_decisions<S: EventStore>(store: S) {
    let executor = crate::CommandExecutor::new(store);
    let folded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let command = CountingCommand {
        stream: stream("snapshotted-counter"),
        folded: folded.clone(),
        snapshots: true,
    };
    count_up(&executor, &command, 40).await;
    let with_snapshots = folded.load(std::sync::atomic::Ordering::Relaxed);
    // Without snapshots: 0 + 1 + ... + 39 = 780 folds. With one every 4
    // events, each execution folds at most 4 events past the last one.
    assert!(
        with_snapshots <= 40 * 4,
        "{with_snapshots} events folded in 40 executions"
    );
    let key = crate::SnapshotKey::new("counting", std::slice::from_ref(&command.stream));
    let saved = executor
        .store()
        .load_snapshot(&key)
        .await
        .unwrap()
        .expect("a snapshot was saved");
    assert_eq!(saved.state_version, 1);
    assert!(saved.versions[&command.stream] >= v(36));
}

/// An executor folds its own new events into the state it decided on, so
/// its next command on the same streams reads nothing it wrote itself; what
/// another executor (another process) wrote meanwhile is still read and
/// folded, and every decision sees exactly the events before it.
pub async fn own_appends_keep_the_executors_snapshot_current<S: EventStore>(store: S) {
    use std::sync::atomic::Ordering::Relaxed;
    let store = Arc::new(store);
    let id = stream("self-current-counter");
    let counting = |folded: &Arc<std::sync::atomic::AtomicU64>| CountingCommand {
        stream: id.clone(),
        folded: folded.clone(),
        snapshots: true,
    };
    let (here_folded, there_folded) = (Arc::default(), Arc::default());
    let (here, there) = (counting(&here_folded), counting(&there_folded));
    let this_process = crate::CommandExecutor::new(store.clone());
    let other_process = crate::CommandExecutor::new(store.clone());

    count_up(&this_process, &here, 10).await;
    // One fold per execution: its own new event, never a read one.
    assert_eq!(here_folded.load(Relaxed), 10);

    count_up(&other_process, &there, 3).await;
    count_up(&this_process, &here, 5).await;
    // The 3 events written elsewhere are read and folded once, then 5 own ones.
    assert_eq!(here_folded.load(Relaxed), 10 + 3 + 5);
    let (_, version) = read_one(&store, &id).await;
    assert_eq!(version, v(18));

    // The store was given snapshots along the way (every 4 events).
    let key = crate::SnapshotKey::new("counting", std::slice::from_ref(&id));
    let saved = store
        .load_snapshot(&key)
        .await
        .unwrap()
        .expect("a snapshot was saved");
    assert!(
        saved.versions[&id] >= v(14),
        "stored snapshot at {}",
        saved.versions[&id]
    );
}

/// A snapshot that is undecodable, of another state version, or ahead of its
/// stream is ignored: the command folds from the start and decides right.
pub async fn unusable_snapshots_are_ignored<S: EventStore>(store: S) {
    // A fresh executor per planted snapshot: executors keep the snapshots
    // they saved in memory, and each plant must be loaded from the store.
    let store = Arc::new(store);
    let folded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let command = CountingCommand {
        stream: stream("distrusted-counter"),
        folded: folded.clone(),
        snapshots: true,
    };
    count_up(&crate::CommandExecutor::new(store.clone()), &command, 3).await;
    let key = crate::SnapshotKey::new("counting", std::slice::from_ref(&command.stream));
    let id = &command.stream;
    let planted = [
        snapshot_at(&key, 1, &[(id, 3)], serde_json::json!("not a number")),
        snapshot_at(&key, 7, &[(id, 4)], serde_json::json!(1_000)),
        snapshot_at(&key, 1, &[(id, 50)], serde_json::json!(1_000)),
    ];
    for (n, snapshot) in planted.iter().enumerate() {
        store.save_snapshot(snapshot).await.unwrap();
        let stored = store.load_snapshot(&key).await.unwrap();
        assert_eq!(stored.as_ref(), Some(snapshot), "snapshot {n} was planted");
        count_up(&crate::CommandExecutor::new(store.clone()), &command, 1).await;
        let (_, version) = read_one(&store, id).await;
        assert_eq!(version, v(4 + n as u64), "snapshot {n} was not trusted");
    }
}
