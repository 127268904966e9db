//! Runs a fixed number of commands on the memory store from one thread,
//! for instruction counts that do not depend on the machine's load:
//!
//! ```sh
//! cargo build --release -p eventcore-benchmarks --bin memory_profile
//! valgrind --tool=callgrind target/release/memory_profile single 20000
//! ```
//!
//! The seeding is the same as the criterion benchmark's (10,000 streams of
//! 2 events); divide the instructions callgrind reports for `run` by the
//! command count for a per-command figure.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use eventcore::{CommandExecutor, ExecutionOptions};
use eventcore_benchmarks::workload::{Increment, StreamPool, Transfer};
use eventcore_memory::InMemoryEventStore;

const STREAMS: usize = 10_000;
const SEED_EVENTS: usize = 2;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "single".to_owned());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("no tokio runtime");
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run(&workload, count)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Seeds the store, then executes `count` commands of `workload`.
async fn run(workload: &str, count: usize) -> anyhow::Result<()> {
    let pool = StreamPool::new("profile", STREAMS)?;
    let store = InMemoryEventStore::new();
    pool.seed(&store, SEED_EVENTS).await?;
    let executor = CommandExecutor::new(store);
    let mut rng = fastrand::Rng::with_seed(7);
    let started = std::time::Instant::now();
    for n in 0..count {
        match workload {
            "single" => {
                let command = Increment {
                    stream: pool.streams()[n % STREAMS].clone(),
                    events: 1,
                    snapshot_every: None,
                };
                executor
                    .execute(&command, ExecutionOptions::default())
                    .await?;
            }
            "transfer" => {
                let mut streams = pool.pick(&mut rng, 2);
                let (Some(to), Some(from)) = (streams.pop(), streams.pop()) else {
                    anyhow::bail!("the pool has fewer than 2 streams");
                };
                let command = Transfer {
                    from,
                    to,
                    amount: 1,
                    snapshot_every: None,
                };
                executor
                    .execute(&command, ExecutionOptions::default())
                    .await?;
            }
            other => anyhow::bail!("unknown workload {other:?}: single or transfer"),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{count} {workload} commands in {:.3} s: {:.3} µs each",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count as f64
    );
    Ok(())
}
