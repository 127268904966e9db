//! Event evolution on a store: schema versions kept, old shapes read through
//! [`Upcasters`] by every reader, outdated writes refused.
//!
//! Run every case with
//! [`evolution_conformance_tests!`](crate::evolution_conformance_tests),
//! giving it a factory that takes the suite's [`Upcasters`] and returns a
//! future of three things on one fresh, empty store: a handle reading
//! through those upcasters, a handle on the same events without upcasters
//! (to write events as older code did, and to see them as stored), and a
//! checkpoint store for projections.
//!
//! ```text
//! eventcore::evolution_conformance_tests!(|upcasters| async move {
//!     let store = MyStore::fresh().await;
//!     (store.clone().with_upcasters(upcasters), store, MyCheckpoints::fresh().await)
//! });
//! ```

use std::{convert::Infallible, num::NonZeroUsize, sync::Arc, time::Duration};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    AppendRequest, CheckpointStore, CommandExecutor, DecodeProblem, Event, EventMetadata,
    EventStore, EventType, ExecutionError, ExecutionOptions, ExpectedVersion, NewEvent, Outdated,
    Projection, ProjectionRunner, ReadAllQuery, RecordedEvent, StoreError, StreamId, StreamQuery,
    StreamVersion, UpcastProblem, Upcasters,
};

/// The current type name of the suite's deposits (stored at versions 1 to 3).
pub const DEPOSITED: &str = "evolution.Deposited";
/// The old name of deposits, read as [`DEPOSITED`].
pub const CREDITED: &str = "evolution.Credited";
/// A type whose only upcaster starts at version 2: version 1 has no path.
pub const GAPPED: &str = "evolution.Gapped";
/// A type whose upcaster fails on every event.
pub const FAILING: &str = "evolution.Failing";
/// A type that never changed.
pub const CLOSED: &str = "evolution.Closed";
/// An old type split by content into [`DEPOSITED`] and [`CLOSED`].
pub const SETTLED: &str = "evolution.Settled";

/// Generates one `#[test]` per evolution case; see the [module docs](self).
#[macro_export]
macro_rules! evolution_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__evolution_cases!(
            $factory;
            schema_versions_are_stored_and_read_back,
            old_shapes_are_read_in_their_current_shape,
            a_type_filter_finds_events_stored_under_old_names,
            a_split_reads_each_event_as_the_type_its_content_says,
            stream_pages_read_old_events_in_their_current_shape,
            a_command_folds_old_events_in_their_current_shape,
            a_projection_applies_old_events_in_their_current_shape,
            a_projection_meets_an_upcast_failure_under_its_error_policy,
            a_missing_upcaster_is_a_typed_error_after_the_good_events,
            a_failing_upcaster_is_a_typed_error,
            outdated_shapes_are_refused_on_write,
            decoding_checks_the_declared_schema_version,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __evolution_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                $crate::conformance::run(
                    move || factory($crate::conformance::evolution::suite_upcasters()),
                    |(store, raw, checkpoints)| {
                        $crate::conformance::evolution::$case(store, raw, checkpoints)
                    },
                );
            }
        )*
    };
}

/// The suite's event in its current shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvolvingEvent {
    /// Version 1 held `cents`; version 2 added `reference`; version 3
    /// renamed `cents` to `amount`. Stored as [`CREDITED`] by older code.
    Deposited {
        /// The amount.
        amount: u64,
        /// Added in version 2.
        reference: Option<String>,
    },
    /// Never changed: version 1.
    Closed,
}

impl Event for EvolvingEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited { .. } => DEPOSITED,
            Self::Closed => CLOSED,
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Self::Deposited { .. } => 3,
            Self::Closed => 1,
        }
    }
}

/// Version 2 of a deposit, as the typed upcaster to version 3 reads it.
#[derive(Deserialize)]
enum DepositedV2 {
    Deposited {
        cents: u64,
        reference: Option<String>,
    },
}

/// Version 3 of a deposit, as the typed upcaster writes it.
#[derive(Serialize)]
enum DepositedV3 {
    Deposited {
        amount: u64,
        reference: Option<String>,
    },
}

/// The suite's upcasters: a JSON step (1 to 2), a typed step (2 to 3), a
/// rename that also retags the enum, a gap and a failing step.
pub fn suite_upcasters() -> Upcasters {
    Upcasters::builder()
        .step(DEPOSITED, 1, |mut v: Value| {
            v["Deposited"]["reference"] = Value::Null;
            Ok(v)
        })
        .typed_step(DEPOSITED, 2, |old: DepositedV2| {
            let DepositedV2::Deposited { cents, reference } = old;
            DepositedV3::Deposited {
                amount: cents,
                reference,
            }
        })
        .rename_with(CREDITED, DEPOSITED, |v: Value| match v {
            Value::Object(mut fields) => {
                let inner = fields.remove("Credited").ok_or("no Credited variant")?;
                Ok(json!({ "Deposited": inner }))
            }
            _ => Err("a Credited event is an object".into()),
        })
        .split(SETTLED, &[DEPOSITED, CLOSED], |v: Value| {
            let settled = &v["Settled"];
            match (settled["cents"].as_u64(), settled["closing"].as_bool()) {
                (_, Some(true)) => Ok((CLOSED, json!("Closed"))),
                (Some(cents), _) => Ok((DEPOSITED, json!({ "Deposited": { "cents": cents } }))),
                _ => Err("a Settled event has cents or is closing".into()),
            }
        })
        .step(GAPPED, 2, Ok)
        .step(FAILING, 1, |_: Value| {
            Err("the suite's failing upcaster refuses every event".into())
        })
        .build()
        .expect("the suite's upcasters fit together")
}

fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).expect("a valid stream id")
}

/// An event as the code of `schema_version` wrote it.
fn stored(event_type: &str, schema_version: u32, payload: Value) -> NewEvent {
    NewEvent::from_parts(
        EventType::try_new(event_type).unwrap(),
        payload,
        EventMetadata::default(),
    )
    .unwrap()
    .with_schema_version(schema_version)
    .unwrap()
}

/// Four deposits of amounts 1 to 4, stored in every shape there was.
fn history() -> Vec<NewEvent> {
    vec![
        stored(DEPOSITED, 1, json!({ "Deposited": { "cents": 1 } })),
        stored(
            DEPOSITED,
            2,
            json!({ "Deposited": { "cents": 2, "reference": "r2" } }),
        ),
        NewEvent::from_event(
            &EvolvingEvent::Deposited {
                amount: 3,
                reference: None,
            },
            EventMetadata::default(),
        )
        .unwrap(),
        stored(CREDITED, 1, json!({ "Credited": { "cents": 4 } })),
    ]
}

/// What [`history`] reads as now.
fn current_history() -> Vec<EvolvingEvent> {
    let deposit = |amount, reference: Option<&str>| EvolvingEvent::Deposited {
        amount,
        reference: reference.map(str::to_owned),
    };
    vec![
        deposit(1, None),
        deposit(2, Some("r2")),
        deposit(3, None),
        deposit(4, None),
    ]
}

/// Writes `events` to `stream` as older code did: without upcasters.
async fn write_as_old_code<S: EventStore>(raw: &S, stream: &StreamId, events: Vec<NewEvent>) {
    raw.append(AppendRequest::single(
        stream.clone(),
        ExpectedVersion::Any,
        events,
    ))
    .await
    .expect("the store without upcasters writes any shape");
}

/// Checks events read through the upcasters are the current history.
fn assert_current(events: &[RecordedEvent], what: &str) {
    for event in events {
        assert_eq!(event.event_type.as_ref(), DEPOSITED, "{what}: type name");
        assert_eq!(event.schema_version, 3, "{what}: schema version");
    }
    let decoded: Vec<EvolvingEvent> = events
        .iter()
        .map(|e| e.decode::<EvolvingEvent>().unwrap().payload)
        .collect();
    assert_eq!(decoded, current_history(), "{what}: payloads");
}

fn everything() -> ReadAllQuery {
    ReadAllQuery::from_start().page_size(NonZeroUsize::new(10_000).unwrap())
}

/// Every event keeps the schema version it was written with, on every read
/// path; events written without one are version 1.
pub async fn schema_versions_are_stored_and_read_back<S, K>(_store: S, raw: S, _checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-versions");
    write_as_old_code(&raw, &id, history()).await;
    let expected = [
        (DEPOSITED, 1),
        (DEPOSITED, 2),
        (DEPOSITED, 3),
        (CREDITED, 1),
    ];
    let seen = |events: &[RecordedEvent]| -> Vec<(String, u32)> {
        events
            .iter()
            .map(|e| (e.event_type.to_string(), e.schema_version))
            .collect()
    };
    let expected: Vec<(String, u32)> = expected
        .iter()
        .map(|(t, v)| ((*t).to_owned(), *v))
        .collect();
    let read = raw.read_streams(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(seen(&read.events), expected, "read_streams");
    let all = raw.read_all(&everything()).await.unwrap();
    assert_eq!(seen(&all), expected, "read_all");
    let after = raw
        .read_streams_after(&[(id.clone(), StreamVersion::INITIAL)].into())
        .await
        .unwrap();
    assert_eq!(seen(&after.events), expected, "read_streams_after");
}

/// Events stored in every old shape (versions 1 and 2, an old type name)
/// read in the current shape through `read_streams`,
/// `read_streams_after`, `read_all` and subscriptions; the rows are unchanged.
pub async fn old_shapes_are_read_in_their_current_shape<S, K>(store: S, raw: S, _checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-account");
    write_as_old_code(&raw, &id, history()).await;

    let read = store.read_streams(std::slice::from_ref(&id)).await.unwrap();
    assert_current(&read.events, "read_streams");
    assert_eq!(read.version(&id), StreamVersion::new(4));
    let after = store
        .read_streams_after(&[(id.clone(), StreamVersion::INITIAL)].into())
        .await
        .unwrap();
    assert_current(&after.events, "read_streams_after");
    let all = store.read_all(&everything()).await.unwrap();
    assert_current(&all, "read_all");
    let mut subscription = store.subscribe(ReadAllQuery::from_start());
    let mut followed = Vec::new();
    while followed.len() < 4 {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("the subscription delivers the stored events")
            .expect("the subscription goes on");
        followed.push(next.unwrap());
    }
    assert_current(&followed, "subscription");

    let raw_read = raw.read_streams(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(raw_read.events[0].schema_version, 1, "the row is unchanged");
    assert_eq!(raw_read.events[3].event_type.as_ref(), CREDITED);
    assert_eq!(
        raw_read.events[0].payload.to_value().unwrap(),
        json!({ "Deposited": { "cents": 1 } }),
        "the row is unchanged"
    );
}

/// A type filter names current types: it finds the events stored under an
/// old name, and the old name finds nothing (no event is of that type now).
pub async fn a_type_filter_finds_events_stored_under_old_names<S, K>(
    store: S,
    raw: S,
    _checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-filtered");
    let mut events = history();
    events.insert(
        1,
        NewEvent::from_event(&EvolvingEvent::Closed, EventMetadata::default()).unwrap(),
    );
    write_as_old_code(&raw, &id, events).await;
    let by_type = |name: &str| everything().event_types([EventType::try_new(name).unwrap()]);
    let deposits = store.read_all(&by_type(DEPOSITED)).await.unwrap();
    assert_current(&deposits, "read_all filtered by the current name");
    let old_name = store.read_all(&by_type(CREDITED)).await.unwrap();
    assert!(old_name.is_empty(), "{old_name:?}");
    let closed = store.read_all(&by_type(CLOSED)).await.unwrap();
    assert_eq!(closed.len(), 1);

    let mut subscription = store.subscribe(
        ReadAllQuery::from_start().event_types([EventType::try_new(DEPOSITED).unwrap()]),
    );
    let mut followed = Vec::new();
    while followed.len() < 4 {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("the subscription delivers the stored deposits")
            .expect("the subscription goes on");
        followed.push(next.unwrap());
    }
    assert_current(&followed, "filtered subscription");
}

/// A settlement as the old code wrote it.
fn settled(cents: u64, closing: bool) -> NewEvent {
    stored(
        SETTLED,
        1,
        json!({ "Settled": { "cents": cents, "closing": closing } }),
    )
}

/// Deposits of amounts 1 to 4 (stored as deposits, settlements and under
/// the old name) between closings (stored as closings and settlements).
fn settled_history() -> Vec<NewEvent> {
    let closed = || NewEvent::from_event(&EvolvingEvent::Closed, EventMetadata::default()).unwrap();
    let mut events = vec![
        settled(2, true),
        settled(2, true),
        settled(5, true),
        closed(),
        settled(6, true),
    ];
    // Amounts 1..=4 as deposits, between closings: 1 stored as a
    // deposit, 2 and 3 settled, 4 stored under the old name.
    let mut deposits = history();
    events.insert(0, deposits.remove(0));
    events.insert(2, settled(2, false));
    events.insert(4, settled(3, false));
    events.push(deposits.remove(2));
    events
}

/// The amounts of `events`, all deposits.
fn amounts(events: &[RecordedEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| match e.decode::<EvolvingEvent>().unwrap().payload {
            EvolvingEvent::Deposited { amount, .. } => amount,
            EvolvingEvent::Closed => panic!("a closing in a page of deposits"),
        })
        .collect()
}

/// A split reads each stored event as the type its content says, on every
/// path; a type filter then delivers only the events read as the wanted
/// type, in full pages, without holes or repeats, whatever the page size.
pub async fn a_split_reads_each_event_as_the_type_its_content_says<S, K>(
    store: S,
    raw: S,
    _checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-settled");
    write_as_old_code(&raw, &id, settled_history()).await;

    let all = store.read_all(&everything()).await.unwrap();
    let types: Vec<&str> = all.iter().map(|e| e.event_type.as_ref()).collect();
    assert_eq!(
        types,
        [
            DEPOSITED, CLOSED, DEPOSITED, CLOSED, DEPOSITED, CLOSED, CLOSED, CLOSED, DEPOSITED
        ]
    );
    let read = store.read_streams(std::slice::from_ref(&id)).await.unwrap();
    assert_eq!(read.events, all, "read_streams reads as read_all does");

    for size in [1, 2, 3, 10] {
        let mut query = ReadAllQuery::from_start()
            .page_size(NonZeroUsize::new(size).unwrap())
            .event_types([EventType::try_new(DEPOSITED).unwrap()]);
        let mut found = Vec::new();
        loop {
            let page = store.read_all(&query).await.unwrap();
            let Some(last) = page.last() else { break };
            query.after = last.position;
            assert!(page.len() <= size);
            if page.len() < size {
                // A short page means the reader has caught up.
                found.extend(amounts(&page));
                assert!(store.read_all(&query).await.unwrap().is_empty());
                break;
            }
            found.extend(amounts(&page));
        }
        assert_eq!(found, [1, 2, 3, 4], "pages of {size}");
    }
    let closings = store
        .read_all(&everything().event_types([EventType::try_new(CLOSED).unwrap()]))
        .await
        .unwrap();
    assert_eq!(closings.len(), 5);

    let mut subscription = store.subscribe(
        ReadAllQuery::from_start()
            .page_size(NonZeroUsize::new(1).unwrap())
            .event_types([EventType::try_new(DEPOSITED).unwrap()]),
    );
    let mut followed = Vec::new();
    while followed.len() < 4 {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("the subscription delivers the stored deposits")
            .expect("the subscription goes on");
        followed.push(next.unwrap());
    }
    assert_eq!(amounts(&followed), [1, 2, 3, 4]);

    match store
        .append(AppendRequest::single(
            id.clone(),
            ExpectedVersion::Any,
            vec![settled(1, false)],
        ))
        .await
    {
        Err(StoreError::Outdated(outdated)) => {
            assert!(
                matches!(outdated.reason, Outdated::Split { .. }),
                "{outdated}"
            );
        }
        other => panic!("writing a split type must be refused, got {other:?}"),
    }
}

/// Pages of one stream read old events in their current shapes, and a
/// type filter on a current name finds them under old names and through
/// splits, in full pages, forwards and backwards.
pub async fn stream_pages_read_old_events_in_their_current_shape<S, K>(
    store: S,
    raw: S,
    _checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-paged");
    write_as_old_code(&raw, &id, settled_history()).await;
    let read = store.read_streams(std::slice::from_ref(&id)).await.unwrap();
    let whole = store
        .read_stream(&StreamQuery::forwards(id.clone()))
        .await
        .unwrap();
    assert_eq!(
        whole.events, read.events,
        "a page reads as read_streams does"
    );
    assert_eq!(whole.stream_version, StreamVersion::new(9));
    let deposited = EventType::try_new(DEPOSITED).unwrap();
    for size in [1, 2, 3, 10] {
        let limit = NonZeroUsize::new(size).unwrap();
        for (first, expected) in [
            (StreamQuery::forwards(id.clone()), vec![1, 2, 3, 4]),
            (StreamQuery::backwards(id.clone()), vec![4, 3, 2, 1]),
        ] {
            let direction = first.direction;
            let mut next = Some(first.limit(limit).event_types([deposited.clone()]));
            let mut found = Vec::new();
            while let Some(query) = next {
                let page = store.read_stream(&query).await.unwrap();
                assert!(page.events.len() <= size);
                if page.next.is_some() {
                    assert_eq!(page.events.len(), size, "only the last page is short");
                }
                assert_eq!(page.stream_version, StreamVersion::new(9));
                found.extend(amounts(&page.events));
                next = page.next;
                assert!(found.len() <= 4, "no event twice");
            }
            assert_eq!(found, expected, "pages of {size}, {direction:?}");
        }
    }
}

/// A command that sums the deposits of one account and records the total.
struct Audit {
    account: StreamId,
}

impl crate::CommandStreams for Audit {
    fn declared_streams(&self) -> Vec<StreamId> {
        vec![self.account.clone()]
    }
}

impl crate::CommandLogic for Audit {
    type State = (u64, Vec<Option<String>>);
    type Event = EvolvingEvent;
    type Error = Infallible;

    fn apply(&self, state: &mut Self::State, event: &crate::StoredEvent<EvolvingEvent>) {
        if let EvolvingEvent::Deposited { amount, reference } = &event.payload {
            state.0 += amount;
            state.1.push(reference.clone());
        }
    }

    fn handle(
        &self,
        state: Self::State,
        _: &mut crate::HandleContext<'_, Self>,
    ) -> Result<crate::Writes<Self>, Infallible> {
        let stream = crate::__private::declared(&self.account);
        Ok(crate::Writes::new().emit(
            stream,
            EvolvingEvent::Deposited {
                amount: state.0,
                reference: Some(format!("audit of {}", state.1.len())),
            },
        ))
    }
}

/// The executor folds events stored in old shapes in their current shape,
/// and writes the current one.
pub async fn a_command_folds_old_events_in_their_current_shape<S, K>(
    store: S,
    raw: S,
    _checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-audited");
    write_as_old_code(&raw, &id, history()).await;
    let executor = CommandExecutor::new(store.clone());
    let audit = Audit {
        account: id.clone(),
    };
    executor
        .execute(&audit, ExecutionOptions::default())
        .await
        .unwrap();
    let read = store.read_streams(std::slice::from_ref(&id)).await.unwrap();
    let last = read.events.last().unwrap();
    assert_eq!(last.schema_version, 3, "written in the current shape");
    assert_eq!(
        last.decode::<EvolvingEvent>().unwrap().payload,
        EvolvingEvent::Deposited {
            amount: 10,
            reference: Some("audit of 4".to_owned()),
        },
        "1 + 2 + 3 + 4, from every stored shape"
    );
}

/// A projection that sums deposits.
#[derive(Debug, Default)]
struct Totals {
    amounts: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Projection for Totals {
    type Error = crate::DecodeError;

    fn name(&self) -> &str {
        "evolution-totals"
    }

    fn event_types(&self) -> Option<Vec<EventType>> {
        Some(vec![EventType::try_new(DEPOSITED).unwrap()])
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), crate::DecodeError> {
        if let EvolvingEvent::Deposited { amount, .. } = event.decode::<EvolvingEvent>()?.payload {
            self.amounts.lock().unwrap().push(amount);
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), crate::DecodeError> {
        self.amounts.lock().unwrap().clear();
        Ok(())
    }
}

/// A projection runner applies events stored in old shapes, under old
/// names included, in their current shape.
pub async fn a_projection_applies_old_events_in_their_current_shape<S, K>(
    store: S,
    raw: S,
    checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    write_as_old_code(&raw, &stream("evolution-projected"), history()).await;
    let amounts = Arc::default();
    let totals = Totals {
        amounts: Arc::clone(&amounts),
    };
    let handle = ProjectionRunner::new(store, totals, checkpoints).start();
    let status = tokio::time::timeout(
        crate::projection_conformance::WAIT_LIMIT,
        handle.wait_for(|s| s.events_processed >= 4),
    )
    .await
    .expect("the projection applies the stored events in time");
    assert!(status.is_ok(), "{status:?}");
    handle.stop().await.unwrap();
    assert_eq!(*amounts.lock().unwrap(), vec![1, 2, 3, 4]);
}

/// A projection whose events include one that cannot be upcast meets it
/// after every good event before it, under its error policy: `Stop` (the
/// default) fails naming the event, `Skip` records it and goes on.
pub async fn a_projection_meets_an_upcast_failure_under_its_error_policy<S, K>(
    store: S,
    raw: S,
    checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
{
    let mut events = history();
    events.insert(2, stored(FAILING, 1, json!({ "n": 1 })));
    write_as_old_code(&raw, &stream("evolution-poisoned"), events).await;
    let all_types = |amounts: &Arc<std::sync::Mutex<Vec<u64>>>| TotalsOfAll {
        totals: Totals {
            amounts: Arc::clone(amounts),
        },
    };
    let stopped = Arc::default();
    let handle =
        ProjectionRunner::new(store.clone(), all_types(&stopped), checkpoints.clone()).start();
    let status = wait(&handle, "the runner to fail", |s| {
        s.state == crate::ProjectionState::Failed
    })
    .await;
    assert_eq!(
        *stopped.lock().unwrap(),
        vec![1, 2],
        "everything before it applied"
    );
    let error = status.last_error.expect("the failure is recorded");
    assert!(
        error.contains(FAILING) && error.contains("refuses every event"),
        "{error}"
    );
    let _ = handle.stop().await;

    let skipped = Arc::default();
    let handle = ProjectionRunner::new(store, all_types(&skipped), checkpoints)
        .with_options(crate::ProjectionOptions::default().on_error(crate::ErrorPolicy::Skip))
        .rebuild_from_zero()
        .start();
    let status = wait(&handle, "the runner to skip it", |s| {
        s.events_processed >= 4
    })
    .await;
    assert_eq!(status.events_skipped, 1, "{status:?}");
    handle.stop().await.unwrap();
    assert_eq!(*skipped.lock().unwrap(), vec![1, 2, 3, 4]);
}

/// The runner's status once `done` holds (or it ended).
async fn wait<P>(
    handle: &crate::ProjectionHandle<P>,
    what: &str,
    done: impl FnMut(&crate::ProjectionStatus) -> bool,
) -> crate::ProjectionStatus {
    match tokio::time::timeout(
        crate::projection_conformance::WAIT_LIMIT,
        handle.wait_for(done),
    )
    .await
    {
        Ok(Ok(status) | Err(status)) => status,
        Err(_) => panic!("timed out waiting for {what}: {:?}", handle.status()),
    }
}

/// [`Totals`] over every type, so that it meets the failing one.
#[derive(Debug)]
struct TotalsOfAll {
    totals: Totals,
}

impl Projection for TotalsOfAll {
    type Error = crate::DecodeError;

    fn name(&self) -> &str {
        "evolution-totals-of-all"
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), crate::DecodeError> {
        self.totals.apply(event).await
    }

    async fn reset(&mut self) -> Result<(), crate::DecodeError> {
        self.totals.reset().await
    }
}

/// An event whose stored version has no path to the current one is a typed
/// error naming it, after every good event before it; a reader of the
/// global order can go on past it.
pub async fn a_missing_upcaster_is_a_typed_error_after_the_good_events<S, K>(
    store: S,
    raw: S,
    _checkpoints: K,
) where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-gapped");
    let good = NewEvent::from_event(&EvolvingEvent::Closed, EventMetadata::default()).unwrap();
    write_as_old_code(
        &raw,
        &id,
        vec![good.clone(), stored(GAPPED, 1, json!({})), good],
    )
    .await;
    let error = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect_err("a stream holding the event cannot be folded");
    let StoreError::Upcast(error) = error else {
        panic!("expected an upcast error, got {error:?}");
    };
    assert_eq!(error.stream_id, id);
    assert_eq!(error.version, StreamVersion::new(2));
    assert_eq!(error.event_type.as_ref(), GAPPED);
    assert_eq!(error.schema_version, 1);
    assert!(
        matches!(
            &error.problem,
            UpcastProblem::Missing { at: 1, next: 2, .. }
        ),
        "{:?}",
        error.problem
    );
    let message = error.to_string();
    for part in [
        &error.event_id.to_string(),
        id.as_ref(),
        GAPPED,
        "schema version 1",
    ] {
        assert!(message.contains(part), "{message:?} names {part}");
    }

    let first = store.read_all(&everything()).await.unwrap();
    assert_eq!(first.len(), 1, "the good event before it is delivered");
    let failed = store
        .read_all(&ReadAllQuery::after(first[0].position))
        .await
        .expect_err("then the event that cannot be upcast");
    let position = failed
        .undecodable_position()
        .expect("the error names its position");
    let rest = store
        .read_all(&ReadAllQuery::after(position))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1, "readers go on past it");
}

/// An upcaster that fails is a typed error naming the event and the upcaster.
pub async fn a_failing_upcaster_is_a_typed_error<S, K>(store: S, raw: S, _checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-failing");
    write_as_old_code(&raw, &id, vec![stored(FAILING, 1, json!({ "n": 1 }))]).await;
    let error = store
        .read_streams(std::slice::from_ref(&id))
        .await
        .expect_err("the upcaster fails");
    let StoreError::Upcast(error) = error else {
        panic!("expected an upcast error, got {error:?}");
    };
    assert!(
        matches!(&error.problem, UpcastProblem::Failed { from: Some(1), .. }),
        "{:?}",
        error.problem
    );
    assert!(
        error.to_string().contains("refuses every event"),
        "the upcaster's own message: {error}"
    );
    // As `anyhow`'s `{:#}` prints it: every cause once.
    let wrapped = StoreError::Upcast(error);
    let mut chain = wrapped.to_string();
    let mut source = std::error::Error::source(&wrapped);
    while let Some(cause) = source {
        chain = format!("{chain}: {cause}");
        source = cause.source();
    }
    assert_eq!(chain.matches("refuses every event").count(), 1, "{chain}");
    assert_eq!(chain.matches("cannot be upcast").count(), 1, "{chain}");
    let executor = CommandExecutor::new(store);
    let result = executor
        .execute(&Audit { account: id }, ExecutionOptions::default())
        .await;
    assert!(
        matches!(
            result,
            Err(ExecutionError::Store {
                source: StoreError::Upcast(_),
                ..
            })
        ),
        "{result:?}"
    );
}

/// A store with upcasters refuses events of a renamed type or of a version
/// an upcaster reads from, and writes nothing; the current shape is accepted.
pub async fn outdated_shapes_are_refused_on_write<S, K>(store: S, _raw: S, _checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-outdated");
    let attempt =
        |event: NewEvent| AppendRequest::single(id.clone(), ExpectedVersion::Any, vec![event]);
    for (event, what) in [
        (stored(DEPOSITED, 2, json!({})), "an upcast source version"),
        (stored(DEPOSITED, 1, json!({})), "an older version"),
        (stored(CREDITED, 1, json!({})), "a renamed type"),
    ] {
        match store.append(attempt(event)).await {
            Err(StoreError::Outdated(outdated)) => {
                assert_eq!(outdated.stream_id, id, "{what}");
                match outdated.reason {
                    Outdated::Superseded { from, current } => {
                        assert_eq!((from, current), (2, 3), "{what}");
                    }
                    Outdated::Renamed { to, .. } => assert_eq!(to.as_ref(), DEPOSITED),
                    Outdated::Split { .. } => panic!("{what}: not a split"),
                }
            }
            other => panic!("{what} must be refused, got {other:?}"),
        }
    }
    let read = store.read_streams(std::slice::from_ref(&id)).await.unwrap();
    assert!(read.events.is_empty(), "nothing was written");
    store
        .append(attempt(stored(
            DEPOSITED,
            3,
            json!({ "Deposited": { "amount": 1, "reference": null } }),
        )))
        .await
        .expect("the current version is written");
    store
        .append(attempt(stored(DEPOSITED, 4, json!({}))))
        .await
        .expect("a version newer than the upcasters know is newer code's: written");
}

/// Decoding checks the version an event was read at against the one its
/// Rust type declares: older with no upcaster, or newer (old code reading
/// new events), is a typed error, never a silent misread.
pub async fn decoding_checks_the_declared_schema_version<S, K>(store: S, raw: S, _checkpoints: K)
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore,
{
    let id = stream("evolution-declared");
    write_as_old_code(
        &raw,
        &id,
        vec![
            stored(
                DEPOSITED,
                2,
                json!({ "Deposited": { "amount": 1, "reference": null } }),
            ),
            stored(
                DEPOSITED,
                4,
                json!({ "Deposited": { "amount": 1, "reference": null } }),
            ),
        ],
    )
    .await;
    // Without upcasters version 2 stays version 2, which fits the
    // payload but not the declared shape.
    let read = raw.read_streams(std::slice::from_ref(&id)).await.unwrap();
    let older = read.events[0].decode::<EvolvingEvent>().unwrap_err();
    assert!(
        matches!(
            older.problem,
            DecodeProblem::NoUpcaster {
                read: 2,
                declared: 3
            }
        ),
        "{older:?}"
    );
    assert!(
        older.to_string().contains("register an upcaster"),
        "{older}"
    );
    let newer = read.events[1].decode::<EvolvingEvent>().unwrap_err();
    assert!(
        matches!(
            newer.problem,
            DecodeProblem::NewerThanCode {
                read: 4,
                declared: 3
            }
        ),
        "{newer:?}"
    );
    assert!(
        newer.to_string().contains("deploy the newer code"),
        "{newer}"
    );
    // A command on a stream holding an event newer code wrote fails
    // before it writes anything.
    let newer_stream = stream("evolution-newer");
    write_as_old_code(
        &raw,
        &newer_stream,
        vec![stored(
            DEPOSITED,
            4,
            json!({ "Deposited": { "amount": 1, "reference": null } }),
        )],
    )
    .await;
    let executor = CommandExecutor::new(store.clone());
    let result = executor
        .execute(
            &Audit {
                account: newer_stream.clone(),
            },
            ExecutionOptions::default(),
        )
        .await;
    assert!(
        matches!(result, Err(ExecutionError::Decode(_))),
        "{result:?}"
    );
    let read = store
        .read_streams(std::slice::from_ref(&newer_stream))
        .await
        .unwrap();
    assert_eq!(read.events.len(), 1, "nothing was written");
}
