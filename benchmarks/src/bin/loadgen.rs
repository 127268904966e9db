//! EventCore's load generator: runs named workloads for a fixed time from 1,
//! 4 and 16 tasks on the memory store or PostgreSQL, prints commands/s,
//! events/s, latency percentiles, conflicts, retries and serialization
//! failures, and on PostgreSQL runs the hand-written sqlx transfer baseline
//! interleaved with the executor's transfer runs and prints their ratio.
//!
//! ```sh
//! cargo run --release -p eventcore-benchmarks --bin loadgen -- --help
//! ```

use std::{fmt::Write as _, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;
use eventcore::CommandExecutor;
use eventcore_benchmarks::{
    counting::CountingStore,
    cpu,
    raw::run_raw_transfers,
    report::RunReport,
    run::{RunSpec, run_executor},
    workload::{Contention, StreamPool, Workload},
};
use eventcore_memory::InMemoryEventStore;
use eventcore_postgres::{PostgresConfig, PostgresEventStore};
use sqlx::postgres::PgPoolOptions;

/// The section `--write` replaces, per store: `<!-- loadgen:begin memory -->`.
fn marker(edge: &str, store: &str) -> String {
    format!("<!-- loadgen:{edge} {store} -->")
}

/// Runs EventCore workloads and prints what they achieved.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    /// The store: `memory`, or `postgres` (DATABASE_URL, else the server on
    /// 127.0.0.1:5432 as user postgres).
    #[arg(long, value_enum, default_value = "memory")]
    store: StoreKind,
    /// Workloads to run (all when omitted).
    #[arg(long, value_enum, value_delimiter = ',')]
    workload: Vec<Workload>,
    /// Contention levels to run (both when omitted).
    #[arg(long, value_enum, value_delimiter = ',')]
    contention: Vec<Contention>,
    /// Concurrent task counts to run.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    tasks: Vec<usize>,
    /// Seconds per timed run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds per configuration; on PostgreSQL the transfer workload
    /// alternates executor and raw-SQL runs round by round.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Skip the raw-SQL baseline.
    #[arg(long)]
    no_raw: bool,
    /// Events seeded into each stream of the `long` workload.
    #[arg(long, default_value_t = 1_000)]
    long_events: usize,
    /// Snapshot commands' state every this many folded events (0: no snapshots).
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Seed for the tasks' random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Replace the section between `<!-- loadgen:begin STORE -->` and
    /// `<!-- loadgen:end STORE -->` in this file with the results.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Keep the PostgreSQL schema the run created (dropped by default).
    #[arg(long)]
    keep_schema: bool,
    /// Exactly this many streams, whatever the contention level (at least
    /// as many as a command reads).
    #[arg(long, conflicts_with = "single_stream")]
    streams: Option<usize>,
    /// Each task on streams of its own (one stream per task for the
    /// single-stream workloads, one pair for transfers).
    #[arg(long, conflicts_with = "single_stream")]
    stream_per_task: bool,
    /// Every task on one shared stream (one pair for transfers).
    #[arg(long)]
    single_stream: bool,
    /// Streams start empty: nothing is seeded (and the raw baseline, which
    /// needs its stream rows, is skipped).
    #[arg(long)]
    empty_streams: bool,
    /// PostgreSQL: group commit on (concurrent appends on disjoint streams
    /// share transactions).
    #[arg(long)]
    group_commit: bool,
    /// With --group-commit: batches written at once.
    #[arg(long, default_value_t = eventcore_postgres::GroupCommit::new().batches_in_flight_limit())]
    batches_in_flight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Memory,
    Postgres,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Postgres => "postgres",
        }
    }
}

/// The store a run uses, with what PostgreSQL runs need beside it.
enum Target {
    Memory(Arc<CommandExecutor<CountingStore<InMemoryEventStore>>>),
    Postgres {
        executor: Arc<CommandExecutor<CountingStore<PostgresEventStore>>>,
        raw: sqlx::PgPool,
        schema: String,
        /// A connection of its own (not counted) for reading the backends' CPU.
        monitor: sqlx::PgPool,
        /// The `application_name` of the store's and the baseline's connections.
        app_name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tasks.is_empty() || args.tasks.contains(&0) {
        bail!("--tasks takes positive counts");
    }
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        bail!("--seconds must be a positive number");
    }
    // Two worker threads: this machine's cores, shared with PostgreSQL.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let workloads = if args.workload.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workload.clone()
    };
    let contentions = if args.contention.is_empty() {
        vec![Contention::Low, Contention::High]
    } else {
        args.contention.clone()
    };
    let max_tasks = args.tasks.iter().copied().max().unwrap_or(1);
    let run_id = format!("lg{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let mut target = connect(&args, &run_id, max_tasks).await?;

    let mut table = vec![RunReport::HEADER.to_owned()];
    let mut ratios = Vec::new();
    println!("{}", RunReport::HEADER);
    for &workload in &workloads {
        for &contention in &contentions {
            let per_command = workload.streams_per_command();
            let count = if args.single_stream {
                per_command
            } else if let Some(n) = args.streams {
                n.max(per_command)
            } else if args.stream_per_task {
                max_tasks * per_command
            } else {
                workload.stream_count(contention)
            };
            let pool = Arc::new(StreamPool::new(
                &format!("{run_id}-{workload}-{contention}"),
                count,
            )?);
            let seed_events = match workload {
                _ if args.empty_streams => 0,
                Workload::Long => args.long_events,
                _ => workload.seed_events(),
            };
            let mut seeded = false;
            for &tasks in &args.tasks {
                if let Target::Memory(_) = target {
                    // Every run on a fresh store: the memory store keeps all
                    // events, and the batch workload alone writes millions
                    // per run (a whole matrix did not fit in 24 GiB).
                    target = connect(&args, &run_id, max_tasks).await?;
                    seeded = false;
                }
                if !seeded && seed_events > 0 {
                    eprintln!(
                        "seeding {} streams x {} events for {workload}/{contention}",
                        pool.streams().len(),
                        seed_events
                    );
                    seed(&target, &pool, seed_events).await?;
                }
                seeded = true;
                let spec = RunSpec {
                    workload,
                    tasks,
                    duration: Duration::from_secs_f64(args.seconds),
                    seed: args.seed,
                    snapshot_every: (args.snapshot_every > 0).then_some(args.snapshot_every),
                    stream_per_task: args.stream_per_task,
                };
                let (executor, raw) = measure(&target, &pool, spec, &args).await;
                for report in std::iter::once(&executor).chain(raw.as_ref()) {
                    let row = report.row(&workload.to_string(), &contention.to_string(), tasks);
                    println!("{row}");
                    table.push(row);
                }
                if let Some(raw) = raw {
                    let ratio = ratio_line(workload, contention, tasks, &executor, &raw);
                    println!("{ratio}");
                    ratios.push(ratio);
                }
            }
        }
    }
    if let Some(path) = &args.write {
        write_section(path, &args, &target, &table, &ratios).await?;
    }
    if let Target::Postgres {
        executor, schema, ..
    } = &target
        && !args.keep_schema
    {
        // The run's own schema name, made by this program.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(executor.store().inner().pool())
        .await
        .context("dropping the run's schema")?;
    }
    Ok(())
}

async fn connect(args: &Args, run_id: &str, max_tasks: usize) -> anyhow::Result<Target> {
    if args.store == StoreKind::Memory {
        let store = CountingStore::new(InMemoryEventStore::new());
        return Ok(Target::Memory(Arc::new(CommandExecutor::new(store))));
    }
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let connections = u32::try_from(max_tasks)?.max(2);
    let schema = run_id.to_owned();
    // Named, so that the backends serving this run can be found for their CPU.
    let app_name = format!("loadgen-{run_id}");
    let named = |url: &str| {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}application_name={app_name}")
    };
    let monitor_url = std::env::var("DATABASE_SESSION_URL").unwrap_or_else(|_| url.clone());
    let monitor = PgPoolOptions::new()
        .max_connections(1)
        .connect(&monitor_url)
        .await
        .context("connecting the CPU monitor")?;
    let url = named(&url);
    // DATABASE_SESSION_URL: DATABASE_URL is a transaction pooler (PgBouncer)
    // and this reaches PostgreSQL directly; the raw baseline uses it.
    let session = std::env::var("DATABASE_SESSION_URL")
        .ok()
        .map(|u| named(&u));
    let mut config = PostgresConfig::new(url.clone())
        .max_connections(connections)
        .schema(&schema)?;
    if let Some(session) = &session {
        config = config.transaction_pooler(session.clone());
    }
    if args.group_commit {
        config = config.group_commit(
            eventcore_postgres::GroupCommit::new().batches_in_flight(args.batches_in_flight),
        );
    }
    let url = session.unwrap_or(url);
    let store = PostgresEventStore::new(config)
        .await
        .context("connecting to PostgreSQL (set DATABASE_URL)")?;
    store.initialize().await?;
    let raw = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url)
        .await
        .context("connecting the raw-SQL baseline's pool")?;
    Ok(Target::Postgres {
        executor: Arc::new(CommandExecutor::new(CountingStore::new(store))),
        raw,
        schema,
        monitor,
        app_name,
    })
}

async fn seed(target: &Target, pool: &StreamPool, events: usize) -> anyhow::Result<()> {
    match target {
        Target::Memory(executor) => pool.seed(executor.store(), events).await?,
        Target::Postgres { executor, .. } => pool.seed(executor.store(), events).await?,
    }
    Ok(())
}

/// The executor's figures, and the raw baseline's for PostgreSQL transfers,
/// measured round by round in alternation so both see the same data growth.
async fn measure(
    target: &Target,
    pool: &Arc<StreamPool>,
    spec: RunSpec,
    args: &Args,
) -> (RunReport, Option<RunReport>) {
    let mut executor_total: Option<RunReport> = None;
    let mut raw_total: Option<RunReport> = None;
    for round in 0..args.rounds.max(1) {
        let spec = RunSpec {
            seed: spec.seed.wrapping_add(u64::from(round) * 1_000),
            ..spec
        };
        let before = cpu_now(target).await;
        let mut executor_round = match target {
            Target::Memory(executor) => run_executor(executor.clone(), pool.clone(), spec).await,
            Target::Postgres { executor, .. } => {
                run_executor(executor.clone(), pool.clone(), spec).await
            }
        };
        cpu_since(target, &before, &mut executor_round).await;
        eprintln!(
            "  {} {} tasks round {round}: {executor_round}",
            spec.workload, spec.tasks
        );
        absorb(&mut executor_total, executor_round);
        if let Target::Postgres { raw, schema, .. } = target
            && spec.workload == Workload::Transfer
            && !args.no_raw
            && !args.empty_streams
        {
            let before = cpu_now(target).await;
            let mut raw_round = run_raw_transfers(raw.clone(), schema, pool.clone(), spec).await;
            cpu_since(target, &before, &mut raw_round).await;
            eprintln!(
                "  {} {} tasks round {round}: {raw_round}",
                spec.workload, spec.tasks
            );
            absorb(&mut raw_total, raw_round);
        }
    }
    let executor = executor_total.unwrap_or_else(|| unreachable_report("executor"));
    (executor, raw_total)
}

fn absorb(total: &mut Option<RunReport>, round: RunReport) {
    match total {
        Some(total) => total.absorb(&round),
        None => *total = Some(round),
    }
}

/// A report of no work, for a measurement that ran zero rounds.
fn unreachable_report(runner: &str) -> RunReport {
    RunReport {
        runner: runner.to_owned(),
        commands: 0,
        failed: 0,
        events: 0,
        retries: 0,
        elapsed: Duration::ZERO,
        latencies: Default::default(),
        store: Default::default(),
        round_trips: None,
        client_cpu: None,
        server_cpu: None,
    }
}

/// This process's CPU and its backends' so far.
async fn cpu_now(target: &Target) -> (Option<Duration>, Option<cpu::Backends>) {
    let client = cpu::process_cpu("self");
    let server = match target {
        Target::Memory(_) => None,
        Target::Postgres {
            monitor, app_name, ..
        } => cpu::Backends::sample(monitor, app_name).await.ok(),
    };
    (client, server)
}

/// Sets `report`'s CPU figures: what was spent since `before`.
async fn cpu_since(
    target: &Target,
    before: &(Option<Duration>, Option<cpu::Backends>),
    report: &mut RunReport,
) {
    let (client, server) = cpu_now(target).await;
    report.client_cpu = client
        .zip(before.0)
        .map(|(now, then)| now.saturating_sub(then));
    report.server_cpu = match (server, &before.1) {
        // Backends on another machine show no CPU here: no figure then.
        (Some(now), Some(then)) if !now.is_empty() => Some(now.since(then)),
        _ => None,
    };
}

fn ratio_line(
    workload: Workload,
    contention: Contention,
    tasks: usize,
    executor: &RunReport,
    raw: &RunReport,
) -> String {
    let raw_rate = raw.commands_per_second();
    let ratio = if raw_rate > 0.0 {
        executor.commands_per_second() / raw_rate
    } else {
        f64::INFINITY
    };
    format!(
        "- {workload}, {contention} contention, {tasks} tasks: executor/raw = {ratio:.2}x ({:.0} vs {:.0} cmds/s; p99 {:.1} vs {:.1} ms)",
        executor.commands_per_second(),
        raw_rate,
        executor.latencies.quantile(0.99).as_secs_f64() * 1000.0,
        raw.latencies.quantile(0.99).as_secs_f64() * 1000.0,
    )
}

/// Rewrites this store's section of `path` with the machine, the command and the figures.
async fn write_section(
    path: &PathBuf,
    args: &Args,
    target: &Target,
    table: &[String],
    ratios: &[String],
) -> anyhow::Result<()> {
    let begin = marker("begin", args.store.name());
    let end = marker("end", args.store.name());
    let mut section = String::new();
    writeln!(section, "{begin}")?;
    writeln!(
        section,
        "Measured {} on {}.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    )?;
    if let Target::Postgres { executor, .. } = target {
        writeln!(
            section,
            "{}\n",
            server_settings(executor.store().inner()).await?
        )?;
    }
    let command: Vec<String> = std::env::args().skip(1).collect();
    writeln!(
        section,
        "Command: `cargo run --release -p eventcore-benchmarks --bin loadgen -- {}`\n",
        command.join(" ")
    )?;
    for line in table {
        writeln!(section, "{line}")?;
    }
    if !ratios.is_empty() {
        writeln!(section)?;
        for line in ratios {
            writeln!(section, "{line}")?;
        }
    }
    write!(section, "{end}")?;

    let current = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(start), Some(stop)) if stop > start => format!(
            "{}{section}{}",
            &current[..start],
            &current[stop + end.len()..]
        ),
        _ => format!("{current}\n{section}\n"),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown memory".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1_048_576.0),
        );
    format!("{cores} cores (nproc), {memory}")
}

async fn server_settings(store: &PostgresEventStore) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for setting in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "shared_buffers",
        "max_connections",
        "default_transaction_isolation",
    ] {
        // Settings named in the list above.
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(store.pool())
            .await?;
        parts.push(format!("`{setting}={value}`"));
    }
    Ok(format!(
        "PostgreSQL on 127.0.0.1 (loopback): {}",
        parts.join(", ")
    ))
}
