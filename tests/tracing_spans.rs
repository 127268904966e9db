//! The spans a command leaves: the execution span with its documented
//! fields, and one child span per PostgreSQL call with OpenTelemetry's
//! database fields; a failure recorded on both; no payload anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use eventcore::{
    AppendRequest, CommandExecutor, CommandLogic, CommandStreams, Event, EventMetadata, EventStore,
    ExecutionOptions, ExpectedVersion, HandleContext, NewEvent, RetryPolicy, StoredEvent, StreamId,
    Writes,
};
use eventcore_tests::scripted::Scripted;
use serde::{Deserialize, Serialize};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// Text no span may carry: it is only ever in payloads.
const SECRET: &str = "payload-secret-7c1f";

#[derive(Debug, Serialize, Deserialize, Event)]
enum Noted {
    Noted { text: String },
}

/// Appends one note to each of its streams.
struct Note {
    streams: Vec<StreamId>,
}

impl CommandStreams for Note {
    fn declared_streams(&self) -> Vec<StreamId> {
        self.streams.clone()
    }
}

impl CommandLogic for Note {
    type State = ();
    type Event = Noted;
    type Error = std::convert::Infallible;

    fn apply(&self, (): &mut (), _: &StoredEvent<Noted>) {}

    fn handle(&self, (): (), _: &mut HandleContext<'_, Self>) -> Result<Writes<Self>, Self::Error> {
        let mut writes = Writes::new();
        for stream in &self.streams {
            writes = writes.emit(
                eventcore::__private::declared(stream),
                Noted::Noted {
                    text: SECRET.to_owned(),
                },
            );
        }
        Ok(writes)
    }
}

/// A span as the layer saw it: name, parent, fields.
#[derive(Debug, Clone)]
struct Seen {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
    open: bool,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.id().into_u64());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
            open: true,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(span) = seen
            .iter_mut()
            .rev()
            .find(|s| s.open && s.id == id.into_u64())
        {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut seen = self.0.lock().unwrap();
        if let Some(span) = seen
            .iter_mut()
            .rev()
            .find(|s| s.open && s.id == id.into_u64())
        {
            span.open = false;
        }
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

#[test]
fn a_command_leaves_an_execution_span_and_one_span_per_postgres_call() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let schema = runtime.block_on(async {
        let store = eventcore_postgres::testing::fresh_store()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let executor = CommandExecutor::new(store.clone()).without_coordination();
        let streams: Vec<StreamId> = (0..5).map(|n| stream(&format!("traced-{n}"))).collect();
        let note = Note {
            streams: streams.clone(),
        };
        executor
            .execute(&note, ExecutionOptions::default())
            .await
            .unwrap();
        // A conflict on every attempt: written by another writer first.
        let one = Note {
            streams: vec![stream("conflict-always-contended")],
        };
        let rival = || {
            NewEvent::from_event(
                &Noted::Noted {
                    text: SECRET.to_owned(),
                },
                EventMetadata::default(),
            )
            .unwrap()
        };
        store
            .append(AppendRequest::single(
                stream("conflict-always-contended"),
                ExpectedVersion::Any,
                vec![rival()],
            ))
            .await
            .unwrap();
        // Another writer appends before every append: every attempt conflicts.
        let conflicted = Scripted::new(store.clone(), rival);
        let refused = CommandExecutor::new(conflicted)
            .execute(
                &one,
                ExecutionOptions::default().with_retry_policy(
                    RetryPolicy::default()
                        .with_max_attempts(1)
                        .with_base_delay(std::time::Duration::from_millis(1)),
                ),
            )
            .await;
        assert!(refused.is_err());
        store.schema().to_string()
    });

    let seen = capture.0.lock().unwrap().clone();
    let executions: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.name == "eventcore.execute")
        .collect();
    assert_eq!(executions.len(), 2, "{seen:#?}");
    let ok = executions[0];
    let field = |span: &Seen, name: &str| span.fields.get(name).cloned().unwrap_or_default();
    assert!(field(ok, "command").ends_with("Note"), "{ok:?}");
    assert_eq!(
        field(ok, "streams"),
        "traced-0, traced-1, traced-2 and 2 more",
        "{ok:?}"
    );
    assert_eq!(field(ok, "stream_count"), "5");
    assert_eq!(field(ok, "attempt"), "1");
    assert_eq!(field(ok, "outcome"), "ok");
    assert_eq!(field(ok, "events_written"), "5");
    assert_eq!(field(ok, "correlation_id").len(), 36, "a UUID: {ok:?}");

    let calls: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.name == "eventcore_postgres.call" && s.parent == Some(ok.id))
        .collect();
    let operations: Vec<String> = calls
        .iter()
        .map(|c| field(c, "db.operation.name"))
        .collect();
    assert_eq!(operations, ["read_streams", "append"], "{calls:#?}");
    for call in &calls {
        assert_eq!(field(call, "db.system.name"), "postgresql");
        assert_eq!(field(call, "db.namespace"), schema);
        assert_eq!(
            field(call, "otel.name"),
            format!("{} {schema}", field(call, "db.operation.name"))
        );
        assert!(!call.fields.contains_key("otel.status_code"), "{call:?}");
    }

    let failed = executions[1];
    assert_eq!(field(failed, "outcome"), "conflict_exhausted", "{failed:?}");
    assert_eq!(field(failed, "otel.status_code"), "ERROR");
    assert_eq!(field(failed, "error.type"), "retries_exhausted");
    // The rival's append succeeds; the command's own one conflicts.
    let appends: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.parent == Some(failed.id)
                && s.fields.get("db.operation.name").map(String::as_str) == Some("append")
        })
        .collect();
    assert_eq!(appends.len(), 2, "{appends:#?}");
    assert!(!appends[0].fields.contains_key("error.type"));
    assert_eq!(field(appends[1], "otel.status_code"), "ERROR");
    assert_eq!(field(appends[1], "error.type"), "conflict");

    for span in &seen {
        for (name, value) in &span.fields {
            assert!(
                !value.contains(SECRET),
                "a payload in {}.{name}: {value}",
                span.name
            );
            assert!(!value.contains("password"), "{}.{name}: {value}", span.name);
        }
    }
    println!(
        "{} spans: {} executions, {} PostgreSQL calls under the first",
        seen.len(),
        executions.len(),
        calls.len()
    );
}
