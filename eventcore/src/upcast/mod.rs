//! Event evolution: schema versions and the upcasters that read stored
//! events in their current shape.
//!
//! Every event is stored with its type name and its **schema version**
//! ([`Event::schema_version`](crate::Event::schema_version), 1 unless the
//! event says otherwise). When the shape of an event changes, the code
//! raises the version and registers an **upcaster**: a function from the
//! stored JSON of one version to the JSON of the next. A **rename** reads
//! stored events of an old type name as the new one. Stored rows are never
//! changed; events are upcast as they are read.
//!
//! # Where upcasters live: on the store
//!
//! [`Upcasters`] are attached to the store (`InMemoryEventStore::with_upcasters`,
//! `PostgresConfig::upcasters`), not to the executor or to projection
//! runners. Every reader gets its events from the store (the executor's
//! fold, `read_all`, subscriptions, projection runners, snapshot catch-up,
//! test fixtures, operator tools), so attaching the registry there is the
//! one place that no read path can miss, and the one place a reader of the
//! code looks for it: where the store is built. A `RecordedEvent` from a
//! store with upcasters is already in its current shape (type name,
//! schema version and payload); a type-name filter in a
//! [`ReadAllQuery`](crate::ReadAllQuery) finds the events stored under the
//! old names too. A store built without upcasters hands out the rows as
//! stored, which is what export tools want.
//!
//! # How a chain runs
//!
//! From the stored type and version: while an upcaster is registered for
//! the current type and version, apply it and go up one version; when none
//! is and the type is renamed, apply the rename (the version carries over)
//! and go on with the new name. Upcasters of an old name run before its
//! rename, those of the new name after it.
//!
//! Decoding ([`RecordedEvent::decode`](crate::RecordedEvent::decode)) then
//! checks the version reached against the one the Rust type declares, so
//! a missing upcaster, or old code reading events newer code wrote, is a
//! [`DecodeError`](crate::DecodeError) that says so instead of a silent
//! misread.
//!
//! # Guarding the write path
//!
//! A store with upcasters refuses ([`OutdatedEvent`]) to write an event of
//! a renamed type, or of a schema version some upcaster is registered
//! from: that shape would be upcast on every read, so the code writing it
//! is out of date (usually: an upcaster was added and the event's
//! `schema_version` not raised).
//!
//! # Snapshots
//!
//! A snapshot holds state folded from events already in their current
//! shape, keyed by the command's own `state_version`. Adding or changing
//! an upcaster does not invalidate snapshots: the events they were folded
//! from read the same. Changing how a command folds events does: raise its
//! `state_version`.
//!
//! ```
//! use eventcore::Upcasters;
//! use serde_json::json;
//!
//! let upcasters = Upcasters::builder()
//!     // v1 -> v2: a reference was added; old deposits have none.
//!     .step("Deposited", 1, |mut v| {
//!         v["reference"] = json!(null);
//!         Ok(v)
//!     })
//!     // An old name for the same event.
//!     .rename("AccountCredited", "Deposited")
//!     .build()?;
//! assert_eq!(upcasters.current_version("Deposited"), Some(2));
//! # Ok::<(), eventcore::InvalidUpcasters>(())
//! ```

mod error;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

pub use error::{InvalidUpcasters, Outdated, OutdatedEvent, UpcastError, UpcastProblem};

use crate::{AppendRequest, BoxError, EventType, Payload, RecordedEvent, StoreError};

/// One upcaster: stored JSON of one shape to the next.
type Transform = Arc<dyn Fn(Value) -> Result<Value, BoxError> + Send + Sync>;

/// How one type name evolves.
#[derive(Default)]
struct Evolution {
    /// Upcasters by the schema version they read.
    steps: BTreeMap<u32, Transform>,
    /// The name stored events of this type are read as, once no step applies.
    rename: Option<(EventType, Option<Transform>)>,
}

/// Every registered upcaster, by stored type name.
struct Registry {
    types: HashMap<EventType, Evolution>,
}

/// The upcasters a store reads old events through; see the
/// [module docs](self) for where they live and how a chain runs.
///
/// Cheap to clone (shared). The default has none: events are read as stored,
/// at no cost.
#[derive(Clone, Default)]
pub struct Upcasters {
    registry: Option<Arc<Registry>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_map();
        if let Some(registry) = &self.registry {
            for (name, evolution) in &registry.types {
                let steps: Vec<u32> = evolution.steps.keys().copied().collect();
                let rename = evolution.rename.as_ref().map(|(to, _)| to);
                list.entry(name, &(steps, rename));
            }
        }
        list.finish()
    }
}

/// Whether an upcasting chain left the event as stored or changed it.
enum Chain {
    Unchanged,
    Changed {
        event_type: EventType,
        schema_version: u32,
        payload: Value,
    },
}

impl Upcasters {
    /// No upcasters: events are read as stored.
    pub fn none() -> Self {
        Self::default()
    }

    /// Starts registering upcasters.
    pub fn builder() -> UpcastersBuilder {
        UpcastersBuilder::default()
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.registry.is_none()
    }

    /// The schema version the upcasters bring `event_type` to (one above
    /// its highest upcaster), or `None` if none is registered for it.
    pub fn current_version(&self, event_type: &str) -> Option<u32> {
        let registry = self.registry.as_ref()?;
        let evolution = registry.types.get(event_type)?;
        let (from, _) = evolution.steps.last_key_value()?;
        from.checked_add(1)
    }

    /// The name stored events of `event_type` are read as, after every
    /// rename (itself if it is not renamed).
    pub fn current_name<'a>(&'a self, event_type: &'a EventType) -> &'a EventType {
        let Some(registry) = &self.registry else {
            return event_type;
        };
        let mut name = event_type;
        // Renames are checked acyclic when built; the bound is a second guard.
        for _ in 0..=registry.types.len() {
            match registry.types.get(name).and_then(|e| e.rename.as_ref()) {
                Some((to, _)) => name = to,
                None => break,
            }
        }
        name
    }

    /// Brings one stored event to its current shape. An event no upcaster
    /// applies to comes back as it is, without its payload being parsed.
    ///
    /// # Errors
    /// [`UpcastError`] naming the event when an upcaster on its way is
    /// missing or fails.
    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent, UpcastError> {
        match self.chain(&event.event_type, event.schema_version, &event.payload) {
            Ok(Chain::Unchanged) => Ok(event),
            Ok(Chain::Changed {
                event_type,
                schema_version,
                payload,
            }) => match serde_json::to_string(&payload) {
                Ok(text) => {
                    event.event_type = event_type;
                    event.schema_version = schema_version;
                    event.payload = Payload::from_stored(text);
                    Ok(event)
                }
                Err(source) => Err(failure(
                    &event,
                    UpcastProblem::Output { event_type, source },
                )),
            },
            Err(problem) => Err(failure(&event, problem)),
        }
    }

    /// For adapters: brings every event of a read to its current shape.
    ///
    /// # Errors
    /// [`StoreError::Upcast`] for the first event that cannot be upcast.
    pub fn upcast_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.is_empty() {
            return Ok(events);
        }
        events
            .into_iter()
            .map(|event| self.upcast(event).map_err(StoreError::from))
            .collect()
    }

    /// For adapters: brings a page of the global order to its current
    /// shape, up to the first event that cannot be upcast. That event's
    /// error comes only when it is first in the page, so a reader gets every
    /// good event before it and then the error at its position, as for a
    /// row that cannot be read at all ([`StoreError::Undecodable`]).
    ///
    /// # Errors
    /// [`StoreError::Upcast`] when the first event cannot be upcast.
    pub fn upcast_page(
        &self,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if self.is_empty() {
            return Ok(events);
        }
        let mut page = Vec::with_capacity(events.len());
        for event in events {
            match self.upcast(event) {
                Ok(event) => page.push(event),
                Err(error) if page.is_empty() => return Err(error.into()),
                Err(_) => break,
            }
        }
        Ok(page)
    }

    /// For adapters: the stored type names a reader asking for `wanted`
    /// (current names) must read, old names included. A name that is itself
    /// renamed is no event's current name, so it selects only what is still
    /// stored under it and renamed to one of `wanted`.
    pub fn stored_names(&self, wanted: &[EventType]) -> Vec<EventType> {
        let Some(registry) = &self.registry else {
            return wanted.to_vec();
        };
        let mut names: Vec<EventType> = wanted
            .iter()
            .filter(|name| registry.types.get(*name).is_none_or(|e| e.rename.is_none()))
            .cloned()
            .collect();
        for (name, evolution) in &registry.types {
            if evolution.rename.is_some() && wanted.contains(self.current_name(name)) {
                names.push(name.clone());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// For adapters: refuses an append that writes an event in a shape the
    /// upcasters treat as outdated (see the [module docs](self)).
    ///
    /// # Errors
    /// [`StoreError::Outdated`] naming the first such event.
    pub fn check_append(&self, request: &AppendRequest) -> Result<(), StoreError> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        for stream in request.streams() {
            for event in &stream.events {
                let outdated = |reason| {
                    StoreError::Outdated(OutdatedEvent {
                        stream_id: stream.stream_id.clone(),
                        event_type: event.event_type().clone(),
                        schema_version: event.schema_version(),
                        reason,
                    })
                };
                let Some(evolution) = registry.types.get(event.event_type()) else {
                    continue;
                };
                if let Some((to, _)) = &evolution.rename {
                    return Err(outdated(Outdated::Renamed {
                        from: event.event_type().clone(),
                        to: self.current_name(to).clone(),
                    }));
                }
                if let Some((&from, _)) = evolution.steps.last_key_value()
                    && from >= event.schema_version()
                {
                    return Err(outdated(Outdated::Superseded {
                        from,
                        current: from.saturating_add(1),
                    }));
                }
            }
        }
        Ok(())
    }

    /// Runs the chain for a stored (type, version, payload).
    fn chain(
        &self,
        stored_type: &EventType,
        stored_version: u32,
        payload: &Payload,
    ) -> Result<Chain, UpcastProblem> {
        let Some(registry) = &self.registry else {
            return Ok(Chain::Unchanged);
        };
        let Some(mut evolution) = registry.types.get(stored_type) else {
            return Ok(Chain::Unchanged);
        };
        let mut event_type = stored_type.clone();
        let mut version = stored_version;
        let mut value: Option<Value> = None;
        let parsed = |value: &mut Option<Value>| -> Result<Value, UpcastProblem> {
            match value.take() {
                Some(v) => Ok(v),
                None => payload
                    .to_value()
                    .map_err(|source| UpcastProblem::NotJson { source }),
            }
        };
        // Each step raises the version and renames are acyclic, so this ends;
        // the bound guards against a registry that was not built by the builder.
        let bound = registry.types.len()
            + registry
                .types
                .values()
                .map(|e| e.steps.len())
                .sum::<usize>()
            + 1;
        for _ in 0..bound {
            if let Some(step) = evolution.steps.get(&version) {
                let input = parsed(&mut value)?;
                let output = step(input).map_err(|source| UpcastProblem::Failed {
                    event_type: event_type.clone(),
                    from: Some(version),
                    source,
                })?;
                value = Some(output);
                version = version.saturating_add(1);
                continue;
            }
            let Some((to, transform)) = &evolution.rename else {
                break;
            };
            if let Some(transform) = transform {
                let input = parsed(&mut value)?;
                let output = transform(input).map_err(|source| UpcastProblem::Failed {
                    event_type: event_type.clone(),
                    from: None,
                    source,
                })?;
                value = Some(output);
            }
            event_type = to.clone();
            match registry.types.get(to) {
                Some(next) => evolution = next,
                None => break,
            }
        }
        if let Some((&next, _)) = registry
            .types
            .get(&event_type)
            .and_then(|e| e.steps.range(version..).next())
            && next > version
        {
            return Err(UpcastProblem::Missing {
                event_type,
                at: version,
                next,
            });
        }
        if event_type == *stored_type && version == stored_version {
            return Ok(Chain::Unchanged);
        }
        let payload = parsed(&mut value)?;
        Ok(Chain::Changed {
            event_type,
            schema_version: version,
            payload,
        })
    }
}

fn failure(event: &RecordedEvent, problem: UpcastProblem) -> UpcastError {
    UpcastError {
        event_id: event.id,
        stream_id: event.stream_id.clone(),
        version: event.version,
        position: event.position,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        problem,
    }
}

/// Registers upcasters; [`build`](Self::build) checks they fit together.
///
/// Type names are checked when built, so the calls chain without `?`.
#[derive(Default)]
pub struct UpcastersBuilder {
    steps: Vec<(String, u32, Transform)>,
    renames: Vec<(String, String, Option<Transform>)>,
}

impl fmt::Debug for UpcastersBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpcastersBuilder")
            .field(
                "steps",
                &self
                    .steps
                    .iter()
                    .map(|(t, v, _)| (t, v))
                    .collect::<Vec<_>>(),
            )
            .field(
                "renames",
                &self
                    .renames
                    .iter()
                    .map(|(a, b, _)| (a, b))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl UpcastersBuilder {
    /// Registers the upcaster reading `event_type` at schema version `from`
    /// as version `from + 1`, on JSON.
    ///
    /// ```
    /// use eventcore::Upcasters;
    ///
    /// // v2 split `name` into `first` and `last`.
    /// let upcasters = Upcasters::builder()
    ///     .step("CustomerRegistered", 1, |mut v| {
    ///         let name = v["name"].as_str().ok_or("CustomerRegistered v1 has no name")?.to_owned();
    ///         let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
    ///         v["first"] = first.into();
    ///         v["last"] = last.into();
    ///         v.as_object_mut().ok_or("not an object")?.remove("name");
    ///         Ok(v)
    ///     })
    ///     .build()?;
    /// # Ok::<(), eventcore::InvalidUpcasters>(())
    /// ```
    #[must_use]
    pub fn step<F, E>(mut self, event_type: &str, from: u32, upcast: F) -> Self
    where
        F: Fn(Value) -> Result<Value, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let transform: Transform = Arc::new(move |v| upcast(v).map_err(Into::into));
        self.steps.push((event_type.to_owned(), from, transform));
        self
    }

    /// Registers a typed upcaster: the stored payload decodes into `Old`,
    /// `upcast` makes the `New` shape, which is read as version `from + 1`.
    ///
    /// ```
    /// use eventcore::Upcasters;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Deserialize)]
    /// struct PriceSetV1 { cents: u64 }
    /// #[derive(Serialize)]
    /// struct PriceSetV2 { amount: u64, currency: String }
    ///
    /// let upcasters = Upcasters::builder()
    ///     .typed_step("PriceSet", 1, |old: PriceSetV1| PriceSetV2 {
    ///         amount: old.cents,
    ///         currency: "EUR".into(),
    ///     })
    ///     .build()?;
    /// # Ok::<(), eventcore::InvalidUpcasters>(())
    /// ```
    #[must_use]
    pub fn typed_step<Old, New, F>(self, event_type: &str, from: u32, upcast: F) -> Self
    where
        Old: DeserializeOwned,
        New: Serialize,
        F: Fn(Old) -> New + Send + Sync + 'static,
    {
        self.step(event_type, from, move |value| {
            let old: Old = serde_json::from_value(value)?;
            serde_json::to_value(upcast(old))
        })
    }

    /// Reads events stored as `from` as `to`, at the same schema version.
    #[must_use]
    pub fn rename(mut self, from: &str, to: &str) -> Self {
        self.renames.push((from.to_owned(), to.to_owned(), None));
        self
    }

    /// Reads events stored as `from` as `to`, at the same schema version,
    /// changing the payload on the way: for an enum event whose variant
    /// name is part of the JSON, say.
    #[must_use]
    pub fn rename_with<F, E>(mut self, from: &str, to: &str, upcast: F) -> Self
    where
        F: Fn(Value) -> Result<Value, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        let transform: Transform = Arc::new(move |v| upcast(v).map_err(Into::into));
        self.renames
            .push((from.to_owned(), to.to_owned(), Some(transform)));
        self
    }

    /// Checks the upcasters fit together.
    ///
    /// # Errors
    /// [`InvalidUpcasters`]: an invalid type name, an upcaster from version
    /// 0 or from the last version, two upcasters for one type and version,
    /// a type renamed twice, or renames that form a cycle.
    pub fn build(self) -> Result<Upcasters, InvalidUpcasters> {
        let name = |raw: String| {
            EventType::try_new(raw.as_str())
                .map_err(|source| InvalidUpcasters::EventType { name: raw, source })
        };
        let mut types: HashMap<EventType, Evolution> = HashMap::new();
        for (raw, from, transform) in self.steps {
            let event_type = name(raw)?;
            if from == 0 {
                return Err(InvalidUpcasters::ZeroVersion { event_type });
            }
            if from == u32::MAX {
                return Err(InvalidUpcasters::VersionOverflow { event_type, from });
            }
            let evolution = types.entry(event_type.clone()).or_default();
            if evolution.steps.insert(from, transform).is_some() {
                return Err(InvalidUpcasters::DuplicateStep { event_type, from });
            }
        }
        for (raw_from, raw_to, transform) in self.renames {
            let from = name(raw_from)?;
            let to = name(raw_to)?;
            if from == to {
                return Err(InvalidUpcasters::RenameCycle { event_type: from });
            }
            let evolution = types.entry(from.clone()).or_default();
            if evolution.rename.is_some() {
                return Err(InvalidUpcasters::DuplicateRename { event_type: from });
            }
            evolution.rename = Some((to, transform));
        }
        for start in types.keys() {
            let mut name = start;
            for _ in 0..types.len() {
                match types.get(name).and_then(|e| e.rename.as_ref()) {
                    Some((to, _)) if to == start => {
                        return Err(InvalidUpcasters::RenameCycle {
                            event_type: start.clone(),
                        });
                    }
                    Some((to, _)) => name = to,
                    None => break,
                }
            }
        }
        Ok(Upcasters {
            registry: (!types.is_empty()).then(|| Arc::new(Registry { types })),
        })
    }
}
