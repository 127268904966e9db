//! The order of one append's events: the order they were emitted in.

use super::{TestEvent, created, markers, read_everything, read_one, stream, v};
use crate::{AppendRequest, EventStore, ExpectedVersion, InvalidAppend, StreamAppend, StreamId};

/// The events of one append take the global order they were given in
/// across streams (not stream by stream); each stream's versions stay
/// contiguous, and the result lists the events in that order too.
pub async fn one_appends_events_keep_the_order_they_were_given<S: EventStore>(store: S) {
    let (a, b) = (stream("order-a"), stream("order-b"));
    store
        .append(AppendRequest::single(
            b.clone(),
            ExpectedVersion::NoStream,
            vec![created(0)],
        ))
        .await
        .unwrap();
    // Listed a, b (stream-id order); given b, a, b, a.
    let request = AppendRequest::new([
        StreamAppend::new(
            a.clone(),
            ExpectedVersion::NoStream,
            vec![created(2), created(4)],
        ),
        StreamAppend::new(
            b.clone(),
            ExpectedVersion::Exact(v(1)),
            vec![created(1), created(3)],
        ),
    ])
    .unwrap()
    .with_event_order(vec![1, 0, 1, 0])
    .unwrap();
    let result = store.append(request).await.unwrap();
    let written: Vec<(StreamId, u64)> = result
        .events
        .iter()
        .map(|e| (e.stream_id.clone(), e.version.value()))
        .collect();
    assert_eq!(
        written,
        [
            (b.clone(), 2),
            (a.clone(), 1),
            (b.clone(), 3),
            (a.clone(), 2)
        ]
    );
    assert!(
        result
            .events
            .windows(2)
            .all(|w| w[0].position < w[1].position),
        "the result lists the events in global order"
    );
    assert_eq!(markers(&read_everything(&store).await), [0, 1, 2, 3, 4]);
    let (events, version) = read_one(&store, &a).await;
    assert_eq!((markers(&events), version), (vec![2, 4], v(2)));
    let (events, version) = read_one(&store, &b).await;
    assert_eq!((markers(&events), version), (vec![0, 1, 3], v(3)));
}

/// An order that does not give every stream exactly its events is refused.
pub async fn an_event_order_must_match_the_streams_events<S: EventStore>(_store: S) {
    let request = || {
        AppendRequest::new([
            StreamAppend::new(stream("o-a"), ExpectedVersion::Any, vec![created(1)]),
            StreamAppend::new(
                stream("o-b"),
                ExpectedVersion::Any,
                vec![created(2), created(3)],
            ),
        ])
        .unwrap()
    };
    for bad in [vec![0, 0, 1], vec![0, 1], vec![0, 1, 1, 1], vec![0, 1, 2]] {
        assert!(
            matches!(
                request().with_event_order(bad.clone()),
                Err(InvalidAppend::EventOrder { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(request().with_event_order(vec![1, 0, 1]).is_ok());
}

/// Two streams whose ids sort the other way round from the order a command
/// writes them in.
struct MoveMarker {
    from: StreamId,
    to: StreamId,
}

impl crate::CommandStreams for MoveMarker {
    fn declared_streams(&self) -> Vec<StreamId> {
        vec![self.from.clone(), self.to.clone()]
    }
}

impl crate::CommandLogic for MoveMarker {
    type State = ();
    type Event = TestEvent;
    type Error = std::convert::Infallible;

    fn apply(&self, _: &mut (), _: &crate::StoredEvent<TestEvent>) {}

    fn handle(
        &self,
        _: (),
        _: &mut crate::HandleContext<'_, Self>,
    ) -> Result<crate::Writes<Self>, Self::Error> {
        let from = crate::__private::declared(&self.from);
        let to = crate::__private::declared(&self.to);
        Ok(crate::Writes::new()
            .emit(from.clone(), TestEvent::Created { marker: 1 })
            .emit(to, TestEvent::Created { marker: 2 })
            .emit(from, TestEvent::Created { marker: 3 }))
    }
}

/// A command's events reach the global order (and its result) in the order
/// it emitted them, whatever its streams' ids.
pub async fn a_commands_events_keep_the_order_it_emitted_them<S: EventStore>(store: S) {
    let executor = crate::CommandExecutor::new(store);
    let command = MoveMarker {
        from: stream("zz-from"),
        to: stream("aa-to"),
    };
    let result = executor
        .execute(&command, crate::ExecutionOptions::default())
        .await
        .unwrap();
    let order: Vec<&str> = result.events.iter().map(|e| e.stream_id.as_ref()).collect();
    assert_eq!(order, ["zz-from", "aa-to", "zz-from"]);
    assert_eq!(markers(&read_everything(executor.store()).await), [1, 2, 3]);
}
