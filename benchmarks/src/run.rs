//! Drives a workload from N concurrent tasks for a fixed time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use eventcore::{CommandExecutor, EventStore, ExecutionError, ExecutionOptions, ExecutionResult};
use tokio::sync::Barrier;

use crate::{
    counting::CountingStore,
    report::{Latencies, RunReport},
    workload::{NextCommand, StreamPool, Workload},
};

/// One timed run: which workload, how many tasks, for how long.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// The workload.
    pub workload: Workload,
    /// Concurrent tasks, each running one command after another.
    pub tasks: usize,
    /// How long the tasks keep starting commands.
    pub duration: Duration,
    /// Seeds the tasks' random choices (task `n` uses `seed + n`).
    pub seed: u64,
    /// Snapshot every this many folded events; `None` folds every event.
    pub snapshot_every: Option<u64>,
    /// Each task on streams of its own (task `n` takes the `n`-th group of
    /// as many streams as a command reads) instead of picking at random.
    pub stream_per_task: bool,
}

/// What one task measured.
#[derive(Debug, Default)]
pub(crate) struct TaskTally {
    pub(crate) commands: u64,
    pub(crate) failed: u64,
    pub(crate) events: u64,
    pub(crate) retries: u64,
    pub(crate) latencies: Latencies,
}

impl TaskTally {
    pub(crate) fn into_report(
        tallies: Vec<Self>,
        runner: &str,
        elapsed: Duration,
        store: crate::counting::StoreCounts,
    ) -> RunReport {
        let mut report = RunReport {
            runner: runner.to_owned(),
            commands: 0,
            failed: 0,
            events: 0,
            retries: 0,
            elapsed,
            latencies: Latencies::default(),
            store,
            round_trips: None,
            client_cpu: None,
            server_cpu: None,
        };
        for tally in tallies {
            report.commands += tally.commands;
            report.failed += tally.failed;
            report.events += tally.events;
            report.retries += tally.retries;
            report.latencies.merge(&tally.latencies);
        }
        report
    }
}

/// Runs `spec` through `executor` on `pool`'s streams and reports what happened.
///
/// Round trips per command are the store calls per command (reads, appends,
/// snapshot loads and saves): one statement each on PostgreSQL when the
/// streams already exist, as the workloads' seeded streams do.
pub async fn run_executor<S>(
    executor: Arc<CommandExecutor<CountingStore<S>>>,
    pool: Arc<StreamPool>,
    spec: RunSpec,
) -> RunReport
where
    S: EventStore + 'static,
{
    let start = Arc::new(Barrier::new(spec.tasks + 1));
    let mut handles = Vec::with_capacity(spec.tasks);
    for task in 0..spec.tasks {
        let executor = executor.clone();
        let pool = pool.clone();
        let start = start.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(spec.seed.wrapping_add(task as u64));
            let mut tally = TaskTally::default();
            start.wait().await;
            let deadline = Instant::now() + spec.duration;
            while Instant::now() < deadline {
                let command = if spec.stream_per_task {
                    NextCommand::for_task(spec.workload, &pool, task, spec.snapshot_every)
                } else {
                    NextCommand::pick(spec.workload, &pool, &mut rng, spec.snapshot_every)
                };
                let began = Instant::now();
                match execute(&executor, &command).await {
                    Ok(result) => {
                        tally.latencies.record(began.elapsed());
                        tally.commands += 1;
                        tally.events += result.events.len() as u64;
                        tally.retries += u64::from(result.attempts.saturating_sub(1));
                    }
                    Err(error) => {
                        tally.failed += 1;
                        if tally.failed <= 3 {
                            eprintln!("command failed: {error}");
                        }
                    }
                }
            }
            tally
        }));
    }
    executor.store().take();
    start.wait().await;
    let began = Instant::now();
    let tallies = join_all(handles).await;
    let elapsed = began.elapsed();
    let counts = executor.store().take();
    let mut report = TaskTally::into_report(tallies, "executor", elapsed, counts);
    if report.commands > 0 {
        report.round_trips = Some(
            (counts.reads + counts.appends + counts.snapshot_calls) as f64 / report.commands as f64,
        );
    }
    report
}

/// Waits for every task; a task that panicked counts as no work done.
pub(crate) async fn join_all(handles: Vec<tokio::task::JoinHandle<TaskTally>>) -> Vec<TaskTally> {
    let mut tallies = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(tally) => tallies.push(tally),
            Err(error) => eprintln!("a load task died: {error}"),
        }
    }
    tallies
}

async fn execute<S: EventStore>(
    executor: &CommandExecutor<S>,
    command: &NextCommand,
) -> Result<ExecutionResult, String> {
    let options = ExecutionOptions::default();
    match command {
        NextCommand::Increment(c) => executor.execute(c, options).await.map_err(describe),
        NextCommand::Transfer(c) => executor.execute(c, options).await.map_err(describe),
        NextCommand::Five(c) => executor.execute(c, options).await.map_err(describe),
    }
}

fn describe<E: std::error::Error>(error: ExecutionError<E>) -> String {
    error.to_string()
}
