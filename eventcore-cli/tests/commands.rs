//! Every subcommand but export and import, run as the built binary
//! against a real PostgreSQL: output, exit codes, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{sync::Arc, time::Duration};

use eventcore::{
    AppendRequest, CheckpointStore, EventMetadata, EventStore, ExpectedVersion, NewEvent,
    Projection, ProjectionRunner, ProjectionState, RecordedEvent,
};
use support::{Schema, TestEvent, json, run, stderr, stdout, stream, tick};
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_and_migrate_dry_run_show_what_is_applied() {
    let schema = Schema::new(false).await;
    let status = run(&mut schema.cli(), &["status"]);
    assert_eq!(status.status.code(), Some(5), "an uninitialized schema");
    assert!(
        stderr(&status).contains("eventcore init"),
        "says what to do"
    );

    let dry = run(&mut schema.cli(), &["--json", "migrate", "--dry-run"]);
    assert!(dry.status.success());
    let pending = json(&dry)["pending"].as_array().unwrap().len();
    assert!(pending >= 12, "every migration is pending: {pending}");
    assert_eq!(json(&dry)["version"], 0);
    let again = run(&mut schema.cli(), &["status"]);
    assert_eq!(again.status.code(), Some(5), "a dry run applied nothing");

    let init = run(&mut schema.cli(), &["init"]);
    assert!(init.status.success());
    assert!(stdout(&init).contains("initialized"));
    let dry = run(&mut schema.cli(), &["--json", "migrate", "--dry-run"]);
    assert_eq!(json(&dry)["pending"].as_array().unwrap().len(), 0);
    assert_eq!(json(&dry)["version"], json(&dry)["known"]);
    let table = run(&mut schema.cli(), &["migrate", "--dry-run"]);
    assert!(stdout(&table).contains("nothing to apply"));
    let migrate = run(&mut schema.cli(), &["migrate"]);
    assert!(stdout(&migrate).contains("up to date"));
    schema.drop().await;
}

fn note(text: &str) -> NewEvent {
    NewEvent::from_event(
        &TestEvent::Noted {
            text: text.to_owned(),
        },
        EventMetadata::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_streams_stream_and_stats_describe_the_store() {
    let schema = Schema::new(true).await;
    tick(&schema.store, "busy", 1, 3, 4, 1).await; // busy-0: 12 events
    tick(&schema.store, "calm", 2, 2, 1, 1).await; // calm-0, calm-1: 1 each
    schema
        .store
        .append(AppendRequest::single(
            stream("busy-0"),
            ExpectedVersion::Exact(eventcore::StreamVersion::new(12)),
            vec![note("first note"), note("second note")],
        ))
        .await
        .unwrap();

    let status = run(&mut schema.cli(), &["--json", "status"]);
    assert!(status.status.success());
    let status = json(&status);
    assert_eq!(status["events"]["count"], 16);
    assert_eq!(status["streams"]["count"], 3);
    assert!(status["head"].is_string());
    let table = run(&mut schema.cli(), &["status"]);
    assert!(
        stdout(&table).contains("events      16"),
        "{}",
        stdout(&table)
    );

    let streams = json(&run(&mut schema.cli(), &["--json", "streams"]));
    let listed: Vec<&str> = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed[0], "busy-0", "most active first: {listed:?}");
    assert_eq!(listed.len(), 3);
    let calm = json(&run(
        &mut schema.cli(),
        &["--json", "streams", "--prefix", "calm", "--limit", "1"],
    ));
    assert_eq!(calm["streams"].as_array().unwrap().len(), 1);
    assert!(
        calm["streams"][0]["stream_id"]
            .as_str()
            .unwrap()
            .starts_with("calm")
    );

    // Paged, forwards from a version, the last N, by type.
    let page = json(&run(
        &mut schema.cli(),
        &[
            "--json",
            "stream",
            "busy-0",
            "--from-version",
            "3",
            "--limit",
            "4",
        ],
    ));
    let versions: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 4, 5, 6]);
    assert_eq!(page["next_from_version"], 7);
    assert_eq!(page["version"], 14);
    let last = json(&run(
        &mut schema.cli(),
        &["--json", "stream", "busy-0", "--last", "3"],
    ));
    let versions: Vec<u64> = last["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [14, 13, 12]);
    let notes = json(&run(
        &mut schema.cli(),
        &["--json", "stream", "busy-0", "--type", "cli.Noted"],
    ));
    let texts: Vec<&str> = notes["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["payload"]["Noted"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first note", "second note"]);
    assert!(notes["next_from_version"].is_null());
    let table = run(&mut schema.cli(), &["stream", "busy-0", "--limit", "2"]);
    assert!(table.status.success());
    let text = stdout(&table);
    assert!(
        text.contains("POSITION") && text.contains("cli.Ticked"),
        "{text}"
    );
    assert!(
        text.contains("more: eventcore stream busy-0 --from-version 3"),
        "{text}"
    );

    let absent = run(&mut schema.cli(), &["stream", "nobody"]);
    assert_eq!(absent.status.code(), Some(3));
    assert!(stderr(&absent).contains("nobody"));
    let invalid = run(&mut schema.cli(), &["stream", " "]);
    assert_eq!(invalid.status.code(), Some(2));
    let bad_type = run(&mut schema.cli(), &["stream", "busy-0", "--type", ""]);
    assert_eq!(bad_type.status.code(), Some(2));

    let stats = json(&run(&mut schema.cli(), &["--json", "stats", "--days", "2"]));
    let today: u64 = stats["per_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["events"].as_u64().unwrap())
        .sum();
    assert_eq!(today, 16);
    let per_type: Vec<(String, u64)> = stats["per_type"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["event_type"].as_str().unwrap().to_owned(),
                t["events"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per_type,
        [("cli.Ticked".to_owned(), 14), ("cli.Noted".to_owned(), 2)]
    );
    let table = run(&mut schema.cli(), &["stats"]);
    assert!(stdout(&table).contains("events per type"));
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_new_events_until_ctrl_c_or_a_count() {
    let schema = Schema::new(true).await;
    tick(&schema.store, "before", 1, 1, 3, 1).await;
    // Started at the head: only what comes after. The head is below the
    // delivery watermark; wait until it reaches the last event written.
    let everything = schema
        .store
        .read_all(&eventcore::ReadAllQuery::from_start())
        .await
        .unwrap();
    let last = everything.last().unwrap().position;
    tokio::time::timeout(WAIT, async {
        while schema.store.head().await.unwrap() != Some(last) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let mut child = schema
        .child(&["--json", "tail", "--stream-prefix", "after"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(WAIT, errors.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(started.contains("following"), "{started}");
    tick(&schema.store, "after", 1, 2, 2, 1).await;
    tick(&schema.store, "other", 1, 1, 1, 1).await;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("tail goes on");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        seen.push((
            event["stream_id"].as_str().unwrap().to_owned(),
            event["payload"]["Ticked"]["n"].as_u64().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        (0..4)
            .map(|n| ("after-0".to_owned(), n))
            .collect::<Vec<_>>()
    );
    let pid = child.id().unwrap().to_string();
    let signal = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(signal.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    println!("tail: {seen:?}, ended by SIGINT with {status}");
    assert!(status.success(), "Ctrl-C ends tail cleanly: {status}");

    // From the start with a type filter and a count: stops by itself.
    let counted = run(
        &mut schema.cli(),
        &[
            "tail",
            "--from-start",
            "--type",
            "cli.Ticked",
            "--count",
            "5",
        ],
    );
    assert!(counted.status.success());
    assert_eq!(stdout(&counted).lines().count(), 5);
    assert!(stdout(&counted).contains("before-0"));
    let after_first = everything[0].position.to_string();
    let after = run(
        &mut schema.cli(),
        &["--json", "tail", "--after", &after_first, "--count", "1"],
    );
    let event: serde_json::Value = serde_json::from_str(stdout(&after).trim()).unwrap();
    assert_eq!(event["version"], 2, "strictly after the position given");
    let bad = run(&mut schema.cli(), &["tail", "--after", "12"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("transaction:sequence"));
    schema.drop().await;
}

/// Counts the events it applied.
#[derive(Debug, Clone, Default)]
struct Counter(Arc<std::sync::atomic::AtomicU64>);

impl Projection for Counter {
    type Error = std::convert::Infallible;
    fn name(&self) -> &str {
        "counter"
    }
    async fn apply(&mut self, _: &RecordedEvent) -> Result<(), Self::Error> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
    async fn reset(&mut self) -> Result<(), Self::Error> {
        self.0.store(0, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_are_listed_and_steered_from_the_command_line() {
    let schema = Schema::new(true).await;
    tick(&schema.store, "p", 3, 6, 5, 2).await; // 30 events
    let counter = Counter::default();
    let handle = ProjectionRunner::new(
        schema.store.clone(),
        counter.clone(),
        schema.store.checkpoints(),
    )
    .with_leadership(schema.store.leadership(Duration::from_millis(100)))
    .start();
    tokio::time::timeout(WAIT, handle.wait_for(|s| s.events_processed >= 30))
        .await
        .unwrap()
        .unwrap();
    // The saved checkpoint catches up too.
    tokio::time::timeout(WAIT, async {
        loop {
            let saved = schema.store.checkpoints().load("counter").await.unwrap();
            if saved.is_some_and(|c| c.events_processed >= 30) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();

    let listed = json(&run(&mut schema.cli(), &["--json", "projections"]));
    let row = &listed["projections"][0];
    assert_eq!(row["name"], "counter");
    assert_eq!(row["state"], "running");
    assert_eq!(row["lag"], 0);
    let table = run(&mut schema.cli(), &["projections"]);
    assert!(stdout(&table).contains("counter"));

    let paused = run(
        &mut schema.cli(),
        &["--json", "projection", "pause", "counter"],
    );
    assert!(paused.status.success());
    assert_eq!(json(&paused)["state"], "paused");
    tick(&schema.store, "p", 3, 3, 5, 1).await; // 15 more, not applied while paused
    let status = json(&run(&mut schema.cli(), &["--json", "status"]));
    assert_eq!(status["projections"][0]["state"], "paused");
    assert_eq!(status["projections"][0]["lag"], 15);

    let resumed = run(
        &mut schema.cli(),
        &["--json", "projection", "resume", "counter"],
    );
    assert_eq!(json(&resumed)["state"], "running");
    tokio::time::timeout(WAIT, handle.wait_for(|s| s.events_processed >= 45))
        .await
        .unwrap()
        .unwrap();

    let rebuilt = run(
        &mut schema.cli(),
        &["--json", "projection", "rebuild", "counter"],
    );
    assert!(rebuilt.status.success());
    assert_eq!(json(&rebuilt)["state"], "running");
    let saved = schema
        .store
        .checkpoints()
        .load("counter")
        .await
        .unwrap()
        .unwrap();
    println!(
        "after rebuild: {saved:?}, applied {}",
        counter.0.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(saved.state, ProjectionState::Running);
    assert_eq!(
        saved.events_processed, 45,
        "the rebuild applied everything again"
    );
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 45);

    let unknown = run(&mut schema.cli(), &["projection", "pause", "nobody"]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(
        stderr(&unknown).contains("known: counter"),
        "{}",
        stderr(&unknown)
    );
    let bad = run(&mut schema.cli(), &["projection", "explode", "counter"]);
    assert_eq!(bad.status.code(), Some(2));
    handle.stop().await.unwrap();

    // With no runner, a request is stored and the wait says why it ended.
    let waiting = run(
        &mut schema.cli(),
        &["projection", "pause", "counter", "--timeout", "1"],
    );
    assert_eq!(waiting.status.code(), Some(1));
    assert!(stderr(&waiting).contains("is a runner of this projection running"));
    assert!(
        schema
            .store
            .checkpoints()
            .pending_request("counter")
            .await
            .unwrap()
            .is_some()
    );
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_a_clear_error_with_its_exit_code() {
    let schema = Schema::new(true).await;
    let mut missing = assert_cmd::Command::cargo_bin("eventcore").unwrap();
    missing.env_remove("DATABASE_URL");
    let output = run(&mut missing, &["status"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("DATABASE_URL"));

    // A port nothing listens on, with a password that must not be printed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut down = assert_cmd::Command::cargo_bin("eventcore").unwrap();
    down.env(
        "DATABASE_URL",
        format!("postgres://app:s3cret-pw@127.0.0.1:{port}/db"),
    );
    let output = run(&mut down, &["--json", "status"]);
    assert_eq!(output.status.code(), Some(4));
    let text = stderr(&output);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    let error: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(error["exit_code"], 4);

    let mut mysql = assert_cmd::Command::cargo_bin("eventcore").unwrap();
    mysql.env("DATABASE_URL", "mysql://root@127.0.0.1/db");
    assert_eq!(run(&mut mysql, &["status"]).status.code(), Some(2));

    let wrong = run(
        schema.cli().env("EVENTCORE_SCHEMA", "no_such_schema_here"),
        &["status"],
    );
    assert_eq!(wrong.status.code(), Some(5));
    assert!(stderr(&wrong).contains("no_such_schema_here"));
    let invalid = run(
        schema.cli().env("EVENTCORE_SCHEMA", "bad\"name"),
        &["status"],
    );
    assert_eq!(invalid.status.code(), Some(2));
    let unknown = run(&mut schema.cli(), &["frobnicate"]);
    assert_eq!(unknown.status.code(), Some(2));
    schema.drop().await;
}
