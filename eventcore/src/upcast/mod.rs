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
//! is and the type is renamed (or split by content into several types),
//! apply the rename (the version carries over) and go on with the new name.
//! Upcasters of an old name run before its rename, those of the new name
//! after it.
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

mod adapter;
mod builder;
mod error;
pub mod guide;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::Arc,
};

use serde_json::Value;

pub use builder::UpcastersBuilder;
pub use error::{InvalidUpcasters, Outdated, OutdatedEvent, UpcastError, UpcastProblem};

use crate::{BoxError, EventType, Payload, RecordedEvent};

/// One upcaster: stored JSON of one shape to the next.
type Transform = Arc<dyn Fn(Value) -> Result<Value, BoxError> + Send + Sync>;

/// A split: the stored JSON to the name of the type it is read as, and its JSON.
type Chooser = Arc<dyn Fn(Value) -> Result<(String, Value), BoxError> + Send + Sync>;

/// How one type name evolves.
#[derive(Default)]
struct Evolution {
    /// Upcasters by the schema version they read.
    steps: BTreeMap<u32, Transform>,
    /// What stored events of this type are read as, once no step applies.
    retype: Option<Retype>,
}

/// A type name that stored events are no longer read under.
enum Retype {
    /// Every event is read as `to`.
    Rename {
        to: EventType,
        transform: Option<Transform>,
    },
    /// Each event is read as one of `into`, chosen by its content.
    Split {
        into: Vec<EventType>,
        choose: Chooser,
    },
}

impl Retype {
    fn targets(&self) -> &[EventType] {
        match self {
            Self::Rename { to, .. } => std::slice::from_ref(to),
            Self::Split { into, .. } => into,
        }
    }
}

/// Evolutions by stored type name. foldhash: looked up once per event read,
/// where SipHash cost as much as the rest of a memory read; only the
/// registration inserts, so stored names cannot flood it.
type Types = HashMap<EventType, Evolution, foldhash::fast::RandomState>;

/// Every registered upcaster, by stored type name.
struct Registry {
    types: Types,
}

/// The upcasters a store reads old events through; see the
/// [module docs](self) for where they live and how a chain runs, and the
/// [guide] for the upcaster of each kind of change.
///
/// Cheap to clone (shared). The default has none: events are read as stored,
/// at no cost.
///
/// Attached to a store, upcasters bring every event it reads to its
/// current shape:
///
/// ```
/// use eventcore::{AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StreamId, Upcasters};
/// use eventcore_memory::InMemoryEventStore;
/// use serde_json::json;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upcasters = Upcasters::builder()
///     .step("Deposited", 1, |mut v| {
///         v["currency"] = json!("EUR");
///         Ok(v)
///     })
///     .build()?;
/// let store = InMemoryEventStore::new().with_upcasters(upcasters);
/// let account = StreamId::try_new("account-1")?;
/// // As old code stored it: schema version 1, no currency.
/// let old = NewEvent::from_parts(EventType::try_new("Deposited")?, json!({ "cents": 5 }), EventMetadata::default())?
///     .with_schema_version(1)?;
/// store.without_upcasters()
///     .append(AppendRequest::single(account.clone(), ExpectedVersion::Any, vec![old]))
///     .await?;
///
/// let read = store.read_streams(std::slice::from_ref(&account)).await?;
/// assert_eq!(read.events[0].schema_version, 2);
/// assert_eq!(read.events[0].payload.to_value()?["currency"], "EUR");
/// # Ok(())
/// # }
/// ```
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
                let read_as = evolution.retype.as_ref().map(Retype::targets);
                list.entry(name, &(steps, read_as));
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

    /// The names stored events of `event_type` can be read as, after every
    /// rename and split: itself alone if it is neither renamed nor split.
    pub fn current_names(&self, event_type: &EventType) -> BTreeSet<EventType> {
        let mut names = BTreeSet::new();
        let Some(registry) = &self.registry else {
            names.insert(event_type.clone());
            return names;
        };
        let mut pending = vec![event_type];
        let mut seen = BTreeSet::new();
        // Renames are checked acyclic when built; `seen` is a second guard.
        while let Some(name) = pending.pop() {
            if !seen.insert(name) {
                continue;
            }
            match registry.types.get(name).and_then(|e| e.retype.as_ref()) {
                Some(retype) => pending.extend(retype.targets()),
                None => {
                    names.insert(name.clone());
                }
            }
        }
        names
    }

    /// Brings one stored event to its current shape. An event no upcaster
    /// applies to comes back as it is, without its payload being parsed.
    ///
    /// Stores with upcasters call this on every event they read; call it
    /// directly on events from elsewhere (an export file, a store read
    /// without upcasters).
    ///
    /// # Errors
    /// [`UpcastError`] naming the event when an upcaster on its way is
    /// missing or fails.
    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent, Box<UpcastError>> {
        self.upcast_in_place(&mut event)?;
        Ok(event)
    }

    /// [`upcast`](Self::upcast) without moving the event: reads upcast
    /// whole pages in place.
    fn upcast_in_place(&self, event: &mut RecordedEvent) -> Result<(), Box<UpcastError>> {
        match self.chain(&event.event_type, event.schema_version, &event.payload) {
            Ok(Chain::Unchanged) => Ok(()),
            Ok(Chain::Changed {
                event_type,
                schema_version,
                payload,
            }) => match serde_json::to_string(&payload) {
                Ok(text) => {
                    event.event_type = event_type;
                    event.schema_version = schema_version;
                    event.payload = Payload::from_stored(text);
                    Ok(())
                }
                Err(source) => Err(failure(event, UpcastProblem::Output { event_type, source })),
            },
            Err(problem) => Err(failure(event, problem)),
        }
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
            let failed = |source| UpcastProblem::Failed {
                event_type: event_type.clone(),
                from: None,
                source,
            };
            let to = match &evolution.retype {
                None => break,
                Some(Retype::Rename { to, transform }) => {
                    if let Some(transform) = transform {
                        let input = parsed(&mut value)?;
                        value = Some(transform(input).map_err(failed)?);
                    }
                    to.clone()
                }
                Some(Retype::Split { into, choose }) => {
                    let input = parsed(&mut value)?;
                    let (chosen, output) = choose(input).map_err(failed)?;
                    let Some(to) = into.iter().find(|t| t.as_ref() == chosen) else {
                        return Err(UpcastProblem::UnknownSplitTarget {
                            event_type,
                            chosen,
                            into: into.clone(),
                        });
                    };
                    value = Some(output);
                    to.clone()
                }
            };
            event_type = to;
            match registry.types.get(&event_type) {
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

fn failure(event: &RecordedEvent, problem: UpcastProblem) -> Box<UpcastError> {
    Box::new(UpcastError {
        event_id: event.id,
        stream_id: event.stream_id.clone(),
        version: event.version,
        position: event.position,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        problem,
    })
}
