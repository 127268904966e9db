//! Reading one stream a page at a time: from a version, forwards or
//! backwards, optionally only some event types.

use std::num::NonZeroUsize;

use crate::{DEFAULT_PAGE_SIZE, EventType, RecordedEvent, StreamId, StreamVersion};

/// Which way a [`StreamQuery`] walks its stream.
///
/// ```
/// use eventcore::{Direction, StreamId, StreamQuery};
///
/// let newest_first = StreamQuery::backwards(StreamId::try_new("account-1")?);
/// assert_eq!(newest_first.direction, Direction::Backwards);
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// From older to newer events (ascending versions).
    #[default]
    Forwards,
    /// From newer to older events (descending versions): the last events first.
    Backwards,
}

/// What [`EventStore::read_stream`](crate::EventStore::read_stream) reads:
/// one page of one stream.
///
/// Pages never hold an event twice or skip one: continue with the query in
/// [`StreamPage::next`] until it is `None`.
///
/// ```
/// use std::num::NonZeroUsize;
/// use eventcore::{Direction, StreamId, StreamQuery, StreamVersion};
///
/// let account = StreamId::try_new("account-1")?;
/// // The whole stream, 100 events a page.
/// let all = StreamQuery::forwards(account.clone()).limit(NonZeroUsize::new(100).unwrap());
/// assert_eq!(all.from, None);
/// // The last 10 events, newest first.
/// let last = StreamQuery::last(account.clone(), NonZeroUsize::new(10).unwrap());
/// assert_eq!(last.direction, Direction::Backwards);
/// // From version 50 on.
/// let later = StreamQuery::forwards(account).from_version(StreamVersion::new(50));
/// assert_eq!(later.from, Some(StreamVersion::new(50)));
/// # Ok::<(), eventcore::InvalidStreamId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamQuery {
    /// The stream to read.
    pub stream_id: StreamId,
    /// The first version to return, included: forwards the lowest (`None`:
    /// from the first event), backwards the highest (`None`: from the last).
    pub from: Option<StreamVersion>,
    /// Which way to walk.
    pub direction: Direction,
    /// At most this many events (of the wanted types) per page.
    pub limit: NonZeroUsize,
    /// Only events of these (current) type names; `None` for all.
    pub event_types: Option<Vec<EventType>>,
}

impl StreamQuery {
    /// The stream from its first event on, [`DEFAULT_PAGE_SIZE`] a page.
    pub fn forwards(stream_id: StreamId) -> Self {
        Self {
            stream_id,
            from: None,
            direction: Direction::Forwards,
            limit: DEFAULT_PAGE_SIZE,
            event_types: None,
        }
    }

    /// The stream from its last event back, [`DEFAULT_PAGE_SIZE`] a page.
    pub fn backwards(stream_id: StreamId) -> Self {
        Self {
            direction: Direction::Backwards,
            ..Self::forwards(stream_id)
        }
    }

    /// The last `count` events of the stream, newest first.
    pub fn last(stream_id: StreamId, count: NonZeroUsize) -> Self {
        Self::backwards(stream_id).limit(count)
    }

    /// Starts at `version` (included), whichever the direction.
    #[must_use]
    pub fn from_version(mut self, version: StreamVersion) -> Self {
        self.from = Some(version);
        self
    }

    /// Returns at most `limit` events per page.
    #[must_use]
    pub fn limit(mut self, limit: NonZeroUsize) -> Self {
        self.limit = limit;
        self
    }

    /// Returns only events of these types (current names, see
    /// [`upcast`](crate::upcast)); the limit counts only those.
    #[must_use]
    pub fn event_types(mut self, types: impl IntoIterator<Item = EventType>) -> Self {
        self.event_types = Some(types.into_iter().collect());
        self
    }

    /// Whether an event of type `event_type` belongs in the page.
    pub fn wants(&self, event_type: &EventType) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.contains(event_type))
    }

    /// Whether the stream version `version` lies where this query reads
    /// (at or past `from` in its direction).
    pub fn reaches(&self, version: StreamVersion) -> bool {
        match (self.direction, self.from) {
            (_, None) => true,
            (Direction::Forwards, Some(from)) => version >= from,
            (Direction::Backwards, Some(from)) => version <= from,
        }
    }

    /// The query for what comes after `last`, the final event of a page;
    /// `None` when nothing can: backwards past version 1.
    pub fn after(&self, last: &RecordedEvent) -> Option<Self> {
        let from = match self.direction {
            Direction::Forwards => StreamVersion::new(last.version.value().saturating_add(1)),
            Direction::Backwards => match last.version.value() {
                0 | 1 => return None,
                n => StreamVersion::new(n - 1),
            },
        };
        Some(Self {
            from: Some(from),
            ..self.clone()
        })
    }

    /// The page for `events`, read for this query from a stream at version
    /// `stream_version`: adapters build their answer with it, so every
    /// store says alike when a stream has more to read.
    pub fn page(&self, events: Vec<RecordedEvent>, stream_version: StreamVersion) -> StreamPage {
        let next = match events.last() {
            // A short page means the stream (in this direction) is done.
            Some(last) if events.len() >= self.limit.get() => {
                self.after(last).filter(|next| match self.direction {
                    Direction::Forwards => next.from.is_none_or(|f| f <= stream_version),
                    Direction::Backwards => true,
                })
            }
            _ => None,
        };
        StreamPage {
            events,
            stream_version,
            next,
        }
    }
}

/// One page of one stream, from
/// [`EventStore::read_stream`](crate::EventStore::read_stream).
///
/// Paging through a stream, ten events at a time:
///
/// ```
/// use std::num::NonZeroUsize;
/// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamId, StreamQuery};
/// use eventcore_memory::InMemoryEventStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamId::try_new("sensor-9")?;
/// let read = EventType::try_new("Read")?;
/// let events = (0..25)
///     .map(|n| NewEvent::from_parts(read.clone(), serde_json::json!({ "n": n }), EventMetadata::default()))
///     .collect::<Result<Vec<_>, _>>()?;
/// store.append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, events)).await?;
///
/// let mut query = Some(StreamQuery::forwards(stream).limit(NonZeroUsize::new(10).unwrap()));
/// let mut seen = 0;
/// while let Some(next) = query {
///     let page = store.read_stream(&next).await?;
///     seen += page.events.len();
///     query = page.next;
/// }
/// assert_eq!(seen, 25);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPage {
    /// The events, in the query's direction (versions ascending forwards,
    /// descending backwards), at most its limit.
    pub events: Vec<RecordedEvent>,
    /// The stream's version when the page was read (0: no such stream).
    pub stream_version: StreamVersion,
    /// The query for the next page, or `None` when this page reached the
    /// end of the stream (forwards) or its first event (backwards).
    ///
    /// A full page may be followed by an empty one (the stream ended
    /// exactly there, or no later event is of a wanted type).
    pub next: Option<StreamQuery>,
}
