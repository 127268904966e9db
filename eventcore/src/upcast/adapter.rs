//! What store adapters call to read through [`Upcasters`] and to guard
//! their write path: every adapter the same way.

use std::future::Future;

use super::{Retype, Upcasters};
use crate::{
    AppendRequest, EventType, Outdated, OutdatedEvent, ReadAllQuery, RecordedEvent, StoreError,
};

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
        mut read_stored: F,
    ) -> Result<Vec<RecordedEvent>, StoreError>
    where
        F: FnMut(ReadAllQuery) -> Fut,
        Fut: Future<Output = Result<Vec<RecordedEvent>, StoreError>>,
    {
        if self.is_empty() {
            return read_stored(query.clone()).await;
        }
        let Some(wanted) = &query.event_types else {
            return self.upcast_page(read_stored(query.clone()).await?);
        };
        let stored = self.stored_names(wanted);
        let mut next = ReadAllQuery {
            event_types: Some(stored.names),
            ..query.clone()
        };
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
            let Some(last) = rows.last().map(|e| e.position) else {
                return Ok(page);
            };
            let full = rows.len() >= next.limit.get();
            for row in rows {
                match self.upcast(row) {
                    Ok(event) if query.wants(&event.event_type) => {
                        page.push(event);
                        if page.len() >= query.limit.get() {
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
            next.after = last;
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
