//! Model-based property test: random multi-stream appends, reads and pages
//! against the in-memory store, each result compared with a plain reference model.

use std::{collections::BTreeMap, num::NonZeroUsize};

use eventcore::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, GlobalPosition, NewEvent,
    ReadAllQuery, StoreError, StreamAppend, StreamId, StreamVersion, VersionConflict,
    conformance::TestEvent,
};
use eventcore_memory::InMemoryEventStore;
use futures::executor::block_on;
use proptest::prelude::*;

const STREAMS: usize = 4;

#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    Exact(u64),
    /// The stream's current version, so that a good share of appends succeed.
    Current,
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, Expect, usize, bool)>),
    ReadStreams(Vec<usize>),
    ReadAll {
        after: usize,
        limit: usize,
        only_noted: Option<bool>,
    },
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        1 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        2 => (0_u64..6).prop_map(Expect::Exact),
        4 => Just(Expect::Current),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let part = (expect_strategy(), 0_usize..4, any::<bool>());
    prop_oneof![
        4 => proptest::collection::btree_map(0..STREAMS, part, 1..=STREAMS).prop_map(|parts| {
            Op::Append(parts.into_iter().map(|(s, (e, n, noted))| (s, e, n, noted)).collect())
        }),
        1 => proptest::collection::btree_set(0..STREAMS, 1..=STREAMS)
            .prop_map(|set| Op::ReadStreams(set.into_iter().collect())),
        1 => (0_usize..60, 1_usize..6, proptest::option::of(any::<bool>()))
            .prop_map(|(after, limit, only_noted)| Op::ReadAll { after, limit, only_noted }),
    ]
}

/// The reference: per-stream marker lists and the global log.
#[derive(Default)]
struct Model {
    streams: BTreeMap<usize, Vec<u64>>,
    /// (stream, marker, is a Noted event, position the store gave it)
    log: Vec<(usize, u64, bool, GlobalPosition)>,
    next_marker: u64,
}

impl Model {
    fn version(&self, stream: usize) -> u64 {
        self.streams.get(&stream).map_or(0, |s| s.len() as u64)
    }
}

fn stream_id(index: usize) -> StreamId {
    StreamId::try_new(format!("model-{index}")).unwrap()
}

fn event(marker: u64, noted: bool) -> NewEvent {
    let event = if noted {
        TestEvent::Noted {
            marker,
            text: format!("n{marker}"),
        }
    } else {
        TestEvent::Created { marker }
    };
    NewEvent::from_event(&event, EventMetadata::default()).unwrap()
}

fn marker(event: &eventcore::RecordedEvent) -> u64 {
    event.decode::<TestEvent>().unwrap().payload.marker()
}

fn run_append(
    store: &InMemoryEventStore,
    model: &mut Model,
    parts: &[(usize, Expect, usize, bool)],
) -> Result<(), TestCaseError> {
    let mut request = Vec::new();
    let mut expected_conflicts = Vec::new();
    let mut planned = Vec::new();
    for &(stream, expect, count, noted) in parts {
        let actual = model.version(stream);
        let expected = match expect {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::Exact(v) => ExpectedVersion::Exact(StreamVersion::new(v)),
            Expect::Current => ExpectedVersion::Exact(StreamVersion::new(actual)),
        };
        if !expected.accepts(StreamVersion::new(actual)) {
            expected_conflicts.push(VersionConflict {
                stream_id: stream_id(stream),
                expected,
                actual: StreamVersion::new(actual),
            });
        }
        let mut events = Vec::new();
        for _ in 0..count {
            model.next_marker += 1;
            events.push(event(model.next_marker, noted));
            planned.push((stream, model.next_marker, noted));
        }
        request.push(StreamAppend::new(stream_id(stream), expected, events));
    }
    let result = block_on(store.append(AppendRequest::new(request).unwrap()));
    if expected_conflicts.is_empty() {
        let written = result.map_err(|e| TestCaseError::fail(format!("append refused: {e}")))?;
        prop_assert_eq!(written.events.len(), planned.len());
        for (written, (stream, marker, noted)) in written.events.iter().zip(planned) {
            let markers = model.streams.entry(stream).or_default();
            markers.push(marker);
            prop_assert_eq!(&written.stream_id, &stream_id(stream));
            prop_assert_eq!(written.version.value(), markers.len() as u64);
            if let Some(last) = model.log.last() {
                prop_assert!(last.3 < written.position, "positions increase");
            }
            model.log.push((stream, marker, noted, written.position));
        }
        for &(stream, ..) in parts {
            prop_assert_eq!(
                written.versions.get(&stream_id(stream)).map(|v| v.value()),
                Some(model.version(stream))
            );
        }
    } else {
        match result {
            Err(StoreError::Conflict { mut conflicts }) => {
                conflicts.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
                expected_conflicts.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
                prop_assert_eq!(conflicts, expected_conflicts);
            }
            other => prop_assert!(false, "expected a conflict, got {:?}", other),
        }
    }
    Ok(())
}

fn check_read_streams(
    store: &InMemoryEventStore,
    model: &Model,
    streams: &[usize],
) -> Result<(), TestCaseError> {
    let ids: Vec<StreamId> = streams.iter().map(|&s| stream_id(s)).collect();
    let read = block_on(store.read_streams(&ids)).unwrap();
    let expected: Vec<u64> = model
        .log
        .iter()
        .filter(|(s, ..)| streams.contains(s))
        .map(|&(_, m, ..)| m)
        .collect();
    prop_assert_eq!(read.events.iter().map(marker).collect::<Vec<_>>(), expected);
    for &s in streams {
        prop_assert_eq!(read.version(&stream_id(s)).value(), model.version(s));
    }
    Ok(())
}

fn check_read_all(
    store: &InMemoryEventStore,
    model: &Model,
    after: usize,
    limit: usize,
    only_noted: Option<bool>,
) -> Result<(), TestCaseError> {
    let skip = after.min(model.log.len());
    let position = skip
        .checked_sub(1)
        .map_or(GlobalPosition::START, |i| model.log[i].3);
    let mut query = ReadAllQuery::after(position).page_size(NonZeroUsize::new(limit).unwrap());
    if let Some(noted) = only_noted {
        let name = if noted {
            "conformance.Noted"
        } else {
            "conformance.Created"
        };
        query = query.event_types([EventType::try_new(name).unwrap()]);
    }
    let page = block_on(store.read_all(&query)).unwrap();
    let expected: Vec<u64> = model.log[skip..]
        .iter()
        .filter(|(_, _, noted, _)| only_noted.is_none_or(|want| *noted == want))
        .take(limit)
        .map(|&(_, m, ..)| m)
        .collect();
    prop_assert_eq!(page.iter().map(marker).collect::<Vec<_>>(), expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memory_store_matches_the_reference_model(ops in proptest::collection::vec(op_strategy(), 1..60)) {
        let store = InMemoryEventStore::new();
        let mut model = Model::default();
        for op in &ops {
            match op {
                Op::Append(parts) => run_append(&store, &mut model, parts)?,
                Op::ReadStreams(streams) => check_read_streams(&store, &model, streams)?,
                Op::ReadAll { after, limit, only_noted } => {
                    check_read_all(&store, &model, *after, *limit, *only_noted)?;
                }
            }
        }
        let everything: Vec<usize> = (0..STREAMS).collect();
        check_read_streams(&store, &model, &everything)?;
        check_read_all(&store, &model, 0, usize::MAX >> 1, None)?;
    }
}
