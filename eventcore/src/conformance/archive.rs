//! Export and import through the JSON Lines archive
//! ([`crate::archive`]): a copy keeps everything, an import never doubles.
//!
//! Run every case with
//! [`archive_conformance_tests!`](crate::archive_conformance_tests), giving it
//! the same factory as [`conformance_tests!`](crate::conformance_tests); each
//! case calls it twice, for a source and a target store.

use serde_json::json;

use super::{created, noted, stream, v};
use crate::{
    AppendRequest, CorrelationId, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent,
    ReadAllQuery, RecordedEvent, StreamAppend, UserId,
    archive::{
        ArchiveReader, ExportOptions, ImportError, ImportOptions, ImportProblem, ImportTarget,
        export, import,
    },
};

/// Generates one `#[test]` per archive case, each on two fresh stores.
#[macro_export]
macro_rules! archive_conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::__archive_cases!(
            $factory;
            an_archive_copies_every_field_and_the_order,
            an_interrupted_import_resumes_without_doubling,
            a_target_holding_other_events_is_refused_unless_appending,
            events_that_do_not_fit_are_refused_by_line,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __archive_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                $crate::conformance::run(
                    || async move { (factory().await, factory().await) },
                    |(source, target)| $crate::conformance::archive::$case(source, target),
                );
            }
        )*
    };
}

fn small() -> ImportOptions {
    ImportOptions {
        batch_size: std::num::NonZeroUsize::new(3).unwrap(),
        ..ImportOptions::default()
    }
}

async fn everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    super::read_everything(store).await
}

async fn exported<S: EventStore>(store: &S) -> Vec<u8> {
    let mut out = Vec::new();
    export(store, &ExportOptions::default(), &mut out, |_| {})
        .await
        .unwrap();
    out
}

/// Events over three streams, some appended together in an order of their
/// own, with metadata and an older schema version.
async fn varied_history<S: EventStore>(store: &S) {
    let (a, b, c) = (
        stream("archive-a"),
        stream("archive-b"),
        stream("archive-c"),
    );
    let metadata = EventMetadata::default()
        .with_correlation_id(CorrelationId::new_v7())
        .with_user_id(UserId::try_new("ada").unwrap())
        .with_entry("nested", json!({"z": 1, "a": [1.5, null, "ü"]}));
    let old = NewEvent::from_parts(
        EventType::try_new("conformance.Created").unwrap(),
        json!({"Created": {"marker": 0}}),
        metadata.clone(),
    )
    .unwrap()
    .with_schema_version(2)
    .unwrap();
    store
        .append(AppendRequest::single(
            a.clone(),
            ExpectedVersion::NoStream,
            vec![old, noted(1)],
        ))
        .await
        .unwrap();
    for marker in 2..6 {
        let together = AppendRequest::new([
            StreamAppend::new(a.clone(), ExpectedVersion::Any, vec![created(marker)]),
            StreamAppend::new(
                b.clone(),
                ExpectedVersion::Any,
                vec![noted(marker * 10), created(marker * 10 + 1)],
            ),
        ])
        .unwrap()
        .with_event_order(vec![1, 0, 1])
        .unwrap();
        store.append(together).await.unwrap();
        super::append_ok(store, &c, vec![created(marker * 100)]).await;
    }
}

fn same_events(copy: &[RecordedEvent], original: &[RecordedEvent]) {
    assert_eq!(copy.len(), original.len());
    for (copy, original) in copy.iter().zip(original) {
        assert_eq!(copy.id, original.id);
        assert_eq!(copy.stream_id, original.stream_id);
        assert_eq!(copy.version, original.version);
        assert_eq!(copy.recorded_at, original.recorded_at);
        assert_eq!(copy.event_type, original.event_type);
        assert_eq!(copy.schema_version, original.schema_version);
        assert_eq!(
            copy.payload.to_value().unwrap(),
            original.payload.to_value().unwrap()
        );
        assert_eq!(copy.metadata, original.metadata);
    }
}

/// Export, import into an empty store and export again: the same bytes;
/// every field and the global order kept; the copy's streams go on from
/// their versions.
pub async fn an_archive_copies_every_field_and_the_order<S>(source: S, target: S)
where
    S: EventStore + ImportTarget,
{
    varied_history(&source).await;
    let archive = exported(&source).await;
    let summary = import(&target, archive.as_slice(), &small(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (summary.read, summary.written, summary.skipped),
        (18, 18, 0)
    );
    assert_eq!(
        String::from_utf8(exported(&target).await).unwrap(),
        String::from_utf8(archive.clone()).unwrap(),
        "export, import, export: the same bytes"
    );
    let (copy, original) = (everything(&target).await, everything(&source).await);
    same_events(&copy, &original);
    assert!(copy.windows(2).all(|w| w[0].position < w[1].position));
    let lines: Vec<_> = ArchiveReader::new(archive.as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lines.len(), 18);
    let b = stream("archive-b");
    let page = target
        .read_stream(&crate::StreamQuery::forwards(b.clone()))
        .await
        .unwrap();
    assert_eq!(page.stream_version, v(8));
    target
        .append(AppendRequest::single(
            b,
            ExpectedVersion::Exact(v(8)),
            vec![created(9)],
        ))
        .await
        .expect("an imported stream goes on from its version");
    let mut selected = Vec::new();
    let options = ExportOptions {
        stream_prefix: Some("archive-c".into()),
        after: original[1].position,
        ..ExportOptions::default()
    };
    let summary = export(&source, &options, &mut selected, |_| {})
        .await
        .unwrap();
    assert_eq!(summary.events, 4);
    assert_eq!(summary.last_position, original.last().map(|e| e.position));
}

/// An import stopped half-way and run again writes the rest, nothing
/// twice; run once more it writes nothing.
pub async fn an_interrupted_import_resumes_without_doubling<S>(source: S, target: S)
where
    S: EventStore + ImportTarget,
{
    varied_history(&source).await;
    let archive = exported(&source).await;
    let text = String::from_utf8(archive.clone()).unwrap();
    let half: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    let first = import(&target, half.as_bytes(), &small(), |_| {})
        .await
        .unwrap();
    assert_eq!(first.written, 7);
    let rest = import(&target, archive.as_slice(), &small(), |_| {})
        .await
        .unwrap();
    assert_eq!((rest.read, rest.written, rest.skipped), (18, 11, 7));
    let again = import(&target, archive.as_slice(), &small(), |_| {})
        .await
        .unwrap();
    assert_eq!((again.written, again.skipped), (0, 18));
    same_events(&everything(&target).await, &everything(&source).await);
    assert_eq!(exported(&target).await, archive);
}

/// A target holding events that are not the archive's first is refused,
/// with nothing written; told to append, the archive's events follow them.
pub async fn a_target_holding_other_events_is_refused_unless_appending<S>(source: S, target: S)
where
    S: EventStore + ImportTarget,
{
    varied_history(&source).await;
    let archive = exported(&source).await;
    super::append_ok(&target, &stream("archive-own"), vec![created(7)]).await;
    match import(&target, archive.as_slice(), &small(), |_| {}).await {
        Err(error @ ImportError::NotEmpty { .. }) => {
            assert!(error.to_string().contains("append"), "{error}");
        }
        other => panic!("expected the target to be refused, got {other:?}"),
    }
    assert_eq!(everything(&target).await.len(), 1, "nothing written");
    let appending = ImportOptions {
        append: true,
        ..small()
    };
    let summary = import(&target, archive.as_slice(), &appending, |_| {})
        .await
        .unwrap();
    assert_eq!(summary.written, 18);
    let events = everything(&target).await;
    assert_eq!(events[0].stream_id, stream("archive-own"));
    same_events(&events[1..], &everything(&source).await);
}

/// An event whose version does not follow its stream's, or whose id is
/// stored elsewhere, is refused naming its line; its batch writes nothing.
pub async fn events_that_do_not_fit_are_refused_by_line<S>(source: S, target: S)
where
    S: EventStore + ImportTarget,
{
    varied_history(&source).await;
    let archive = String::from_utf8(exported(&source).await).unwrap();
    let lines: Vec<&str> = archive.lines().collect();
    // a's version 2 (the archive's second line) left out: the fourth
    // line then holds a's version 3, after a's version 1 and b's first.
    let gapped = format!("{}\n\n{}\n{}\n", lines[0], lines[2], lines[3]);
    match import(&target, gapped.as_bytes(), &small(), |_| {}).await {
        Err(ImportError::Refused {
            line,
            problem,
            stream_id,
            ..
        }) => {
            assert_eq!(line, 4, "blank lines count");
            assert_eq!(stream_id, stream("archive-a"));
            assert_eq!(problem, ImportProblem::VersionGap { current: v(1) });
        }
        other => panic!("expected a version gap, got {other:?}"),
    }
    assert!(
        everything(&target).await.is_empty(),
        "the batch wrote nothing"
    );

    import(&target, archive.as_bytes(), &small(), |_| {})
        .await
        .unwrap();
    // The id of a's first event, offered as another stream's event.
    let moved = lines[0].replace("\"archive-a\"", "\"archive-moved\"");
    let appending = ImportOptions {
        append: true,
        ..small()
    };
    match import(&target, moved.as_bytes(), &appending, |_| {}).await {
        Err(error @ ImportError::Refused { .. }) => {
            let ImportError::Refused { line, problem, .. } = &error else {
                unreachable!()
            };
            assert_eq!(*line, 1);
            assert_eq!(
                *problem,
                ImportProblem::IdElsewhere {
                    stream_id: stream("archive-a"),
                    version: v(1)
                }
            );
            assert!(error.to_string().contains("line 1"), "{error}");
        }
        other => panic!("expected the id to be refused, got {other:?}"),
    }
    let read = target.read_all(&ReadAllQuery::from_start()).await.unwrap();
    assert_eq!(read.len(), 18);
}
