//! Reading back: several streams in global order, pages of the global order, subscriptions.

use std::{collections::HashSet, num::NonZeroUsize, time::Duration};

use futures::StreamExt;

use super::{append, append_ok, created, markers, noted, read_everything, stream, v};
use crate::{
    EventStore, EventType, ExpectedVersion, ReadAllQuery, RecordedEvent, StoreError, StreamAppend,
    StreamId,
};

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
