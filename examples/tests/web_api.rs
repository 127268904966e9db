//! The bank's HTTP API (`eventcore_examples::web`) over real HTTP requests
//! on loopback: commands, balances read back, a retried request with the
//! same `Idempotency-Key`, the documented error statuses, and a graceful
//! shutdown; on the memory store and on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use eventcore::{
    AppendRequest, AppendResult, EventStore, IdempotencyKey, KeyPurpose, ReadAllQuery,
    RecordedEvent, Snapshot, SnapshotKey, StoreError, StreamId, StreamsRead, Subscription,
};
use eventcore_examples::{banking, web};
use eventcore_memory::InMemoryEventStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request with `Connection: close`; the status, the headers
/// (lower-cased names) and the JSON body. (A client crate would add a
/// dependency tree for what these lines do.)
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, BTreeMap<String, String>, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let key = key.map_or_else(String::new, |k| format!("Idempotency-Key: {k}\r\n"));
    let text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{key}\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    println!("{method} {path} -> {status} {json}");
    (status, headers, json)
}

async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let (status, _, json) = request(addr, "POST", path, key, Some(&body.to_string())).await;
    (status, json)
}

/// Starts the API on a free loopback port; send on the sender to stop it.
async fn start<S: EventStore + Clone + 'static>(
    store: S,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(web::serve(store, listener, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

/// The bank's story over HTTP, on `store`; `prefix` keeps accounts apart.
async fn the_bank_over_http<S: EventStore + Clone + 'static>(store: S, prefix: &str) {
    let (addr, stop, server) = start(store).await;
    let (alice, bob) = (format!("{prefix}-alice"), format!("{prefix}-bob"));
    for (id, owner) in [(&alice, "Alice"), (&bob, "Bob")] {
        let (status, _) = post(
            addr,
            "/accounts",
            None,
            json!({"account": id, "owner": owner}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, again) = post(
        addr,
        "/accounts",
        None,
        json!({"account": alice, "owner": "A"}),
    )
    .await;
    assert_eq!(
        (status, again["kind"].as_str()),
        (422, Some("rejected")),
        "already open"
    );

    // A deposit retried with the same key is applied once.
    let deposit = json!({"cents": 500, "reference": "salary"});
    let path = format!("/accounts/{alice}/deposits");
    let key = format!("{prefix}-deposit-1");
    let (status, first) = post(addr, &path, Some(&key), deposit.clone()).await;
    assert_eq!((status, first["replayed"].as_bool()), (201, Some(false)));
    let (status, retried) = post(addr, &path, Some(&key), deposit).await;
    assert_eq!((status, retried["replayed"].as_bool()), (201, Some(true)));
    assert_eq!(
        retried["position"], first["position"],
        "the first execution's result"
    );
    // The same key for another request is refused.
    let (status, reused) = post(
        addr,
        &format!("/accounts/{alice}/withdrawals"),
        Some(&key),
        json!({"cents": 1}),
    )
    .await;
    assert_eq!(status, 422, "{reused}");

    let (status, moved) = post(
        addr,
        "/transfers",
        None,
        json!({"from": alice, "to": bob, "cents": 300}),
    )
    .await;
    assert_eq!((status, moved["events"].as_u64()), (201, Some(2)));
    let position = moved["position"].as_str().unwrap().to_owned();
    for (id, cents) in [(&alice, 200), (&bob, 300)] {
        let (status, _, balance) = request(
            addr,
            "GET",
            &format!("/accounts/{id}/balance?after={position}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(balance["caught_up"], true, "read your own write");
        assert_eq!(balance["cents"], cents, "{id}");
    }

    // Refusals and bad requests.
    let (status, refused) = post(
        addr,
        &format!("/accounts/{bob}/withdrawals"),
        None,
        json!({"cents": 1000}),
    )
    .await;
    assert_eq!((status, refused["kind"].as_str()), (422, Some("rejected")));
    assert!(
        refused["error"].as_str().unwrap().contains("300 cents"),
        "{refused}"
    );
    let (status, _) = post(addr, "/accounts/%20/deposits", None, json!({"cents": 5})).await;
    assert_eq!(status, 400, "an invalid account id");
    let (status, _) = post(addr, &path, None, json!({"cents": 0})).await;
    assert_eq!(status, 400, "an amount of zero");
    let (status, _, bad) = request(addr, "POST", &path, None, Some("{not json")).await;
    assert_eq!((status, bad["kind"].as_str()), (400, Some("bad_request")));
    let (status, _) = post(addr, &path, Some(""), json!({"cents": 5})).await;
    assert_eq!(status, 400, "an empty idempotency key");
    let (status, _, _) = request(addr, "GET", "/accounts/nobody/balance", None, None).await;
    assert_eq!(status, 404);
    let (status, closed) = post(
        addr,
        "/accounts/never-opened/deposits",
        None,
        json!({"cents": 5}),
    )
    .await;
    assert_eq!((status, closed["kind"].as_str()), (422, Some("rejected")));

    // Graceful shutdown: the server ends, and answers no more.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server shuts down")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_answers_over_http_on_the_memory_store() {
    let store = InMemoryEventStore::new().with_upcasters(banking::upcasters().unwrap());
    the_bank_over_http(store, "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_answers_over_http_on_postgres() {
    let store = eventcore_postgres::testing::fresh_store()
        .await
        .unwrap()
        .with_upcasters(banking::upcasters().unwrap());
    the_bank_over_http(store, "pg").await;
}

/// A store whose appends to `lost-*` streams commit but lose their answer,
/// and whose key lookups for `lost-*` keys, once such an answer was lost,
/// find the store unreachable: an execution there cannot learn what
/// happened.
#[derive(Clone)]
struct Lossy(
    InMemoryEventStore,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

impl EventStore for Lossy {
    async fn read_streams(&self, ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        self.0.read_streams(ids).await
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        let lost = request
            .streams()
            .iter()
            .any(|s| s.stream_id.as_ref().starts_with("lost"));
        let result = self.0.append(request).await?;
        if lost {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(StoreError::UnknownOutcome {
                source: "the answer to COMMIT was lost (injected)".into(),
            });
        }
        Ok(result)
    }
    async fn read_all(&self, query: &ReadAllQuery) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_all(query).await
    }
    fn subscribe(&self, query: ReadAllQuery) -> Subscription {
        self.0.subscribe(query)
    }
    async fn idempotent_result(
        &self,
        key: &IdempotencyKey,
        purpose: Option<&KeyPurpose>,
    ) -> Result<Option<AppendResult>, StoreError> {
        if key.as_ref().starts_with("lost") && self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                reason: "connection refused (injected)".into(),
                source: None,
            });
        }
        self.0.idempotent_result(key, purpose).await
    }
    async fn read_streams_after(
        &self,
        after: &eventcore::StreamVersions,
    ) -> Result<StreamsRead, StoreError> {
        self.0.read_streams_after(after).await
    }
    async fn load_snapshot(&self, key: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        self.0.load_snapshot(key).await
    }
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.0.save_snapshot(snapshot).await
    }
}

/// A lost commit answer: without a key a 500 that says the outcome is
/// unknown (no blind retry); with a key a 503 with `Retry-After` (a retry
/// with the key is applied at most once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_outcome_is_told_apart_from_a_failure() {
    let store = Lossy(InMemoryEventStore::new(), std::sync::Arc::default());
    let (addr, stop, server) = start(store).await;
    // Keyed first: its first key lookup finds nothing, its append's answer
    // is lost, and every lookup after that finds the store unreachable.
    let (status, headers, body) = request(
        addr,
        "POST",
        "/accounts",
        Some("lost-key"),
        Some(&json!({"account": "lost-1", "owner": "L"}).to_string()),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["outcome_unknown"], true, "{body}");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("1"));
    let (status, unkeyed) = post(
        addr,
        "/accounts",
        None,
        json!({"account": "lost-2", "owner": "L"}),
    )
    .await;
    assert_eq!(
        (status, unkeyed["outcome_unknown"].as_bool()),
        (500, Some(true))
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
