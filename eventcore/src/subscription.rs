//! Following the global order: catch up, then live appends.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use futures::{Stream, StreamExt, stream::BoxStream};

use crate::{EventStore, GlobalPosition, ReadAllQuery, RecordedEvent, StoreError};

/// A live, ordered stream of events from the global order.
///
/// Yields every event after the starting position once and in order: first
/// those already stored, then new ones as they are appended. A store error
/// is yielded as an item; the subscription keeps going afterwards (after a
/// pause), so the consumer decides whether to stop. A stored row that cannot
/// be read ([`StoreError::Undecodable`]) comes after every event before it;
/// the subscription reads it again (and fails again) until told to
/// [`skip_past`](Self::skip_past) it. Dropping it unsubscribes.
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, ReadAllQuery, StreamId};
/// use eventcore_memory::InMemoryEventStore;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = InMemoryEventStore::new();
/// let mut subscription = store.subscribe(ReadAllQuery::from_start());
/// let event = NewEvent::from_parts(EventType::try_new("Pinged")?, serde_json::json!({}), EventMetadata::default())?;
/// store.append(AppendRequest::single(StreamId::try_new("host-1")?, ExpectedVersion::Any, vec![event])).await?;
///
/// // Appended after subscribing, delivered all the same.
/// let first = subscription.next_event().await.expect("subscriptions do not end")?;
/// assert_eq!(first.event_type.as_ref(), "Pinged");
/// # Ok(())
/// # }
/// ```
pub struct Subscription {
    inner: BoxStream<'static, Result<RecordedEvent, StoreError>>,
    progress: Option<Arc<Progress>>,
}

/// What a [`Subscription::follow`] subscription shares with its handle.
#[derive(Debug, Default)]
struct Progress {
    /// Where the next read should start, when the consumer skipped a row.
    skip: Mutex<Option<GlobalPosition>>,
    /// Whether everything the store had at the last read was delivered.
    caught_up: AtomicBool,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Wraps any stream of events; adapters with their own delivery use this.
    pub fn from_stream(
        stream: impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: stream.boxed(),
            progress: None,
        }
    }

    /// Builds a subscription that pages through `store.read_all` and, once
    /// caught up, waits for `notifier` to report new appends.
    ///
    /// Correct for any store whose `read_all` is gap-safe: positions are
    /// tracked by the last delivered event, so a notification that arrives
    /// late or twice only changes when events are delivered, never which.
    pub fn follow<S, N>(store: S, query: ReadAllQuery, notifier: N) -> Self
    where
        S: EventStore + 'static,
        N: AppendNotifier,
    {
        let progress = Arc::new(Progress::default());
        let state = Follow {
            store,
            query,
            notifier,
            buffer: VecDeque::new(),
            pause_before_read: false,
            last_page_short: false,
            progress: progress.clone(),
        };
        Self {
            inner: futures::stream::unfold(state, Follow::next).boxed(),
            progress: Some(progress),
        }
    }

    /// Goes on after `position`: the next read starts past it, at once.
    /// For a row that cannot be read ([`StoreError::undecodable_position`]);
    /// a position behind the subscription changes nothing. Subscriptions an
    /// adapter built with [`from_stream`](Self::from_stream) ignore it.
    pub fn skip_past(&mut self, position: GlobalPosition) {
        if let Some(progress) = &self.progress {
            *progress.skip.lock().unwrap_or_else(PoisonError::into_inner) = Some(position);
        }
    }

    /// Whether every event the store held at the subscription's last read
    /// has been delivered: it is at the head. Always `false` for
    /// subscriptions built with [`from_stream`](Self::from_stream).
    pub fn is_caught_up(&self) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|p| p.caught_up.load(Ordering::Acquire))
    }

    /// The next event; `None` only if the underlying stream ends.
    pub async fn next_event(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        self.inner.next().await
    }
}

impl Stream for Subscription {
    type Item = Result<RecordedEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Tells a [`Subscription::follow`] subscription that something may have been appended.
///
/// Spurious wake-ups are harmless; a missed one must not be possible between
/// [`mark_seen`](AppendNotifier::mark_seen) and the following
/// [`appended`](AppendNotifier::appended) (a polling fallback is one way to
/// guarantee that).
pub trait AppendNotifier: Send + 'static {
    /// Marks every append so far as seen; called just before the subscription reads.
    fn mark_seen(&mut self);

    /// Resolves once something may have been appended since the last `mark_seen`.
    fn appended(&mut self) -> impl Future<Output = ()> + Send;
}

impl<T: Send + Sync + 'static> AppendNotifier for tokio::sync::watch::Receiver<T> {
    fn mark_seen(&mut self) {
        self.mark_unchanged();
    }

    async fn appended(&mut self) {
        if self.changed().await.is_err() {
            // The sender is gone, so nothing can be appended any more.
            std::future::pending::<()>().await;
        }
    }
}

struct Follow<S, N> {
    store: S,
    query: ReadAllQuery,
    notifier: N,
    buffer: VecDeque<RecordedEvent>,
    pause_before_read: bool,
    /// The last read returned less than a page: the store had no more.
    last_page_short: bool,
    progress: Arc<Progress>,
}

type Step<S, N> = Option<(Result<RecordedEvent, StoreError>, Follow<S, N>)>;

impl<S: EventStore, N: AppendNotifier> Follow<S, N> {
    async fn next(mut self) -> Step<S, N> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.query.after = event.position;
                let caught_up = self.buffer.is_empty() && self.last_page_short;
                self.progress.caught_up.store(caught_up, Ordering::Release);
                return Some((Ok(event), self));
            }
            if self.take_skip() {
                self.pause_before_read = false;
            }
            if self.pause_before_read {
                // Caught up, or the last read failed: wait before asking again.
                self.notifier.appended().await;
                self.take_skip();
            }
            self.notifier.mark_seen();
            let read = self.store.read_all(&self.query);
            match crate::telemetry::store_call(crate::telemetry::recording(), "read_all", read)
                .await
            {
                Ok(page) => {
                    self.pause_before_read = page.is_empty();
                    self.last_page_short = page.len() < self.query.limit.get();
                    if page.is_empty() {
                        self.progress.caught_up.store(true, Ordering::Release);
                    }
                    self.buffer.extend(page);
                }
                Err(error) => {
                    self.pause_before_read = true;
                    return Some((Err(error), self));
                }
            }
        }
    }

    /// Moves the read position past a skipped row; whether there was one to skip.
    fn take_skip(&mut self) -> bool {
        let skip = self
            .progress
            .skip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match skip {
            Some(position) if position > self.query.after => {
                self.query.after = position;
                true
            }
            _ => false,
        }
    }
}
