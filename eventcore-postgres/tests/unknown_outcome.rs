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

    /// The test server's URL, through this relay.
    fn url(&self, options: &sqlx::postgres::PgConnectOptions) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            options.get_username(),
            self.port,
            options.get_database().unwrap_or("postgres")
        )
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
    let relayed_url = relay.url(&options);
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
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT version FROM \"{}\".eventcore_streams WHERE stream_id = $1 FOR UPDATE",
        direct.schema()
    )))
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

/// What a [`CommitDropper`] does once it has dropped a commit's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Afterwards {
    /// Stops listening: connections are refused.
    Refuse,
    /// Accepts connections and never answers.
    BlackHole,
}

/// A TCP relay that forwards the first `COMMIT` to the server, waits for the
/// server's answer (so the commit happened), drops it, cuts every
/// connection, and from then on refuses or swallows connections.
struct CommitDropper {
    port: u16,
    tripped: watch::Receiver<bool>,
}

impl CommitDropper {
    async fn to(target: (String, u16), afterwards: Afterwards) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (trip, tripped) = watch::channel(false);
        let trip = std::sync::Arc::new(trip);
        let mut seen = tripped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { return };
                        tokio::spawn(relay_until_commit(client, target.clone(), trip.clone()));
                    }
                    _ = seen.wait_for(|t| *t) => break,
                }
            }
            match afterwards {
                Afterwards::Refuse => drop(listener),
                Afterwards::BlackHole => {
                    let mut swallowed = Vec::new();
                    while let Ok((client, _)) = listener.accept().await {
                        swallowed.push(client);
                    }
                }
            }
        });
        Self { port, tripped }
    }

    fn url(&self, options: &sqlx::postgres::PgConnectOptions) -> String {
        // Unencrypted, so the relay can see the COMMIT go by.
        format!(
            "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
            options.get_username(),
            self.port,
            options.get_database().unwrap_or("postgres")
        )
    }
}

/// Relays one connection; on the first COMMIT, forwards it, swallows the
/// answer and trips the dropper.
async fn relay_until_commit(
    client: TcpStream,
    target: (String, u16),
    trip: std::sync::Arc<watch::Sender<bool>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let committing = std::sync::atomic::AtomicBool::new(false);
    let mut cut = trip.subscribe();
    let upstream = async {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buffer[..n];
            if !*trip.borrow() && chunk.windows(6).any(|w| w == b"COMMIT") {
                committing.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if committing.load(std::sync::atomic::Ordering::SeqCst) {
                // The server answered the COMMIT: it is committed. The
                // client never hears of it.
                trip.send_replace(true);
                return;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
        _ = cut.wait_for(|t| *t) => {}
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Deposited {
    cents: u64,
}

impl eventcore::Event for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

#[derive(eventcore::Command)]
struct Deposit {
    #[stream]
    account: StreamId,
}

impl eventcore::CommandLogic for Deposit {
    type State = ();
    type Event = Deposited;
    type Error = std::convert::Infallible;

    fn apply(&self, _: &mut (), _: &eventcore::StoredEvent<Deposited>) {}

    fn handle(
        &self,
        _: (),
        _: &mut eventcore::HandleContext<'_, Self>,
    ) -> Result<eventcore::Writes<Self>, Self::Error> {
        Ok(eventcore::Writes::new().emit(self.account_stream(), Deposited { cents: 100 }))
    }
}

/// A commit whose answer is lost, then: no attempts left, a store that
/// refuses connections, or one that never answers until the timeout. Each
/// time the execution says its outcome is unknown, and the same key run
/// again directly finds the command written, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_is_reported_unknown_whatever_follows() {
    use eventcore::{CommandExecutor, ExecutionOptions, IdempotencyKey, RetryPolicy};
    let url = testing::test_database_url().await.unwrap();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let target = (options.get_host().to_owned(), options.get_port());
    let direct = support::fresh_store().await;
    let cases = [
        ("no attempts left", Afterwards::Refuse, 1, None),
        ("store unreachable", Afterwards::Refuse, 4, None),
        (
            "timeout",
            Afterwards::BlackHole,
            10,
            Some(Duration::from_secs(3)),
        ),
    ];
    for (case, afterwards, attempts, timeout) in cases {
        let dropper = CommitDropper::to(target.clone(), afterwards).await;
        let relayed = PostgresEventStore::new(
            PostgresConfig::new(dropper.url(&options))
                .max_connections(2)
                // Refused connections are retried by the pool until this
                // passes; a black hole must outlast the execution's timeout.
                .acquire_timeout(match afterwards {
                    Afterwards::Refuse => Duration::from_secs(1),
                    Afterwards::BlackHole => Duration::from_secs(60),
                })
                .schema(direct.schema().as_str())
                .unwrap(),
        )
        .await
        .unwrap();
        let account = StreamId::try_new(format!("account-{attempts}")).unwrap();
        let command = Deposit {
            account: account.clone(),
        };
        let key = IdempotencyKey::try_new(format!("deposit-{attempts}")).unwrap();
        let policy = RetryPolicy::default()
            .with_max_attempts(attempts)
            .with_base_delay(Duration::from_millis(20))
            .with_time_budget(None);
        let mut execution = ExecutionOptions::default().with_idempotency_key(key.clone());
        if let Some(timeout) = timeout {
            execution = execution.with_timeout(timeout);
        }
        let error = tokio::time::timeout(
            Duration::from_secs(90),
            CommandExecutor::new(relayed)
                .with_retry_policy(policy)
                .execute(&command, execution),
        )
        .await
        .expect("the execution ends")
        .unwrap_err();
        assert!(
            *dropper.tripped.borrow(),
            "{case}: the commit was never dropped: {error}"
        );
        println!("{case}: {error}");
        assert!(error.is_unknown_outcome(), "{case}: {error:?}");
        if timeout.is_some() {
            assert!(
                matches!(error, eventcore::ExecutionError::Timeout { .. }),
                "{case}: {error:?}"
            );
        }

        let found = CommandExecutor::new(direct.clone())
            .execute(
                &command,
                ExecutionOptions::default().with_idempotency_key(key),
            )
            .await
            .unwrap();
        assert!(
            found.replayed,
            "{case}: the same key finds the command written"
        );
        let read = direct
            .read_streams(std::slice::from_ref(&account))
            .await
            .unwrap();
        assert_eq!(read.events.len(), 1, "{case}: written once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_during_a_group_commit_is_unknown_to_every_append_of_the_batch() {
    let url = testing::test_database_url().await.unwrap();
    let direct = support::fresh_store().await;
    let schema = direct.schema().as_str().to_owned();
    let (first, contested) = (
        StreamId::try_new("first").unwrap(),
        StreamId::try_new("contested").unwrap(),
    );
    for s in [&first, &contested] {
        direct
            .append(AppendRequest::single(
                s.clone(),
                ExpectedVersion::NoStream,
                vec![event()],
            ))
            .await
            .unwrap();
    }
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let relay = Relay::to((options.get_host().to_owned(), options.get_port())).await;
    let relayed_url = relay.url(&options);
    let relayed = PostgresEventStore::new(
        PostgresConfig::new(relayed_url)
            .max_connections(2)
            .schema(&schema)
            .unwrap()
            .group_commit(eventcore_postgres::GroupCommit::new().batches_in_flight(1)),
    )
    .await
    .unwrap();
    let spawn = |request: AppendRequest| {
        let store = relayed.clone();
        tokio::spawn(async move { store.append(request).await })
    };
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    let wait = async |watcher: &mut PgConnection, pattern: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while support::lock_waiters(watcher, &schema, pattern).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never blocked: {pattern}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };

    // The writer's first append blocks on one held row, so that the next
    // two queue and go together, into a second held row.
    let first_holder = support::hold_row(&url, &direct, &first).await;
    let contested_holder = support::hold_row(&url, &direct, &contested).await;
    let lead = spawn(AppendRequest::single(
        first.clone(),
        ExpectedVersion::Exact(StreamVersion::new(1)),
        vec![event()],
    ));
    wait(&mut watcher, "eventcore_append(").await;
    let batched: Vec<_> = [
        AppendRequest::single(
            contested.clone(),
            ExpectedVersion::Exact(StreamVersion::new(1)),
            vec![event()],
        ),
        AppendRequest::single(
            StreamId::try_new("bystander").unwrap(),
            ExpectedVersion::NoStream,
            vec![event()],
        ),
    ]
    .into_iter()
    .map(spawn)
    .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while relayed.appends_queued() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first_holder.close().await.unwrap();
    lead.await.unwrap().unwrap();
    wait(&mut watcher, "eventcore_append_batch(").await;

    relay.cut_all();
    let mut unknown = 0;
    for append in batched {
        let outcome = tokio::time::timeout(Duration::from_secs(30), append)
            .await
            .expect("each append of the batch returns once the connection is gone")
            .unwrap();
        assert!(
            matches!(outcome, Err(StoreError::UnknownOutcome { .. })),
            "expected an unknown outcome, got {outcome:?}"
        );
        unknown += 1;
    }
    contested_holder.close().await.unwrap();

    // Whatever the server decided, the batch is all or nothing.
    let bystander = StreamId::try_new("bystander").unwrap();
    let read = direct
        .read_streams(&[contested.clone(), bystander.clone()])
        .await
        .unwrap();
    let written = (
        read.version(&contested).value(),
        read.version(&bystander).value(),
    );
    assert!(
        written == (1, 0) || written == (2, 1),
        "the batch was half written: {written:?}"
    );
    println!(
        "batch of 2 cut mid-statement: {unknown} reported unknown, stored versions {written:?}"
    );
}
