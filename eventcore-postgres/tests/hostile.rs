//! Hostile input: names and payloads built to break SQL, JSON or the reader.
//! Each is a typed error, or stored and read back exactly; nothing else is affected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use eventcore::{
    AppendRequest, EncodeError, EventMetadata, EventStore, EventType, ExpectedVersion,
    MAX_JSON_DEPTH, NewEvent, ReadAllQuery, StoreError, StreamId,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore};
use serde_json::{Value, json};

const SQLISH: &[&str] = &[
    "a'; DROP TABLE eventcore_events; --",
    "\"quoted\" name",
    "back\\slash",
    "semi;colon",
    "-- comment",
    "%_like_wildcards_%",
    "ünïcødé/流/🚀",
    "$1::text",
];

fn nested(depth: usize) -> Value {
    let mut value = json!("bottom");
    for _ in 0..depth {
        value = json!([value]);
    }
    value
}

async fn append_one(
    store: &PostgresEventStore,
    stream: &StreamId,
    event_type: &str,
    payload: Value,
) {
    let event = NewEvent::from_parts(
        EventType::try_new(event_type).unwrap(),
        payload,
        EventMetadata::default(),
    )
    .unwrap();
    store
        .append(AppendRequest::single(
            stream.clone(),
            ExpectedVersion::Any,
            vec![event],
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_look_like_sql_are_only_names() {
    let store = support::fresh_store().await;
    let long = "é".repeat(255);
    let mut names: Vec<&str> = SQLISH.to_vec();
    names.push(&long);
    for name in &names {
        let stream = StreamId::try_new(*name).unwrap();
        append_one(&store, &stream, name, json!({ "name": name })).await;
        let read = store
            .read_streams(std::slice::from_ref(&stream))
            .await
            .unwrap();
        assert_eq!(read.events.len(), 1, "{name}");
        let event = &read.events[0];
        assert_eq!(event.stream_id.as_ref(), *name);
        assert_eq!(event.event_type.as_ref(), *name);
        assert_eq!(event.payload.to_value().unwrap(), json!({ "name": name }));
        let by_type = store
            .read_all(&ReadAllQuery::from_start().event_types([EventType::try_new(*name).unwrap()]))
            .await
            .unwrap();
        assert_eq!(by_type.len(), 1, "type filter on {name}");
    }
    let all = store.read_all(&ReadAllQuery::from_start()).await.unwrap();
    assert_eq!(
        all.len(),
        names.len(),
        "every table is still there, nothing else written"
    );
}

#[test]
fn invalid_names_are_typed_errors() {
    let ten_kb = "x".repeat(10 * 1024);
    for bad in [
        "",
        "nul\0inside",
        "new\nline",
        "tab\there",
        "\u{1b}[31m",
        ten_kb.as_str(),
    ] {
        assert!(StreamId::try_new(bad).is_err(), "stream id {bad:?}");
        assert!(EventType::try_new(bad).is_err(), "event type {bad:?}");
    }
    // Stream ids are trimmed, so blanks alone are empty.
    assert!(StreamId::try_new("   ").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_come_back_exactly() {
    let store = support::fresh_store().await;
    let stream = StreamId::try_new("payloads").unwrap();
    let payloads = vec![
        json!({ "quote": "it's \"quoted\"", "backslash": "C:\\path\\", "sql": SQLISH }),
        json!({ "unicode": "ünïcødé 流 🚀 \u{FFFF} \u{200B}", "escapes": "\u{7}\u{8}\u{1f}" }),
        json!({ "big": i64::MAX, "bigger": u64::MAX, "small": i64::MIN, "float": 0.1, "huge": 1e308 }),
        json!({ "ten_kb": "y".repeat(10 * 1024) }),
        nested(MAX_JSON_DEPTH),
        json!([null, true, false, [], {}, ""]),
    ];
    for payload in &payloads {
        append_one(&store, &stream, "Payload", payload.clone()).await;
    }
    let read = store
        .read_streams(std::slice::from_ref(&stream))
        .await
        .unwrap();
    let back: Vec<Value> = read
        .events
        .iter()
        .map(|e| e.payload.to_value().unwrap())
        .collect();
    assert_eq!(back, payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_megabyte_payload_is_stored_and_read_back() {
    let store = support::fresh_store().await;
    let stream = StreamId::try_new("huge").unwrap();
    let payload = json!({ "blob": "z".repeat(5 * 1024 * 1024) });
    append_one(&store, &stream, "Huge", payload.clone()).await;
    let read = store
        .read_streams(std::slice::from_ref(&stream))
        .await
        .unwrap();
    assert_eq!(read.events[0].payload.to_value().unwrap(), payload);
}

#[test]
fn json_nested_too_deep_for_readers_is_refused_before_any_store() {
    for (depth, ok) in [
        (MAX_JSON_DEPTH, true),
        (MAX_JSON_DEPTH + 1, false),
        (1_000, false),
    ] {
        let made = NewEvent::from_parts(
            EventType::try_new("Deep").unwrap(),
            nested(depth),
            EventMetadata::default(),
        );
        match made {
            Ok(_) => assert!(ok, "depth {depth} accepted"),
            Err(EncodeError::TooDeep { part, .. }) => {
                assert!(!ok, "depth {depth} refused");
                assert_eq!(part, "payload");
            }
            Err(other) => panic!("depth {depth}: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_edited_to_garbage_is_a_typed_error_and_harms_nothing_else() {
    let store = support::fresh_store().await;
    let victim = StreamId::try_new("victim").unwrap();
    let bystander = StreamId::try_new("bystander").unwrap();
    append_one(&store, &victim, "Fine", json!({ "n": 1 })).await;
    append_one(&store, &bystander, "Fine", json!({ "n": 2 })).await;
    // An operator goes around the append-only guard and breaks a row.
    let table = format!("\"{}\".eventcore_events", store.schema());
    let mut tx = store.pool().begin().await.unwrap();
    for statement in [
        format!("ALTER TABLE {table} DISABLE TRIGGER eventcore_events_append_only"),
        format!(
            "UPDATE {table} SET metadata = '\"garbage\"', event_type = '' WHERE stream_id = 'victim'"
        ),
        format!("ALTER TABLE {table} ENABLE TRIGGER eventcore_events_append_only"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let error = store.read_streams(&[victim]).await.unwrap_err();
    assert!(matches!(error, StoreError::Undecodable { .. }), "{error:?}");
    assert!(error.to_string().contains("cannot be read"), "{error}");
    let read = store.read_streams(&[bystander]).await.unwrap();
    assert_eq!(
        read.events[0].payload.to_value().unwrap(),
        json!({ "n": 2 })
    );
}

/// A reading of a sensor; its number may be anything a float can be.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Measured {
    celsius: f64,
}

impl eventcore::Event for Measured {
    fn event_type(&self) -> &'static str {
        "Measured"
    }
}

#[derive(eventcore::Command)]
struct Measure {
    #[stream]
    sensor: StreamId,
    celsius: f64,
}

impl eventcore::CommandLogic for Measure {
    type State = ();
    type Event = Measured;
    type Error = std::convert::Infallible;

    fn apply(&self, _: &mut (), _: &eventcore::StoredEvent<Measured>) {}

    fn handle(
        &self,
        _: (),
        _: &mut eventcore::HandleContext<'_, Self>,
    ) -> Result<eventcore::Writes<Self>, Self::Error> {
        Ok(eventcore::Writes::new().emit(
            self.sensor_stream(),
            Measured {
                celsius: self.celsius,
            },
        ))
    }
}

/// NaN and the infinities would be stored as `null` and poison the stream
/// for every later reader: the command is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_emitting_nan_or_infinity_writes_nothing() {
    let store = support::fresh_store().await;
    let executor = eventcore::CommandExecutor::new(store.clone());
    let sensor = StreamId::try_new("sensor").unwrap();
    for celsius in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let command = Measure {
            sensor: sensor.clone(),
            celsius,
        };
        let error = executor
            .execute(&command, eventcore::ExecutionOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                eventcore::ExecutionError::Encode(EncodeError::NonFinite { .. })
            ),
            "{error:?}"
        );
    }
    let read = store
        .read_streams(std::slice::from_ref(&sensor))
        .await
        .unwrap();
    assert!(read.events.is_empty(), "nothing written");
    let fine = Measure {
        sensor: sensor.clone(),
        celsius: -40.0,
    };
    executor
        .execute(&fine, eventcore::ExecutionOptions::default())
        .await
        .unwrap();
    let read = store.read_streams(&[sensor]).await.unwrap();
    let stored: Measured = read.events[0].decode().unwrap().payload;
    assert_eq!(stored.celsius, -40.0);
}

/// Expired idempotency keys are purged, younger ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_older_than_the_retention_are_purged() {
    let keep = support::fresh_config()
        .await
        .idempotency_retention(std::time::Duration::from_secs(3600));
    let store = eventcore_postgres::testing::store_with(keep).await.unwrap();
    let key = eventcore::IdempotencyKey::try_new("kept").unwrap();
    let stream = StreamId::try_new("keyed").unwrap();
    store
        .append(
            AppendRequest::single(
                stream.clone(),
                ExpectedVersion::Any,
                vec![
                    NewEvent::from_parts(
                        EventType::try_new("Marked").unwrap(),
                        json!({}),
                        EventMetadata::default(),
                    )
                    .unwrap(),
                ],
            )
            .with_idempotency_key(key.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        store.purge_idempotency_keys().await.unwrap(),
        0,
        "within retention"
    );
    assert!(store.idempotent_result(&key, None).await.unwrap().is_some());

    let expire_at_once = PostgresConfig::new(
        eventcore_postgres::testing::test_database_url()
            .await
            .unwrap(),
    )
    .schema(store.schema().as_str())
    .unwrap()
    .idempotency_retention(std::time::Duration::ZERO);
    let purging = PostgresEventStore::new(expire_at_once).await.unwrap();
    assert_eq!(purging.purge_idempotency_keys().await.unwrap(), 1);
    assert!(store.idempotent_result(&key, None).await.unwrap().is_none());
}
