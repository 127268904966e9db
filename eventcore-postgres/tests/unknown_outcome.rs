//! A connection lost while an append is in flight is an unknown outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use eventcore::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, StoreError,
    StreamId, StreamVersion,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A TCP relay to the test server whose connections can all be cut at once.
struct Relay {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn to(target: (String, u16)) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_seen) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let mut server = TcpStream::connect(target.clone()).await.unwrap();
                let mut cut_seen = cut_seen.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_seen.wait_for(|cut| *cut) => {}
                    }
                    // Dropping both ends closes them.
                });
            }
        });
        Self { port, cut }
    }

    fn cut_all(&self) {
        self.cut.send_replace(true);
    }
}

fn event() -> NewEvent {
    NewEvent::from_parts(
        EventType::try_new("Marked").unwrap(),
        json!({ "n": 2 }),
        EventMetadata::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_an_append_is_an_unknown_outcome() {
    let url = testing::test_database_url().await.unwrap();
    let direct = support::fresh_store().await;
    let s = StreamId::try_new("contested").unwrap();
    direct
        .append(AppendRequest::single(
            s.clone(),
            ExpectedVersion::NoStream,
            vec![event()],
        ))
        .await
        .unwrap();

    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let relay = Relay::to((options.get_host().to_owned(), options.get_port())).await;
    let relayed_url = format!(
        "postgres://{}@127.0.0.1:{}/{}",
        options.get_username(),
        relay.port,
        options.get_database().unwrap_or("postgres")
    );
    let relayed = PostgresEventStore::new(
        PostgresConfig::new(relayed_url)
            .max_connections(1)
            .schema(direct.schema().as_str())
            .unwrap(),
    )
    .await
    .unwrap();

    // Hold the stream's row so the append blocks inside its statement.
    let mut holder = PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query(&format!(
        "SELECT version FROM \"{}\".eventcore_streams WHERE stream_id = $1 FOR UPDATE",
        direct.schema()
    ))
    .bind(s.as_ref())
    .execute(&mut holder)
    .await
    .unwrap();

    let append = tokio::spawn({
        let s = s.clone();
        async move {
            relayed
                .append(AppendRequest::single(
                    s,
                    ExpectedVersion::Exact(StreamVersion::new(1)),
                    vec![event()],
                ))
                .await
        }
    });
    // Wait until the append is blocked on the held row, then cut its connection.
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the append never blocked on the held row"
        );
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%eventcore_append%'",
        )
        .bind(direct.schema().as_str())
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.cut_all();
    let outcome = tokio::time::timeout(Duration::from_secs(30), append)
        .await
        .expect("the append returns once its connection is gone")
        .unwrap();
    assert!(
        matches!(outcome, Err(StoreError::UnknownOutcome { .. })),
        "expected an unknown outcome, got {outcome:?}"
    );
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();

    // Whatever the server decided, the stream is consistent: the second event
    // is there once, or not at all.
    let read = direct.read_streams(std::slice::from_ref(&s)).await.unwrap();
    let versions: Vec<u64> = read.events.iter().map(|e| e.version.value()).collect();
    assert!(
        versions == [1] || versions == [1, 2],
        "the stream is inconsistent: {versions:?}"
    );
    assert_eq!(read.version(&s).value(), versions.len() as u64);
}
