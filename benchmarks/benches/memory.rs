//! Micro-benchmarks of the memory path, on one thread:
//! `cargo bench -p eventcore-benchmarks --bench memory`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use eventcore::{
    CommandExecutor, CommandLogic, CommandStreams, EventStore, ExecutionOptions, StreamId,
};
use eventcore_benchmarks::workload::{Increment, StreamPool, Transfer};
use eventcore_memory::InMemoryEventStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn seeded(streams: usize, events_each: usize) -> (CommandExecutor<InMemoryEventStore>, StreamPool) {
    let pool = StreamPool::new("bench", streams).unwrap();
    let store = InMemoryEventStore::new();
    runtime().block_on(pool.seed(&store, events_each)).unwrap();
    (CommandExecutor::new(store), pool)
}

/// Streams each sample's fresh store holds, and the events seeded in each:
/// a sample of `n` commands leaves them about `2 + n / 10,000` events long,
/// so every command reads a small stream, whatever `n` criterion picks.
const SAMPLE_STREAMS: usize = 10_000;
const SAMPLE_SEED_EVENTS: usize = 2;

/// Times `iters` commands made by `next` on a freshly seeded store (the
/// seeding and the commands' construction are not timed).
fn bench_execute<C: CommandLogic>(
    c: &mut Criterion,
    name: &str,
    mut next: impl FnMut(&StreamPool, &mut fastrand::Rng) -> C,
) {
    let runtime = runtime();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let (executor, pool) = seeded(SAMPLE_STREAMS, SAMPLE_SEED_EVENTS);
            let mut rng = fastrand::Rng::with_seed(iters);
            let commands: Vec<C> = (0..iters).map(|_| next(&pool, &mut rng)).collect();
            runtime.block_on(async {
                let started = Instant::now();
                for command in &commands {
                    black_box(
                        executor
                            .execute(command, ExecutionOptions::default())
                            .await
                            .unwrap(),
                    );
                }
                started.elapsed()
            })
        });
    });
}

/// A command that reads one small stream and appends one event.
fn execute_single_stream(c: &mut Criterion) {
    let mut n = 0_usize;
    bench_execute(c, "execute single-stream command", |pool, _| {
        n += 1;
        Increment {
            stream: pool.streams()[n % pool.streams().len()].clone(),
            events: 1,
            snapshot_every: None,
        }
    });
}

/// The same command with a Prometheus recorder installed (for this thread):
/// what recording EventCore's metrics costs per command.
fn execute_single_stream_recorded(c: &mut Criterion) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut n = 0_usize;
    bench_execute(
        c,
        "execute single-stream command, Prometheus recorder",
        |pool, _| {
            n += 1;
            Increment {
                stream: pool.streams()[n % pool.streams().len()].clone(),
                events: 1,
                snapshot_every: None,
            }
        },
    );
}

/// A transfer between two small streams picked at random.
fn execute_transfer(c: &mut Criterion) {
    bench_execute(c, "execute 2-stream transfer", |pool, rng| {
        let mut streams = pool.pick(rng, 2);
        Transfer {
            to: streams.remove(1),
            from: streams.remove(0),
            amount: 5,
            snapshot_every: None,
        }
    });
}

fn fold_thousand_events(c: &mut Criterion) {
    let runtime = runtime();
    let (executor, pool) = seeded(1, 1_000);
    let command = Increment {
        stream: pool.streams()[0].clone(),
        events: 1,
        snapshot_every: None,
    };
    let read = runtime
        .block_on(executor.store().read_streams(pool.streams()))
        .unwrap();
    c.bench_function("decode and fold 1,000 events", |b| {
        b.iter(|| {
            let mut state = <Increment as CommandLogic>::State::default();
            for event in &read.events {
                let event = event
                    .decode::<eventcore_benchmarks::workload::LoadEvent>()
                    .unwrap();
                command.apply(&mut state, &event);
            }
            black_box(state)
        });
    });
}

fn declared_streams(c: &mut Criterion) {
    let transfer = Transfer {
        from: StreamId::try_new("account-1").unwrap(),
        to: StreamId::try_new("account-2").unwrap(),
        amount: 1,
        snapshot_every: None,
    };
    c.bench_function("derived stream declaration (2 streams)", |b| {
        b.iter(|| black_box(black_box(&transfer).declared_streams()));
    });
}

// The recorded run goes last: what its recorder leaves on the heap must not
// weigh on the others.
criterion_group!(
    benches,
    execute_single_stream,
    execute_transfer,
    fold_thousand_events,
    declared_streams,
    execute_single_stream_recorded
);
criterion_main!(benches);
