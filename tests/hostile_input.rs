//! Fuzzing by property: arbitrary input to the parsers and decoders a user's
//! or a database's data reaches. None may panic; each either accepts input
//! that meets its rules or refuses it with a typed error.
//!
//! 1,000 cases per property in CI; more with `PROPTEST_CASES=200000 cargo
//! test -p eventcore-tests --test hostile_input`.

use std::str::FromStr;

use eventcore::{
    EncodeError, Event, EventId, EventMetadata, EventType, GlobalPosition, IdempotencyKey,
    MAX_JSON_DEPTH, NewEvent, Payload, RecordedEvent, StreamId, StreamVersion, UserId,
    conformance::TestEvent,
};
use eventcore_postgres::PostgresConfig;
use proptest::prelude::*;
use serde_json::Value;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// Any string, biased toward the characters validators care about.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \\t\\n\\r\\x00-\\x1f\\x7f'\";\\-\\\\%_a-zé流🚀]{0,300}",
        (0usize..600).prop_map(|n| "é".repeat(n)),
    ]
}

/// Arbitrary JSON, nested up to a depth past the store's limit.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[\\x00-\\x1f'\";\\\\a-zé🚀]{0,12}".prop_map(Value::from),
    ];
    // Deep but narrow: mostly chains that cross the depth limit.
    leaf.prop_recursive(72, 150, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[\\x00a-c]{0,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Any `f64`, NaN and the infinities often.
fn any_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

/// A domain event with floats in several places.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Reading {
    Measured {
        celsius: f64,
        history: Vec<Option<f32>>,
    },
}

impl Event for Reading {
    fn event_type(&self) -> &'static str {
        "Measured"
    }
}

fn recorded(payload: Value, event_type: &str) -> RecordedEvent {
    RecordedEvent {
        id: EventId::new_v7(),
        stream_id: StreamId::try_new("fuzzed").unwrap_or_else(|_| unreachable!()),
        version: StreamVersion::new(1),
        position: GlobalPosition::new(1, 1),
        recorded_at: chrono::Utc::now(),
        event_type: EventType::try_new(event_type).unwrap_or_else(|_| unreachable!()),
        schema_version: 1,
        payload: Payload::from_stored(payload.to_string()),
        metadata: EventMetadata::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn stream_ids_accept_exactly_what_the_rules_allow(raw in hostile_string()) {
        let trimmed = raw.trim();
        let valid = !trimmed.is_empty()
            && trimmed.chars().count() <= 255
            && !trimmed.chars().any(char::is_control);
        match StreamId::try_new(raw.as_str()) {
            Ok(id) => {
                prop_assert!(valid);
                prop_assert_eq!(id.as_ref(), trimmed);
                // What was accepted parses again to the same id.
                prop_assert_eq!(StreamId::from_str(id.as_ref()).ok(), Some(id.clone()));
            }
            Err(_) => prop_assert!(!valid),
        }
    }

    #[test]
    fn event_types_and_keys_accept_exactly_what_the_rules_allow(raw in hostile_string()) {
        let valid = !raw.is_empty()
            && raw.chars().count() <= 255
            && !raw.chars().any(char::is_control);
        prop_assert_eq!(EventType::try_new(raw.as_str()).is_ok(), valid);
        prop_assert_eq!(IdempotencyKey::try_new(raw.as_str()).is_ok(), valid);
    }

    #[test]
    fn positions_parse_or_refuse(raw in hostile_string(), t in any::<u64>(), s in any::<u64>()) {
        let _ = GlobalPosition::from_str(&raw);
        let position = GlobalPosition::new(t, s);
        prop_assert_eq!(GlobalPosition::from_str(&position.to_string()).ok(), Some(position));
    }

    #[test]
    fn new_events_refuse_only_nul_and_excess_depth(payload in json()) {
        let made = NewEvent::from_parts(
            EventType::try_new("Fuzzed").unwrap_or_else(|_| unreachable!()),
            payload.clone(),
            EventMetadata::default(),
        );
        let storable = !has_nul(&payload) && depth(&payload) <= MAX_JSON_DEPTH;
        prop_assert_eq!(made.is_ok(), storable);
    }

    #[test]
    fn new_events_refuse_exactly_the_floats_json_cannot_hold(
        celsius in any_float(),
        history in prop::collection::vec(prop::option::of(any_float()), 0..4),
    ) {
        let history: Vec<Option<f32>> = history.into_iter().map(|h| h.map(|f| f as f32)).collect();
        let finite = celsius.is_finite() && history.iter().flatten().all(|f| f.is_finite());
        let reading = Reading::Measured { celsius, history };
        let made = NewEvent::from_event(&reading, EventMetadata::default());
        match made {
            Ok(event) => {
                prop_assert!(finite, "stored {} for {reading:?}", event.payload());
                // Stored as it was: it decodes to the same numbers.
                let Reading::Measured { celsius: back, .. } = event.payload().decode().unwrap_or_else(|_| unreachable!());
                prop_assert_eq!(back, celsius);
            }
            Err(EncodeError::NonFinite { part, .. }) => {
                prop_assert!(!finite);
                prop_assert_eq!(part, "payload");
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    #[test]
    fn user_ids_accept_exactly_what_the_rules_allow(raw in hostile_string()) {
        let trimmed = raw.trim();
        let valid = !trimmed.is_empty()
            && trimmed.chars().count() <= 255
            && !trimmed.chars().any(char::is_control);
        prop_assert_eq!(UserId::try_new(raw.as_str()).is_ok(), valid);
    }

    #[test]
    fn no_form_of_database_url_prints_its_password(
        password in "[A-Za-z0-9!*()~._-]{6,24}",
        form in 0usize..6,
    ) {
        let url = match form {
            0 => format!("postgres://app:{password}@db.internal:5432/bank"),
            1 => format!("postgresql://app@db.internal/bank?password={password}"),
            2 => format!("postgres://db.internal/bank?user=app&password={password}&sslmode=require"),
            3 => format!("postgres://app@db.internal/bank?sslmode=require&Password={password}#x"),
            4 => format!("postgres://app:{password}@db.internal/bank?password={password}"),
            _ => format!("postgres://app:{password}@[::1]:5432/bank?application_name=a@b"),
        };
        let printed = format!("{:?}", PostgresConfig::new(url.clone()));
        prop_assert!(!printed.contains(&password), "{printed}");
        prop_assert!(printed.contains("bank"), "still says where it connects: {printed}");
    }

    #[test]
    fn nesting_is_refused_exactly_past_the_limit(levels in 0usize..150, object in any::<bool>(), nul in any::<bool>()) {
        let mut payload = Value::from(if nul { "a\0b" } else { "ab" });
        for _ in 0..levels {
            payload = if object {
                Value::Object([("k".to_owned(), payload)].into_iter().collect())
            } else {
                Value::from(vec![payload])
            };
        }
        let made = NewEvent::from_parts(
            EventType::try_new("Fuzzed").unwrap_or_else(|_| unreachable!()),
            payload,
            EventMetadata::default(),
        );
        prop_assert_eq!(made.is_ok(), !nul && levels <= MAX_JSON_DEPTH);
    }

    #[test]
    fn decoding_arbitrary_stored_payloads_never_panics(payload in json(), noted in any::<bool>()) {
        let event_type = if noted { "conformance.Noted" } else { "conformance.Created" };
        let event = recorded(payload, event_type);
        // A typed error or an event, never a panic.
        let _ = event.decode::<TestEvent>();
        let _ = event.into_decoded::<TestEvent>();
    }

    #[test]
    fn deserializing_arbitrary_bytes_as_a_recorded_event_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<RecordedEvent>(&bytes);
        let _ = serde_json::from_slice::<EventMetadata>(&bytes);
    }
}
