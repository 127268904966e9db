//! Reading one stream a page at a time ([`EventStore::read_stream`]).

use std::num::NonZeroUsize;

use super::{append_ok, created, markers, noted, stream, v};
use crate::{Direction, EventStore, EventType, StreamId, StreamPage, StreamQuery};

fn size(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a page size above zero")
}

/// Every page of `query`, followed through [`StreamPage::next`].
async fn all_pages<S: EventStore>(store: &S, query: StreamQuery) -> Vec<StreamPage> {
    let mut pages = Vec::new();
    let mut next = Some(query);
    while let Some(query) = next {
        let page = store.read_stream(&query).await.unwrap();
        assert!(
            page.events.len() <= query.limit.get(),
            "a page holds at most its limit"
        );
        next = page.next.clone();
        pages.push(page);
        assert!(pages.len() <= 100, "paging ends");
    }
    pages
}

fn versions(pages: &[StreamPage]) -> Vec<u64> {
    pages
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.version.value()))
        .collect()
}

/// Ten events in `a` (markers 1..=10), interleaved with events in `b`.
async fn ten_events<S: EventStore>(store: &S) -> (StreamId, StreamId) {
    let (a, b) = (stream("paged-a"), stream("paged-b"));
    for marker in 1..=10 {
        append_ok(store, &a, vec![created(marker)]).await;
        append_ok(store, &b, vec![created(100 + marker)]).await;
    }
    (a, b)
}

/// Forwards pages of any size hold every event of the stream once, in
/// version order, and only that stream's; the last page says nothing follows.
pub async fn stream_pages_forwards_without_holes_or_duplicates<S: EventStore>(store: S) {
    let (a, _) = ten_events(&store).await;
    for page_size in [1, 3, 4, 10, 11] {
        let pages = all_pages(
            &store,
            StreamQuery::forwards(a.clone()).limit(size(page_size)),
        )
        .await;
        assert_eq!(
            versions(&pages),
            (1..=10).collect::<Vec<_>>(),
            "pages of {page_size}"
        );
        let events: Vec<_> = pages.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(markers(&events), (1..=10).collect::<Vec<_>>());
        assert!(pages.iter().all(|p| p.stream_version == v(10)));
        assert!(pages.last().unwrap().next.is_none());
    }
    let middle = store
        .read_stream(
            &StreamQuery::forwards(a.clone())
                .from_version(v(4))
                .limit(size(3)),
        )
        .await
        .unwrap();
    assert_eq!(versions(std::slice::from_ref(&middle)), [4, 5, 6]);
    assert_eq!(middle.next.map(|q| q.from), Some(Some(v(7))));
    let read = store.read_streams(std::slice::from_ref(&a)).await.unwrap();
    let whole = store.read_stream(&StreamQuery::forwards(a)).await.unwrap();
    assert_eq!(
        whole.events, read.events,
        "a page holds what read_streams reads"
    );
}

/// Backwards pages start from the newest event (or the version given) and
/// walk down to version 1; `last(n)` is the newest `n` events.
pub async fn stream_pages_backwards_newest_first<S: EventStore>(store: S) {
    let (a, _) = ten_events(&store).await;
    let last = store
        .read_stream(&StreamQuery::last(a.clone(), size(3)))
        .await
        .unwrap();
    assert_eq!(versions(std::slice::from_ref(&last)), [10, 9, 8]);
    assert_eq!(markers(&last.events), [10, 9, 8]);
    assert_eq!(last.stream_version, v(10));
    let next = last.next.expect("older events follow");
    assert_eq!(
        (next.direction, next.from),
        (Direction::Backwards, Some(v(7)))
    );
    for page_size in [1, 3, 10, 20] {
        let pages = all_pages(
            &store,
            StreamQuery::backwards(a.clone()).limit(size(page_size)),
        )
        .await;
        assert_eq!(
            versions(&pages),
            (1..=10).rev().collect::<Vec<_>>(),
            "pages of {page_size}"
        );
        assert!(pages.last().unwrap().next.is_none());
    }
    let from_five = all_pages(
        &store,
        StreamQuery::backwards(a).from_version(v(5)).limit(size(2)),
    )
    .await;
    assert_eq!(versions(&from_five), [5, 4, 3, 2, 1]);
}

/// Past the end of a stream a page is empty with nothing to follow; an
/// absent stream is an empty page at version 0; backwards from beyond the
/// end starts at the last event.
pub async fn stream_pages_past_the_end_and_of_absent_streams<S: EventStore>(store: S) {
    let (a, _) = ten_events(&store).await;
    let past = store
        .read_stream(&StreamQuery::forwards(a.clone()).from_version(v(11)))
        .await
        .unwrap();
    assert!(past.events.is_empty());
    assert_eq!((past.stream_version, past.next), (v(10), None));
    let beyond = store
        .read_stream(
            &StreamQuery::backwards(a.clone())
                .from_version(v(50))
                .limit(size(2)),
        )
        .await
        .unwrap();
    assert_eq!(versions(&[beyond]), [10, 9]);
    let exactly = store
        .read_stream(&StreamQuery::forwards(a).limit(size(10)))
        .await
        .unwrap();
    assert_eq!(exactly.events.len(), 10);
    assert!(
        exactly.next.is_none(),
        "a full page ending at the stream's version is the last"
    );
    for query in [
        StreamQuery::forwards(stream("paged-absent")),
        StreamQuery::backwards(stream("paged-absent")),
        StreamQuery::last(stream("paged-absent"), size(5)),
    ] {
        let page = store.read_stream(&query).await.unwrap();
        assert!(page.events.is_empty());
        assert_eq!((page.stream_version, page.next), (v(0), None));
    }
}

/// A type filter returns only events of the wanted types, the limit
/// counting only those, in both directions, without holes.
pub async fn stream_pages_filter_by_event_type<S: EventStore>(store: S) {
    let a = stream("paged-typed");
    let mut events = Vec::new();
    for marker in 1..=12 {
        events.push(if marker % 3 == 0 {
            noted(marker)
        } else {
            created(marker)
        });
    }
    append_ok(&store, &a, events).await;
    let noted_type = EventType::try_new("conformance.Noted").unwrap();
    let forwards = all_pages(
        &store,
        StreamQuery::forwards(a.clone())
            .limit(size(2))
            .event_types([noted_type.clone()]),
    )
    .await;
    let found: Vec<_> = forwards.iter().flat_map(|p| p.events.clone()).collect();
    assert_eq!(markers(&found), [3, 6, 9, 12]);
    assert!(
        forwards[0].events.len() == 2,
        "the limit counts wanted events only"
    );
    let backwards = all_pages(
        &store,
        StreamQuery::last(a.clone(), size(3)).event_types([noted_type]),
    )
    .await;
    let found: Vec<_> = backwards.iter().flat_map(|p| p.events.clone()).collect();
    assert_eq!(markers(&found), [12, 9, 6, 3]);
    let none = store
        .read_stream(
            &StreamQuery::forwards(a)
                .event_types([EventType::try_new("conformance.Other").unwrap()]),
        )
        .await
        .unwrap();
    assert!(none.events.is_empty());
    assert_eq!((none.stream_version, none.next), (v(12), None));
}
