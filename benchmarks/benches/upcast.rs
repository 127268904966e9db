//! What reading through upcasters costs: decoding a current event, with no
//! upcasters and with upcasters registered for other types only (the cost
//! of an evolving application's unchanged events), against decoding a
//! version 1 event through a two-step chain; and a whole stream read from
//! the memory store with and without such upcasters.
//! `cargo bench -p eventcore-benchmarks --bench upcast`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use eventcore::{
    AppendRequest, Event, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent,
    RecordedEvent, StreamId, Upcasters,
};
use eventcore_memory::InMemoryEventStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A deposit in its third shape.
#[derive(Debug, Serialize, Deserialize, Event)]
enum Ledger {
    #[event(version = 3)]
    Deposited {
        amount: u64,
        reference: Option<String>,
        account: String,
    },
}

/// Two steps for `Deposited` (add `reference`, rename `cents`), and steps
/// for two types the benchmark never reads.
fn upcasters() -> Upcasters {
    Upcasters::builder()
        .step("Deposited", 1, |mut v: Value| {
            v["Deposited"]["reference"] = Value::Null;
            Ok(v)
        })
        .step("Deposited", 2, |mut v: Value| {
            let fields = v["Deposited"].as_object_mut().ok_or("a Deposited object")?;
            let cents = fields.remove("cents").ok_or("cents")?;
            fields.insert("amount".to_owned(), cents);
            Ok(v)
        })
        .step("Withdrawn", 1, Ok)
        .rename("Credited", "Other")
        .build()
        .unwrap()
}

/// Upcasters for other types only: `Deposited` is read as stored.
fn other_types_only() -> Upcasters {
    Upcasters::builder()
        .step("Withdrawn", 1, Ok)
        .rename("Credited", "Other")
        .build()
        .unwrap()
}

fn stored(version: u32, payload: Value) -> NewEvent {
    NewEvent::from_parts(
        EventType::try_new("Deposited").unwrap(),
        payload,
        EventMetadata::default(),
    )
    .unwrap()
    .with_schema_version(version)
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// One event of each shape, read back from a memory store without upcasters.
fn recorded() -> (RecordedEvent, RecordedEvent) {
    let store = InMemoryEventStore::new();
    let stream = StreamId::try_new("account-1").unwrap();
    let v1 = stored(
        1,
        json!({ "Deposited": { "cents": 5, "account": "account-1" } }),
    );
    let v3 = NewEvent::from_event(
        &Ledger::Deposited {
            amount: 5,
            reference: None,
            account: "account-1".into(),
        },
        EventMetadata::default(),
    )
    .unwrap();
    runtime().block_on(async {
        store
            .append(AppendRequest::single(
                stream.clone(),
                ExpectedVersion::Any,
                vec![v1, v3],
            ))
            .await
            .unwrap();
        let mut events = store.read_streams(&[stream]).await.unwrap().events;
        let v3 = events.pop().unwrap();
        let v1 = events.pop().unwrap();
        (v1, v3)
    })
}

fn decoding(c: &mut Criterion) {
    let (v1, v3) = recorded();
    let none = Upcasters::none();
    let others = other_types_only();
    let chain = upcasters();
    let mut group = c.benchmark_group("decode");
    group.bench_function("current event, no upcasters", |b| {
        b.iter(|| {
            let event = none.upcast(black_box(v3.clone())).unwrap();
            black_box(event.into_decoded::<Ledger>().unwrap())
        });
    });
    group.bench_function("current event, upcasters for other types", |b| {
        b.iter(|| {
            let event = others.upcast(black_box(v3.clone())).unwrap();
            black_box(event.into_decoded::<Ledger>().unwrap())
        });
    });
    group.bench_function("current event, its own type's chain registered", |b| {
        b.iter(|| {
            let event = chain.upcast(black_box(v3.clone())).unwrap();
            black_box(event.into_decoded::<Ledger>().unwrap())
        });
    });
    group.bench_function("v1 event through a two-step chain", |b| {
        b.iter(|| {
            let event = chain.upcast(black_box(v1.clone())).unwrap();
            black_box(event.into_decoded::<Ledger>().unwrap())
        });
    });
    group.finish();
}

fn reading(c: &mut Criterion) {
    let runtime = runtime();
    let store = InMemoryEventStore::new();
    let stream = StreamId::try_new("account-1").unwrap();
    let events: Vec<NewEvent> = (0..100)
        .map(|n| {
            NewEvent::from_event(
                &Ledger::Deposited {
                    amount: n,
                    reference: None,
                    account: "account-1".into(),
                },
                EventMetadata::default(),
            )
            .unwrap()
        })
        .collect();
    runtime
        .block_on(store.append(AppendRequest::single(
            stream.clone(),
            ExpectedVersion::Any,
            events,
        )))
        .unwrap();
    let streams = [stream];
    let mut group = c.benchmark_group("read 100 current events");
    for (name, store) in [
        ("no upcasters", store.clone()),
        (
            "upcasters for other types",
            store.clone().with_upcasters(other_types_only()),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async { black_box(store.read_streams(&streams).await.unwrap()) })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decoding, reading);
criterion_main!(benches);
