//! The executor's snapshot cache is bounded in bytes, whatever the size of
//! the states: prints resident memory before and after.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use eventcore::{
    AppendRequest, AppendResult, Command, CommandExecutor, CommandLogic, Event, EventStore,
    ExecutionOptions, HandleContext, IdempotencyKey, KeyPurpose, ReadAllQuery, RecordedEvent,
    Snapshot, SnapshotKey, SnapshotPolicy, StoreError, StoredEvent, StreamId, StreamsRead,
    Subscription, Writes,
};
use eventcore_memory::InMemoryEventStore;
use serde::{Deserialize, Serialize};

/// The memory store without its own copies of snapshots, so that resident
/// memory shows what the executor keeps.
#[derive(Clone, Default)]
struct NoStoredSnapshots(InMemoryEventStore);

impl EventStore for NoStoredSnapshots {
    async fn read_streams(&self, ids: &[StreamId]) -> Result<StreamsRead, StoreError> {
        self.0.read_streams(ids).await
    }
    async fn append(&self, request: AppendRequest) -> Result<AppendResult, StoreError> {
        self.0.append(request).await
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
        self.0.idempotent_result(key, purpose).await
    }
    async fn read_streams_after(
        &self,
        after: &eventcore::StreamVersions,
    ) -> Result<StreamsRead, StoreError> {
        self.0.read_streams_after(after).await
    }
    async fn load_snapshot(&self, _: &SnapshotKey) -> Result<Option<Snapshot>, StoreError> {
        Ok(None)
    }
    async fn save_snapshot(&self, _: &Snapshot) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Grown {
    bytes: usize,
}

impl Event for Grown {
    fn event_type(&self) -> &'static str {
        "Grown"
    }
}

/// Its state is a text of the size its last event says: large states.
#[derive(Command)]
struct Grow {
    #[stream]
    stream: StreamId,
}

const STATE_BYTES: usize = 64 * 1024;

impl CommandLogic for Grow {
    type State = String;
    type Event = Grown;
    type Error = std::convert::Infallible;

    fn apply(&self, state: &mut String, event: &StoredEvent<Grown>) {
        *state = "x".repeat(event.payload.bytes);
    }

    fn handle(
        &self,
        _: String,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Self::Error> {
        Ok(Writes::new().emit(self.stream_stream(), Grown { bytes: STATE_BYTES }))
    }

    fn snapshots(&self) -> Option<SnapshotPolicy<String>> {
        Some(SnapshotPolicy::new("grow", 1).every(1))
    }
}

/// Resident memory of this process, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[tokio::test]
async fn the_snapshot_cache_stays_within_its_byte_budget() {
    const BUDGET: u64 = 8 * 1024 * 1024;
    const STREAMS: usize = 1_000;
    let executor =
        CommandExecutor::new(NoStoredSnapshots::default()).with_snapshot_cache_bytes(BUDGET);
    let before = resident();
    for n in 0..STREAMS {
        let command = Grow {
            stream: StreamId::try_new(format!("grown-{n}")).unwrap(),
        };
        // Twice: the state after an append is kept for keys seen before.
        for _ in 0..2 {
            executor
                .execute(&command, ExecutionOptions::default())
                .await
                .unwrap();
        }
    }
    let held = executor.snapshot_cache_bytes();
    let after = resident();
    let unbounded = (STREAMS * STATE_BYTES) as u64;
    println!(
        "{STREAMS} states of {} KiB ({} MiB if all were kept): cache holds {:.1} MiB (budget {} \
         MiB); resident memory {:.1} MiB -> {:.1} MiB (+{:.1} MiB)",
        STATE_BYTES / 1024,
        unbounded / (1024 * 1024),
        held as f64 / (1024.0 * 1024.0),
        BUDGET / (1024 * 1024),
        before as f64 / (1024.0 * 1024.0),
        after as f64 / (1024.0 * 1024.0),
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
    );
    assert!(held <= BUDGET, "the cache holds {held} bytes");
    assert!(held > 0, "the cache keeps what fits");
    // The store's events are small; what the cache keeps is the bulk.
    assert!(
        after.saturating_sub(before) < 4 * BUDGET,
        "resident memory grew by {} bytes",
        after.saturating_sub(before)
    );
}
