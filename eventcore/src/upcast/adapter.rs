//! What store adapters call to read through [`Upcasters`] and to guard
//! their write path: every adapter the same way.

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
};

use super::{Retype, Upcasters};
use crate::{
    AppendRequest, EventType, Outdated, OutdatedEvent, ReadAllQuery, RecordedEvent, StoreError,
    StreamPage, StreamQuery,
};

/// A query read a page at a time: the global order or one stream.
trait PagedQuery: Clone {
    fn limit(&self) -> usize;
    fn event_types(&self) -> Option<&[EventType]>;
    fn with_event_types(self, types: Vec<EventType>) -> Self;
    fn wants(&self, event_type: &EventType) -> bool;
    /// The query for what follows `last`; `None` if nothing can.
    fn after(&self, last: &RecordedEvent) -> Option<Self>;
}

impl PagedQuery for ReadAllQuery {
    fn limit(&self) -> usize {
        self.limit.get()
    }
    fn event_types(&self) -> Option<&[EventType]> {
        self.event_types.as_deref()
    }
    fn with_event_types(self, types: Vec<EventType>) -> Self {
        Self {
            event_types: Some(types),
            ..self
        }
    }
    fn wants(&self, event_type: &EventType) -> bool {
        ReadAllQuery::wants(self, event_type)
    }
    fn after(&self, last: &RecordedEvent) -> Option<Self> {
        Some(Self {
            after: last.position,
            ..self.clone()
        })
    }
}

impl PagedQuery for StreamQuery {
    fn limit(&self) -> usize {
        self.limit.get()
    }
    fn event_types(&self) -> Option<&[EventType]> {
        self.event_types.as_deref()
    }
    fn with_event_types(self, types: Vec<EventType>) -> Self {
        Self {
            event_types: Some(types),
            ..self
        }
    }
    fn wants(&self, event_type: &EventType) -> bool {
        StreamQuery::wants(self, event_type)
    }
    fn after(&self, last: &RecordedEvent) -> Option<Self> {
        StreamQuery::after(self, last)
    }
}

/// The stored names a type filter must read, and whether the events found
/// must be filtered again once upcast (a split reads some of one stored
/// type as a wanted type and some as another).
struct StoredNames {
    names: Vec<EventType>,
    filter_again: bool,
}

impl Upcasters {
    /// For adapters: brings every event of a read to its current shape.
    ///
    /// # Errors
    /// [`StoreError::Upcast`] for the first event that cannot be upcast.
    pub fn upcast_all(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if !self.is_empty() {
            for event in &mut events {
                self.upcast_in_place(event)?;
            }
        }
        Ok(events)
    }

    /// For adapters: one page of the global order for `query`, in current
    /// shapes, from `read_stored`, the adapter's own read of stored rows.
    ///
    /// A type filter names current types, so the stored rows are read
    /// under every name that leads to them (old names included) and, where
    /// a split makes that necessary, filtered again after upcasting; pages
    /// are then refilled so a short page still means the reader has caught
    /// up. An event that cannot be upcast ends the page; its error comes
    /// only when it is first, so a reader gets every good event before it
    /// and then the error at its position, as for a row that cannot be read
    /// at all ([`StoreError::Undecodable`]).
    ///
    /// # Errors
    /// What `read_stored` fails with, or [`StoreError::Upcast`], when the
    /// page would otherwise start with it.
    pub async fn read_page<F, Fut>(
        &self,
        query: &ReadAllQuery,
        read_stored: F,
    ) -> Result<Vec<RecordedEvent>, StoreError>
    where
        F: FnMut(ReadAllQuery) -> Fut,
        Fut: Future<Output = Result<Vec<RecordedEvent>, StoreError>>,
    {
        self.read_filtered(query, read_stored).await
    }

    /// For adapters: one page of one stream for `query`, in current shapes,
    /// from `read_stored`, the adapter's own read of one page of stored rows
    /// (which returns the stream's version too).
    ///
    /// Type filters are handled as by [`read_page`](Self::read_page): old
    /// names are read too, and pages are refilled where a split makes
    /// that necessary. An event that cannot be upcast ends the page; its
    /// error comes only when it is first.
    ///
    /// # Errors
    /// What `read_stored` fails with, or [`StoreError::Upcast`], when the
    /// page would otherwise start with it.
    pub async fn read_stream_page<F, Fut>(
        &self,
        query: &StreamQuery,
        mut read_stored: F,
    ) -> Result<StreamPage, StoreError>
    where
        F: FnMut(StreamQuery) -> Fut,
        Fut: Future<Output = Result<StreamPage, StoreError>>,
    {
        if self.is_empty() {
            return read_stored(query.clone()).await;
        }
        // The version of the first read: the one the page was cut from.
        let version = AtomicU64::new(u64::MAX);
        let version_ref = &version;
        let events = self
            .read_filtered(query, |stored| {
                let read = read_stored(stored);
                async move {
                    let page = read.await?;
                    let _ = version_ref.compare_exchange(
                        u64::MAX,
                        page.stream_version.value(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    Ok(page.events)
                }
            })
            .await?;
        let version = match version.into_inner() {
            u64::MAX => crate::StreamVersion::INITIAL,
            read => crate::StreamVersion::new(read),
        };
        Ok(query.page(events, version))
    }

    /// One page for `query` in current shapes, reading stored rows through
    /// `read_stored` under every stored name a type filter needs, refilled
    /// after a split.
    async fn read_filtered<Q, F, Fut>(
        &self,
        query: &Q,
        mut read_stored: F,
    ) -> Result<Vec<RecordedEvent>, StoreError>
    where
        Q: PagedQuery,
        F: FnMut(Q) -> Fut,
        Fut: Future<Output = Result<Vec<RecordedEvent>, StoreError>>,
    {
        if self.is_empty() {
            return read_stored(query.clone()).await;
        }
        let Some(wanted) = query.event_types() else {
            return self.upcast_page(read_stored(query.clone()).await?);
        };
        let stored = self.stored_names(wanted);
        let mut next = query.clone().with_event_types(stored.names);
        if !stored.filter_again {
            return self.upcast_page(read_stored(next).await?);
        }
        let mut page = Vec::new();
        loop {
            let rows = match read_stored(next.clone()).await {
                Ok(rows) => rows,
                Err(error) if page.is_empty() => return Err(error),
                // The error comes again on the next read, after this page.
                Err(_) => return Ok(page),
            };
            let Some(following) = rows.last().and_then(|last| next.after(last)) else {
                // Nothing read, or nothing can follow what was.
                for row in rows {
                    match self.upcast(row) {
                        Ok(event) if query.wants(&event.event_type) => page.push(event),
                        Ok(_) => {}
                        Err(error) if page.is_empty() => return Err(error.into()),
                        Err(_) => return Ok(page),
                    }
                }
                page.truncate(query.limit());
                return Ok(page);
            };
            let full = rows.len() >= next.limit();
            for row in rows {
                match self.upcast(row) {
                    Ok(event) if query.wants(&event.event_type) => {
                        page.push(event);
                        if page.len() >= query.limit() {
                            return Ok(page);
                        }
                    }
                    Ok(_) => {}
                    Err(error) if page.is_empty() => return Err(error.into()),
                    Err(_) => return Ok(page),
                }
            }
            // A short read is the end, unless it was cut short (a row that
            // cannot be read comes next) and left nothing to deliver.
            if !full && !page.is_empty() {
                return Ok(page);
            }
            next = following;
        }
    }

    /// Brings a page of the global order to its current shape, up to the
    /// first event that cannot be upcast (an error only when it is first).
    fn upcast_page(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        for index in 0..events.len() {
            let Some(event) = events.get_mut(index) else {
                break;
            };
            if let Err(error) = self.upcast_in_place(event) {
                if index == 0 {
                    return Err(error.into());
                }
                events.truncate(index);
                break;
            }
        }
        Ok(events)
    }

    /// The stored type names a reader asking for `wanted` (current names)
    /// must read. A name that is itself renamed or split is no event's
    /// current name: it selects only what is stored under it and read as
    /// one of `wanted`.
    fn stored_names(&self, wanted: &[EventType]) -> StoredNames {
        let Some(registry) = &self.registry else {
            return StoredNames {
                names: wanted.to_vec(),
                filter_again: false,
            };
        };
        let mut filter_again = false;
        let mut names: Vec<EventType> = wanted
            .iter()
            .filter(|name| registry.types.get(*name).is_none_or(|e| e.retype.is_none()))
            .cloned()
            .collect();
        for (name, evolution) in &registry.types {
            if evolution.retype.is_none() {
                continue;
            }
            let current = self.current_names(name);
            let read = current.iter().filter(|c| wanted.contains(c)).count();
            if read > 0 {
                names.push(name.clone());
                filter_again |= read < current.len();
            }
        }
        names.sort();
        names.dedup();
        StoredNames {
            names,
            filter_again,
        }
    }

    /// For adapters: refuses an append that writes an event in a shape the
    /// upcasters treat as outdated (see the [module docs](super)).
    ///
    /// # Errors
    /// [`StoreError::Outdated`] naming the first such event.
    pub fn check_append(&self, request: &AppendRequest) -> Result<(), StoreError> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        for stream in request.streams() {
            for event in &stream.events {
                let Some(evolution) = registry.types.get(event.event_type()) else {
                    continue;
                };
                let reason = match (&evolution.retype, evolution.steps.last_key_value()) {
                    (Some(Retype::Rename { .. }), _) => Outdated::Renamed {
                        from: event.event_type().clone(),
                        to: self
                            .current_names(event.event_type())
                            .into_iter()
                            .next()
                            .unwrap_or_else(|| event.event_type().clone()),
                    },
                    (Some(Retype::Split { .. }), _) => Outdated::Split {
                        from: event.event_type().clone(),
                        into: self.current_names(event.event_type()).into_iter().collect(),
                    },
                    (None, Some((&from, _))) if from >= event.schema_version() => {
                        Outdated::Superseded {
                            from,
                            current: from.saturating_add(1),
                        }
                    }
                    (None, _) => continue,
                };
                return Err(StoreError::Outdated(OutdatedEvent {
                    stream_id: stream.stream_id.clone(),
                    event_type: event.event_type().clone(),
                    schema_version: event.schema_version(),
                    reason,
                }));
            }
        }
        Ok(())
    }
}
