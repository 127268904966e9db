//! Micro-benchmarks of the memory path, on one thread:
//! `cargo bench -p eventcore-benchmarks --bench memory`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
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

/// Executes the commands `next` makes, one per iteration.
fn bench_execute<C: CommandLogic>(
    c: &mut Criterion,
    name: &str,
    executor: &CommandExecutor<InMemoryEventStore>,
    mut next: impl FnMut() -> C,
) {
    let runtime = runtime();
    c.bench_function(name, |b| {
        b.to_async(&runtime).iter_batched(
            &mut next,
            |command| async {
                let command = command;
                executor
                    .execute(&command, ExecutionOptions::default())
                    .await
                    .unwrap()
            },
            BatchSize::SmallInput,
        );
    });
}

/// One command over one of 100,000 small streams, so the streams' length
/// barely grows with the number of iterations criterion picks.
fn execute_single_stream(c: &mut Criterion) {
    let (executor, _) = seeded(0, 1);
    let mut n = 0_u64;
    bench_execute(c, "execute single-stream command", &executor, || {
        n += 1;
        Increment {
            stream: StreamId::try_new(format!("single-{}", n % 100_000)).unwrap(),
            events: 1,
            snapshot_every: None,
        }
    });
}

fn execute_transfer(c: &mut Criterion) {
    let (executor, pool) = seeded(100_000, 1);
    let mut rng = fastrand::Rng::with_seed(1);
    bench_execute(c, "execute 2-stream transfer", &executor, || {
        let mut streams = pool.pick(&mut rng, 2);
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

criterion_group!(
    benches,
    execute_single_stream,
    execute_transfer,
    fold_thousand_events,
    declared_streams
);
criterion_main!(benches);
