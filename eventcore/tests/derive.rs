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
