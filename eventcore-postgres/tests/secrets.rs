//! The password in the database URL never reaches a log line or an error message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use eventcore::{
    AppendRequest, EventMetadata, EventStore, EventType, ExpectedVersion, NewEvent, ReadAllQuery,
    StreamId,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing};
use futures::StreamExt;
use serde_json::json;

const PASSWORD: &str = "hunter2-s3cr3t";

/// Everything every tracing event writes, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The test server's URL for `database` with a password added (trust authentication ignores it).
async fn url_with_password(database: Option<&str>) -> String {
    let url = testing::test_database_url().await.unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    format!(
        "postgres://{}:{PASSWORD}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        database.unwrap_or(options.get_database().unwrap_or("postgres"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut messages = Vec::new();

    let url = url_with_password(None).await;
    let config = PostgresConfig::new(url.clone())
        .schema(&testing::fresh_schema_name())
        .unwrap();
    messages.push(format!("{config:?}"));
    // Replica and session URLs are redacted alike.
    messages.push(format!(
        "{:?}",
        config
            .clone()
            .read_replica(url.clone())
            .transaction_pooler(url.clone())
    ));
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    let stream = StreamId::try_new("logged").unwrap();
    let event = NewEvent::from_parts(
        EventType::try_new("Marked").unwrap(),
        json!({"n": 1}),
        EventMetadata::default(),
    )
    .unwrap();
    store
        .append(AppendRequest::single(
            stream.clone(),
            ExpectedVersion::NoStream,
            vec![event.clone()],
        ))
        .await
        .unwrap();
    // A conflict, and reads of every kind.
    let conflict = store
        .append(AppendRequest::single(
            stream.clone(),
            ExpectedVersion::NoStream,
            vec![event],
        ))
        .await
        .unwrap_err();
    messages.push(format!("{conflict} {conflict:?}"));
    store.read_streams(&[stream]).await.unwrap();
    let mut subscription = store.subscribe(ReadAllQuery::from_start());
    subscription.next().await.unwrap().unwrap();

    // Failures: a server that is not there, a wrong database, a malformed URL.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for bad in [
        format!("postgres://someone:{PASSWORD}@127.0.0.1:{port}/db"),
        url_with_password(Some("no_such_database_here")).await,
        format!("postgres://someone:{PASSWORD}@[::1/db"),
        format!("postgres://someone@127.0.0.1:{port}/db?password={PASSWORD}"),
        format!(
            "postgresql://127.0.0.1:{port}/db?user=someone&password={PASSWORD}&sslmode=disable"
        ),
        format!("postgres://someone@127.0.0.1:{port}/db?sslmode=disable&password={PASSWORD}#frag"),
        format!("postgres://someone:{PASSWORD}@127.0.0.1:{port}/db?password={PASSWORD}"),
        format!("postgres://someone@127.0.0.1:{port}/db?PassWord={PASSWORD}"),
    ] {
        messages.push(format!("{:?}", PostgresConfig::new(bad.clone())));
        let config = PostgresConfig::new(bad).acquire_timeout(Duration::from_secs(2));
        let error = PostgresEventStore::new(config).await.unwrap_err();
        messages.push(format!("{error} {error:?}"));
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logs.is_empty(),
        "nothing was logged: the capture is not working"
    );
    assert!(
        !logs.contains(PASSWORD),
        "the password is in the logs:\n{logs}"
    );
    for message in messages {
        assert!(!message.contains(PASSWORD), "the password is in: {message}");
    }
}
