//! Upcaster chains by property: for random chains (JSON steps, a rename
//! part way, a step of the new name after it) over random payloads, reading
//! an event through the store's [`Upcasters`] gives what applying the same
//! functions one by one gives, from whatever version the event was stored at.
//!
//! 1,000 cases in CI; more with `PROPTEST_CASES=100000 cargo test -p
//! eventcore-tests --test upcast_chains`.

use eventcore::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, ReadAllQuery,
    StreamId, Upcasters,
};
use eventcore_memory::InMemoryEventStore;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

/// One change of shape, as an upcaster makes it.
#[derive(Debug, Clone)]
enum Op {
    /// Sets a field (adds it, or replaces it).
    Set(String, Value),
    /// Removes a field.
    Remove(String),
    /// Moves a field's value to another name.
    Move(String, String),
    /// Puts the whole payload under one field.
    Wrap(String),
    /// Counts the fields into a field.
    Count(String),
}

impl Op {
    fn apply(&self, value: Value) -> Value {
        let mut fields = match value {
            Value::Object(fields) => fields,
            other => {
                let mut fields = Map::new();
                fields.insert("value".to_owned(), other);
                fields
            }
        };
        match self {
            Self::Set(key, v) => {
                fields.insert(key.clone(), v.clone());
            }
            Self::Remove(key) => {
                fields.remove(key);
            }
            Self::Move(from, to) => {
                if let Some(v) = fields.remove(from) {
                    fields.insert(to.clone(), v);
                }
            }
            Self::Wrap(key) => {
                let inner = Value::Object(std::mem::take(&mut fields));
                fields.insert(key.clone(), inner);
            }
            Self::Count(key) => {
                let n = fields.len();
                fields.insert(key.clone(), Value::from(n));
            }
        }
        Value::Object(fields)
    }
}

fn key() -> impl Strategy<Value = String> {
    "[a-e]{1,2}"
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z0-9 ]{0,8}".prop_map(Value::from),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), leaf()).prop_map(|(k, v)| Op::Set(k, v)),
        key().prop_map(Op::Remove),
        (key(), key()).prop_map(|(a, b)| Op::Move(a, b)),
        key().prop_map(Op::Wrap),
        key().prop_map(Op::Count),
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), leaf(), 0..6)
        .prop_map(|fields| Value::Object(fields.into_iter().collect()))
}

/// A chain of `ops.len()` version steps; the first `renamed_at` belong to
/// the old name, the rename (with `rename_op`, if any) follows them, the
/// rest belong to the new name.
#[derive(Debug, Clone)]
struct Chain {
    ops: Vec<Op>,
    renamed_at: usize,
    rename_op: Option<Op>,
}

const OLD: &str = "chain.Old";
const NEW: &str = "chain.New";

fn chain() -> impl Strategy<Value = Chain> {
    prop::collection::vec(op(), 0..7).prop_flat_map(|ops| {
        let len = ops.len();
        (Just(ops), 0..=len, prop::option::of(op())).prop_map(|(ops, renamed_at, rename_op)| {
            Chain {
                ops,
                renamed_at,
                rename_op,
            }
        })
    })
}

impl Chain {
    fn upcasters(&self) -> Upcasters {
        let mut builder = Upcasters::builder();
        for (i, op) in self.ops.iter().enumerate() {
            let name = if i < self.renamed_at { OLD } else { NEW };
            let op = op.clone();
            let from = u32::try_from(i + 1).unwrap();
            builder = builder.step(name, from, move |v| Ok(op.apply(v)));
        }
        builder = match self.rename_op.clone() {
            Some(op) => builder.rename_with(OLD, NEW, move |v| Ok(op.apply(v))),
            None => builder.rename(OLD, NEW),
        };
        builder.build().unwrap()
    }

    /// The event stored as `(name, version)`, upcast by hand.
    fn by_hand(&self, stored_as_old: bool, version: usize, payload: Value) -> Value {
        let mut value = payload;
        let mut renamed = !stored_as_old;
        for (i, op) in self.ops.iter().enumerate().skip(version - 1) {
            if i >= self.renamed_at && !renamed {
                value = self
                    .rename_op
                    .as_ref()
                    .map_or(value.clone(), |op| op.apply(value));
                renamed = true;
            }
            value = op.apply(value);
        }
        if !renamed {
            value = self
                .rename_op
                .as_ref()
                .map_or(value.clone(), |op| op.apply(value));
        }
        value
    }
}

/// A stored event of `chain` with its name and a version it can be stored at.
fn stored_event() -> impl Strategy<Value = (Chain, bool, usize, Value)> {
    chain().prop_flat_map(|chain| {
        let len = chain.ops.len();
        let renamed_at = chain.renamed_at;
        // The old name exists at versions 1 ..= renamed_at + 1, the new at
        // renamed_at + 1 ..= len + 1.
        (Just(chain), any::<bool>()).prop_flat_map(move |(chain, old)| {
            let versions = if old {
                1..=renamed_at + 1
            } else {
                renamed_at + 1..=len + 1
            };
            (Just(chain), Just(old), versions, payload())
        })
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn a_chain_equals_its_functions_applied_one_by_one(
        (chain, old, version, payload) in stored_event()
    ) {
        let upcasters = chain.upcasters();
        let expected = chain.by_hand(old, version, payload.clone());
        let name = if old { OLD } else { NEW };
        let event = NewEvent::from_parts(
            EventType::try_new(name).unwrap(),
            payload,
            EventMetadata::default(),
        )
        .unwrap()
        .with_schema_version(u32::try_from(version).unwrap())
        .unwrap();
        let store = InMemoryEventStore::new();
        let stream = StreamId::try_new("chained").unwrap();
        let (read, all) = runtime().block_on(async {
            store
                .append(AppendRequest::single(stream.clone(), ExpectedVersion::Any, vec![event]))
                .await
                .unwrap();
            let upcasting = store.clone().with_upcasters(upcasters);
            let read = upcasting.read_streams(std::slice::from_ref(&stream)).await.unwrap();
            let all = upcasting.read_all(&ReadAllQuery::from_start()).await.unwrap();
            (read, all)
        });
        let event = &read.events[0];
        prop_assert_eq!(event.event_type.as_ref(), NEW);
        prop_assert_eq!(event.schema_version as usize, chain.ops.len() + 1);
        prop_assert_eq!(event.payload.to_value().unwrap(), expected);
        prop_assert_eq!(&all[0], event, "read_all upcasts as read_streams does");
    }
}
