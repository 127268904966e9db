//! The named workloads: their commands, their streams and their seed data.

use std::fmt;

use eventcore::{
    AppendRequest, Command, CommandLogic, Event, EventMetadata, EventStore, ExpectedVersion,
    HandleContext, NewEvent, SnapshotPolicy, StoreError, StoredEvent, StreamAppend, StreamId,
    Writes,
};
use serde::{Deserialize, Serialize};

/// Events of every workload: small payloads, like most real events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadEvent {
    /// The stream was created by the seeding step.
    Opened,
    /// A counter went up.
    Incremented {
        /// By how much.
        by: u64,
    },
    /// Money left the stream.
    Sent {
        /// How much, in cents.
        amount: u64,
    },
    /// Money arrived on the stream.
    Received {
        /// How much, in cents.
        amount: u64,
    },
}

impl Event for LoadEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened => "Opened",
            Self::Incremented { .. } => "Incremented",
            Self::Sent { .. } => "Sent",
            Self::Received { .. } => "Received",
        }
    }
}

/// Workload commands never refuse: every decision writes.
#[derive(Debug, thiserror::Error)]
#[error("never raised")]
pub enum Never {}

/// What a counter stream folds to: its total and how many events it had.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Counter {
    /// The sum of every increment.
    pub total: u64,
    /// Events folded.
    pub events: u64,
}

impl Counter {
    fn fold(&mut self, event: &LoadEvent) {
        self.events += 1;
        match event {
            LoadEvent::Incremented { by } | LoadEvent::Received { amount: by } => {
                self.total = self.total.wrapping_add(*by);
            }
            LoadEvent::Sent { amount } => self.total = self.total.wrapping_sub(*amount),
            LoadEvent::Opened => {}
        }
    }
}

/// The workloads' snapshot policy: every `every` events, or none.
fn snapshot_policy<S: Serialize + serde::de::DeserializeOwned>(
    name: &'static str,
    every: Option<u64>,
) -> Option<SnapshotPolicy<S>> {
    every.map(|every| SnapshotPolicy::new(name, 1).every(every))
}

/// Reads one stream and appends `events` increments to it (1 for the
/// single-stream and long-stream workloads, 100 for the batch workload).
#[derive(Debug, Clone, Command)]
pub struct Increment {
    /// The counter.
    #[stream]
    pub stream: StreamId,
    /// How many events to append.
    pub events: u32,
    /// Snapshot every this many folded events; `None` folds every event.
    pub snapshot_every: Option<u64>,
}

impl CommandLogic for Increment {
    type State = Counter;
    type Event = LoadEvent;
    type Error = Never;

    fn snapshots(&self) -> Option<SnapshotPolicy<Self::State>> {
        snapshot_policy("increment", self.snapshot_every)
    }

    fn apply(&self, state: &mut Counter, event: &StoredEvent<LoadEvent>) {
        state.fold(&event.payload);
    }

    fn handle(
        &self,
        state: Counter,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Never> {
        let mut writes = Writes::new();
        for _ in 0..self.events {
            writes.push(
                self.stream_stream(),
                LoadEvent::Incremented {
                    by: state.events % 7 + 1,
                },
            );
        }
        Ok(writes)
    }
}

/// Moves money between two streams: reads both, appends one event to each.
#[derive(Debug, Clone, Command)]
pub struct Transfer {
    /// Where the money leaves.
    #[stream]
    pub from: StreamId,
    /// Where it arrives.
    #[stream]
    pub to: StreamId,
    /// How much, in cents.
    pub amount: u64,
    /// Snapshot every this many folded events; `None` folds every event.
    pub snapshot_every: Option<u64>,
}

/// Both balances a transfer sees.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Balances {
    /// The source's balance.
    pub from: Counter,
    /// The destination's balance.
    pub to: Counter,
}

impl CommandLogic for Transfer {
    type State = Balances;
    type Event = LoadEvent;
    type Error = Never;

    fn snapshots(&self) -> Option<SnapshotPolicy<Self::State>> {
        snapshot_policy("transfer", self.snapshot_every)
    }

    fn apply(&self, state: &mut Balances, event: &StoredEvent<LoadEvent>) {
        if event.stream_id == self.from {
            state.from.fold(&event.payload);
        } else {
            state.to.fold(&event.payload);
        }
    }

    fn handle(
        &self,
        state: Balances,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Never> {
        // Overdrafts are allowed: a refusal would make throughput depend on luck.
        let amount = self.amount.min(state.from.total.max(1));
        Ok(Writes::new()
            .emit(self.from_stream(), LoadEvent::Sent { amount })
            .emit(self.to_stream(), LoadEvent::Received { amount }))
    }
}

/// Reads five streams and appends one event to each.
#[derive(Debug, Clone, Command)]
pub struct TouchFive {
    /// The five streams, all different.
    #[stream]
    pub streams: Vec<StreamId>,
    /// Snapshot every this many folded events; `None` folds every event.
    pub snapshot_every: Option<u64>,
}

impl CommandLogic for TouchFive {
    type State = Counter;
    type Event = LoadEvent;
    type Error = Never;

    fn snapshots(&self) -> Option<SnapshotPolicy<Self::State>> {
        snapshot_policy("touch-five", self.snapshot_every)
    }

    fn apply(&self, state: &mut Counter, event: &StoredEvent<LoadEvent>) {
        state.fold(&event.payload);
    }

    fn handle(
        &self,
        state: Counter,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, Never> {
        let mut writes = Writes::new();
        for stream in self.streams_streams() {
            writes.push(
                stream,
                LoadEvent::Incremented {
                    by: state.events % 3 + 1,
                },
            );
        }
        Ok(writes)
    }
}

/// A named workload, as the load generator's `--workload` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Read one stream, append one event.
    Single,
    /// Read two streams, append one event to each.
    Transfer,
    /// Read five streams, append one event to each.
    Five,
    /// Read one long stream (1,000 events unless told otherwise), append one event.
    Long,
    /// Read one stream, append 100 events.
    Batch,
}

impl Workload {
    /// Every workload, in the order reports list them.
    pub const ALL: [Self; 5] = [
        Self::Single,
        Self::Transfer,
        Self::Five,
        Self::Long,
        Self::Batch,
    ];

    /// Streams each command reads.
    pub fn streams_per_command(self) -> usize {
        match self {
            Self::Single | Self::Long | Self::Batch => 1,
            Self::Transfer => 2,
            Self::Five => 5,
        }
    }

    /// Events each command appends.
    pub fn events_per_command(self) -> u64 {
        match self {
            Self::Single | Self::Long => 1,
            Self::Transfer => 2,
            Self::Five => 5,
            Self::Batch => 100,
        }
    }

    /// Events each stream holds after seeding (the load generator's
    /// `--long-events` overrides it for the long-stream workload).
    pub fn seed_events(self) -> usize {
        match self {
            Self::Long => 1_000,
            _ => 1,
        }
    }

    /// How many streams the workload spreads over at `contention`. The
    /// long-stream workload seeds 1,000 events per stream, so its low
    /// contention pool is 200 streams rather than 100,000.
    pub fn stream_count(self, contention: Contention) -> usize {
        match (contention, self) {
            (Contention::High, _) => 10,
            (Contention::Low, Self::Long) => 200,
            (Contention::Low, _) => 100_000,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Single => "single",
            Self::Transfer => "transfer",
            Self::Five => "five",
            Self::Long => "long",
            Self::Batch => "batch",
        })
    }
}

/// How many streams the commands share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contention {
    /// Many streams (100,000; 200 for the long-stream workload): commands rarely meet.
    Low,
    /// 10 hot streams: commands meet all the time.
    High,
}

impl fmt::Display for Contention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Low => "low",
            Self::High => "high",
        })
    }
}

/// The streams one workload runs on, named after the run so reruns against
/// one database never meet old data.
#[derive(Debug, Clone)]
pub struct StreamPool {
    streams: Vec<StreamId>,
}

impl StreamPool {
    /// `count` streams named `{prefix}-{n}`.
    ///
    /// # Errors
    /// If `prefix` makes an invalid stream id.
    pub fn new(prefix: &str, count: usize) -> Result<Self, eventcore::InvalidStreamId> {
        let streams = (0..count)
            .map(|n| StreamId::try_new(format!("{prefix}-{n}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { streams })
    }

    /// The streams.
    pub fn streams(&self) -> &[StreamId] {
        &self.streams
    }

    /// `n` different streams picked at random (all of them if `n` is larger).
    pub fn pick(&self, rng: &mut fastrand::Rng, n: usize) -> Vec<StreamId> {
        let mut picked: Vec<StreamId> = Vec::with_capacity(n);
        while picked.len() < n.min(self.streams.len()) {
            let candidate = &self.streams[rng.usize(..self.streams.len())];
            if !picked.contains(candidate) {
                picked.push(candidate.clone());
            }
        }
        picked
    }

    /// Writes `events_each` events to every stream (an `Opened` event, then
    /// increments), in appends of at most 10,000 events.
    ///
    /// # Errors
    /// The store's error, if an append fails.
    pub async fn seed<S: EventStore>(
        &self,
        store: &S,
        events_each: usize,
    ) -> Result<(), SeedError> {
        let per_append = (10_000 / events_each.max(1)).max(1);
        for chunk in self.streams.chunks(per_append) {
            let appends = chunk.iter().map(|stream| {
                let events = (0..events_each)
                    .map(|n| {
                        let event = if n == 0 {
                            LoadEvent::Opened
                        } else {
                            LoadEvent::Incremented { by: 1 }
                        };
                        NewEvent::from_event(&event, EventMetadata::default())
                    })
                    .collect::<Result<Vec<_>, _>>();
                events.map(|events| {
                    StreamAppend::new(stream.clone(), ExpectedVersion::NoStream, events)
                })
            });
            let request = AppendRequest::new(appends.collect::<Result<Vec<_>, _>>()?)?;
            store.append(request).await?;
        }
        Ok(())
    }
}

/// Seeding a stream pool failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// An event did not encode.
    #[error(transparent)]
    Encode(#[from] eventcore::EncodeError),
    /// The append request was malformed.
    #[error(transparent)]
    Request(#[from] eventcore::InvalidAppend),
    /// The store refused the append.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The command a workload runs next, picked from its pool.
#[derive(Debug, Clone)]
pub enum NextCommand {
    /// The single, long-stream and batch workloads.
    Increment(Increment),
    /// The transfer workload.
    Transfer(Transfer),
    /// The five-stream workload.
    Five(TouchFive),
}

impl NextCommand {
    /// A random command of `workload` over `pool`.
    pub fn pick(
        workload: Workload,
        pool: &StreamPool,
        rng: &mut fastrand::Rng,
        snapshot_every: Option<u64>,
    ) -> Self {
        let streams = pool.pick(rng, workload.streams_per_command());
        Self::on(workload, streams, rng.u64(1..=100), snapshot_every)
    }

    /// Task `task`'s command of `workload`: on its own group of streams
    /// (wrapping around a pool smaller than the tasks need).
    pub fn for_task(
        workload: Workload,
        pool: &StreamPool,
        task: usize,
        snapshot_every: Option<u64>,
    ) -> Self {
        let k = workload.streams_per_command();
        let all = pool.streams();
        let streams = (0..k)
            .map(|i| all[(task * k + i) % all.len()].clone())
            .collect();
        Self::on(workload, streams, 1, snapshot_every)
    }

    /// The command of `workload` on `streams` (as many as it reads).
    fn on(
        workload: Workload,
        mut streams: Vec<StreamId>,
        amount: u64,
        snapshot_every: Option<u64>,
    ) -> Self {
        match workload {
            Workload::Single | Workload::Long | Workload::Batch => Self::Increment(Increment {
                stream: streams.remove(0),
                events: u32::try_from(workload.events_per_command()).unwrap_or(1),
                snapshot_every,
            }),
            Workload::Transfer => {
                let to = streams.remove(1);
                Self::Transfer(Transfer {
                    from: streams.remove(0),
                    to,
                    amount,
                    snapshot_every,
                })
            }
            Workload::Five => Self::Five(TouchFive {
                // One order per set of streams: snapshots are keyed by the
                // declared streams in order, and this fold does not care.
                streams: {
                    let mut streams = streams;
                    streams.sort();
                    streams
                },
                snapshot_every,
            }),
        }
    }
}
