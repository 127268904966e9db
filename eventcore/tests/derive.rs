//! What `#[derive(Command)]` accepts: every supported field shape, generics,
//! lifetimes, raw identifiers, paths to `StreamId`, and run-time deduplication.

use std::collections::BTreeSet;

use eventcore::{Command, CommandStreams, StreamId};

fn id(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

#[derive(Command)]
struct Shapes<'a, T: Clone>
where
    T: Send,
{
    #[stream]
    single: StreamId,
    #[stream]
    qualified: eventcore::StreamId,
    #[stream]
    many: Vec<StreamId>,
    #[stream]
    maybe: Option<StreamId>,
    #[stream]
    set: BTreeSet<StreamId>,
    #[stream]
    array: [StreamId; 2],
    #[stream]
    borrowed: &'a StreamId,
    #[stream]
    slice: &'a [StreamId],
    #[stream]
    r#type: StreamId,
    payload: T,
}

#[test]
fn every_field_shape_is_declared_in_order_and_deduplicated() {
    let borrowed = id("borrowed");
    let slice = [id("slice-1"), id("single")];
    let command = Shapes {
        single: id("single"),
        qualified: id("qualified"),
        many: vec![id("many-1"), id("many-2"), id("many-1")],
        maybe: None,
        set: [id("set-b"), id("set-a")].into_iter().collect(),
        array: [id("array-1"), id("qualified")],
        borrowed: &borrowed,
        slice: &slice,
        r#type: id("type"),
        payload: 7_u8,
    };
    let declared: Vec<String> = command
        .declared_streams()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        declared,
        [
            "single",
            "qualified",
            "many-1",
            "many-2",
            "set-a",
            "set-b",
            "array-1",
            "borrowed",
            "slice-1",
            "type"
        ]
    );
    assert_eq!(command.single_stream().id(), &id("single"));
    assert_eq!(
        command.many_streams().len(),
        3,
        "accessors mirror the field"
    );
    assert!(command.maybe_streams().is_empty());
    assert_eq!(command.borrowed_stream().id(), &borrowed);
    assert_eq!(command.slice_streams()[0].id(), &id("slice-1"));
    assert_eq!(command.type_stream().id(), &id("type"));
    assert_eq!(command.payload, 7);
}

mod visibility {
    use eventcore::{Command, StreamId};

    #[derive(Command)]
    pub struct Public {
        #[stream]
        pub account: StreamId,
    }
}

#[test]
fn accessors_take_the_field_visibility() {
    let command = visibility::Public {
        account: id("acct"),
    };
    assert_eq!(command.account_stream().id(), &id("acct"));
}

mod event_derive {
    //! What `#[derive(Event)]` accepts: structs, every variant shape, generics.
    use eventcore::{Event, EventMetadata, NewEvent};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    struct Pinged {
        n: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    #[event(name = "shop.PriceChanged", version = 4)]
    struct PriceChanged(u64);

    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    enum Shapes {
        Unit,
        Tuple(u32, String),
        #[event(version = 2)]
        Named {
            a: u32,
        },
        #[event(name = "Renamed")]
        #[event(version = 3)]
        Both,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
    #[serde(bound = "T: Serialize + serde::de::DeserializeOwned")]
    struct Wrapped<T: Send + Sync + 'static> {
        inner: T,
    }

    #[test]
    fn names_and_versions_come_from_the_attributes() {
        assert_eq!(
            (
                Pinged { n: 1 }.event_type(),
                Pinged { n: 1 }.schema_version()
            ),
            ("Pinged", 1)
        );
        assert_eq!(
            (
                PriceChanged(1).event_type(),
                PriceChanged(1).schema_version()
            ),
            ("shop.PriceChanged", 4)
        );
        let kinds = [
            Shapes::Unit,
            Shapes::Tuple(1, "x".into()),
            Shapes::Named { a: 1 },
            Shapes::Both,
        ];
        let seen: Vec<(&str, u32)> = kinds
            .iter()
            .map(|k| (k.event_type(), k.schema_version()))
            .collect();
        assert_eq!(
            seen,
            [("Unit", 1), ("Tuple", 1), ("Named", 2), ("Renamed", 3)]
        );
        let wrapped = Wrapped { inner: 5u8 };
        assert_eq!(wrapped.event_type(), "Wrapped");
    }

    #[test]
    fn derived_events_are_stored_with_their_version() {
        let event =
            NewEvent::from_event(&Shapes::Named { a: 1 }, EventMetadata::default()).unwrap();
        assert_eq!(event.event_type().as_ref(), "Named");
        assert_eq!(event.schema_version(), 2);
    }
}

mod typed_ids {
    use eventcore::{AsStreamId, Command, CommandStreams, StreamId};

    /// An application's typed id for account streams.
    #[derive(Clone)]
    pub struct AccountId(StreamId);

    impl AsStreamId for AccountId {
        fn as_stream_id(&self) -> &StreamId {
            &self.0
        }
    }

    #[derive(Command)]
    pub struct Transfer<'a> {
        #[stream]
        pub from: AccountId,
        #[stream]
        pub to: &'a AccountId,
        #[stream]
        pub cosigners: Vec<AccountId>,
        #[stream]
        pub fee_account: Option<AccountId>,
        /// Carried along, not read: no stream of this command.
        #[stream(skip)]
        pub audit: StreamId,
    }

    #[test]
    fn typed_ids_and_their_collections_are_streams_and_skipped_ids_are_not() {
        let id = |name: &str| AccountId(StreamId::try_new(name).unwrap());
        let to = id("b");
        let command = Transfer {
            from: id("a"),
            to: &to,
            cosigners: vec![id("c"), id("a")],
            fee_account: Some(id("fees")),
            audit: StreamId::try_new("audit").unwrap(),
        };
        let declared: Vec<String> = command
            .declared_streams()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(declared, ["a", "b", "c", "fees"]);
        assert_eq!(
            command.audit.as_ref(),
            "audit",
            "skipped, but still a field"
        );
        assert_eq!(command.to_stream().id().as_ref(), "b");
        assert_eq!(command.cosigners_streams().len(), 2);
        assert_eq!(command.fee_account_streams()[0].id().as_ref(), "fees");
    }
}
