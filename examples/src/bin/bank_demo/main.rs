//! The banking demo: opens accounts, runs random concurrent transfers (and
//! the odd freeze), prints throughput, latency and retry figures, and checks
//! that money was conserved and no balance went negative.
//!
//! Runs on the in-memory store, or on PostgreSQL when `DATABASE_URL` is set
//! (tables in `--schema`, created when missing; every run uses accounts of
//! its own, so runs can share a schema).
//!
//! With `--metrics-addr 127.0.0.1:9464` it serves EventCore's metrics in
//! Prometheus text format at `/metrics` while it runs (and for
//! `--metrics-linger` seconds after). On a terminal it shows progress bars;
//! piped, a progress line every second.
//!
//! ```text
//! cargo run --release -p eventcore-examples --bin bank-demo -- --help
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!     cargo run --release -p eventcore-examples --bin bank-demo
//! ```

mod progress;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use eventcore::{
    CheckpointStore, CommandExecutor, EventStore, ExecutionError, ExecutionOptions, Projection,
    ProjectionHandle, ProjectionOptions, ProjectionRunner, StreamId,
};
use eventcore_examples::balances::{MemoryBalances, PostgresBalances};
use eventcore_examples::banking::{
    self, Amount, BankError, Deposit, OpenAccount, SetFreeze, Transfer, audit_balances,
};
use eventcore_memory::{InMemoryCheckpointStore, InMemoryEventStore};
use eventcore_postgres::{PostgresConfig, PostgresEventStore};
use progress::Progress;

/// Random concurrent transfers between bank accounts, checked for conservation of money.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Accounts to open.
    #[arg(long, default_value_t = 100)]
    accounts: u32,
    /// Commands to run after the accounts are opened (transfers, plus a few freezes).
    #[arg(long, default_value_t = 20_000)]
    commands: u64,
    /// Concurrent tasks issuing commands.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Opening deposit of every account, in cents.
    #[arg(long, default_value_t = 100_000)]
    initial_cents: u64,
    /// Percentage of commands that freeze or unfreeze an account instead of transferring.
    #[arg(long, default_value_t = 2)]
    freeze_percent: u32,
    /// Seed for the random workload (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// PostgreSQL schema for EventCore's tables (used when DATABASE_URL is set).
    #[arg(long, default_value = "bank_demo")]
    schema: String,
    /// Serve the metrics in Prometheus text format at http://ADDR/metrics while running.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Keep serving the metrics this many seconds after the run (with --metrics-addr).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    metrics_linger: u64,
}

#[derive(Debug, Default)]
struct Stats {
    latencies_us: Vec<u64>,
    succeeded: u64,
    events_written: u64,
    retries: u64,
    rejections: BTreeMap<&'static str, u64>,
    failures: Vec<String>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.succeeded += other.succeeded;
        self.events_written += other.events_written;
        self.retries += other.retries;
        for (kind, n) in other.rejections {
            *self.rejections.entry(kind).or_default() += n;
        }
        self.failures.extend(other.failures);
    }

    fn record(
        &mut self,
        started: Instant,
        outcome: Result<eventcore::ExecutionResult, ExecutionError<BankError>>,
    ) {
        self.latencies_us
            .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        match outcome {
            Ok(result) => {
                self.succeeded += 1;
                self.events_written += result.events.len() as u64;
                self.retries += u64::from(result.attempts - 1);
            }
            Err(ExecutionError::Rejected(error)) => {
                *self.rejections.entry(rejection_kind(&error)).or_default() += 1;
            }
            Err(other) => self.failures.push(other.to_string()),
        }
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        let Some(last) = self.latencies_us.len().checked_sub(1) else {
            return 0.0;
        };
        let rank = ((last as f64) * p).round() as usize;
        self.latencies_us[rank.min(last)] as f64 / 1000.0
    }
}

fn rejection_kind(error: &BankError) -> &'static str {
    match error {
        BankError::AlreadyOpen(_) => "already open",
        BankError::NotOpen(_) => "not open",
        BankError::InsufficientFunds { .. } => "insufficient funds",
        BankError::SameAccount(_) => "same account",
        BankError::Frozen(_) => "frozen",
        BankError::BalanceOverflow(_) => "balance overflow",
        BankError::FreezeUnchanged { .. } => "freeze unchanged",
    }
}

/// Accounts are named per run, so runs never collide in a shared store.
fn account_id(run: &str, n: u32) -> anyhow::Result<StreamId> {
    Ok(StreamId::try_new(format!("run-{run}/account-{n:05}"))?)
}

async fn open_accounts<S: EventStore>(
    executor: &CommandExecutor<S>,
    accounts: &[StreamId],
    initial: Amount,
) -> anyhow::Result<()> {
    let progress = Progress::start(
        "opening accounts",
        "accounts",
        Some(accounts.len() as u64),
        String::new,
    );
    for account in accounts {
        let open = OpenAccount {
            account: account.clone(),
            owner: format!("owner of {account}"),
        };
        executor
            .execute(&open, ExecutionOptions::default())
            .await
            .with_context(|| format!("opening {account}"))?;
        let deposit = Deposit {
            account: account.clone(),
            amount: initial,
            reference: None,
        };
        executor
            .execute(&deposit, ExecutionOptions::default())
            .await
            .with_context(|| format!("funding {account}"))?;
        progress.inc();
    }
    progress.finish().await;
    Ok(())
}

async fn worker<S: EventStore>(
    executor: Arc<CommandExecutor<S>>,
    accounts: Arc<Vec<StreamId>>,
    next: Arc<AtomicU64>,
    args: Arc<Args>,
    seed: u64,
    progress: Progress,
    retries: Arc<AtomicU64>,
) -> anyhow::Result<Stats> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut stats = Stats::default();
    // Retries this worker has added to the shared count.
    let mut counted = 0;
    let count = accounts.len();
    while next.fetch_add(1, Ordering::Relaxed) < args.commands {
        let from = accounts[rng.usize(0..count)].clone();
        let started = Instant::now();
        if rng.u32(0..100) < args.freeze_percent {
            // Mostly unfreezes, so that about one account in ten is frozen at a time.
            let reason = (rng.u32(0..10) == 0).then(|| "suspicious activity".to_owned());
            let command = SetFreeze::new(from, reason)?;
            let outcome = executor
                .execute(&command, ExecutionOptions::default())
                .await;
            stats.record(started, outcome);
        } else {
            let to = accounts[rng.usize(0..count)].clone();
            let cents = rng.u64(1..=(args.initial_cents / 10).max(1));
            let command = Transfer::new(from, to, Amount::try_new(cents)?)?;
            let outcome = executor
                .execute(&command, ExecutionOptions::default())
                .await;
            stats.record(started, outcome);
        }
        retries.fetch_add(stats.retries - counted, Ordering::Relaxed);
        counted = stats.retries;
        progress.inc();
    }
    Ok(stats)
}

/// A balances read model the demo can check against the write side.
trait BalancesModel: Projection + Clone {
    async fn balances_of(&self, accounts: &[StreamId]) -> anyhow::Result<BTreeMap<StreamId, i128>>;
}

impl BalancesModel for MemoryBalances {
    async fn balances_of(&self, accounts: &[StreamId]) -> anyhow::Result<BTreeMap<StreamId, i128>> {
        let all = self.balances();
        Ok(accounts
            .iter()
            .filter_map(|a| all.get(a).map(|b| (a.clone(), *b)))
            .collect())
    }
}

impl BalancesModel for PostgresBalances {
    async fn balances_of(&self, accounts: &[StreamId]) -> anyhow::Result<BTreeMap<StreamId, i128>> {
        Ok(self.balances(accounts).await?)
    }
}

/// Prints the read model: a few accounts, and the totals.
fn print_read_model(balances: &BTreeMap<StreamId, i128>) {
    println!(
        "read model       {} accounts, {} cents in all",
        balances.len(),
        balances.values().sum::<i128>()
    );
    for (account, cents) in balances.iter().take(5) {
        println!("  {account:<40} {cents:>12}");
    }
    if balances.len() > 5 {
        println!("  ... and {} more", balances.len() - 5);
    }
}

/// Waits until the projection has applied everything in the store; returns how long that took.
async fn caught_up<S: EventStore, P>(
    handle: &ProjectionHandle<P>,
    store: &S,
    progress: Option<&Progress>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Some(progress) = progress {
            progress.set(handle.status().events_processed);
        }
        if handle.lag(store, None).await? == 0 {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "the projection did not catch up within 10 minutes: {:?}",
                handle.status()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run<S, K, M>(store: S, checkpoints: K, model: M, args: Args) -> anyhow::Result<bool>
where
    S: EventStore + Clone + 'static,
    K: CheckpointStore + Clone,
    M: BalancesModel,
{
    if args.accounts < 2 {
        bail!("--accounts must be at least 2");
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let initial =
        Amount::try_new(args.initial_cents).context("--initial-cents must be positive")?;
    let run_id = format!("{:016x}", fastrand::u64(..));
    let accounts: Vec<StreamId> = (0..args.accounts)
        .map(|n| account_id(&run_id, n))
        .collect::<Result<_, _>>()?;
    let executor = Arc::new(CommandExecutor::new(store.clone()));
    // The read model follows the workload live, from its saved checkpoint.
    let projection =
        ProjectionRunner::new(store.clone(), model.clone(), checkpoints.clone()).start();

    println!(
        "opening {} accounts with {} cents each (seed {seed}, run {run_id})",
        args.accounts, args.initial_cents
    );
    open_accounts(&executor, &accounts, initial).await?;
    let opening_events = 2 * accounts.len() as u64;

    println!(
        "running {} commands from {} concurrent tasks",
        args.commands, args.concurrency
    );
    let retries = Arc::new(AtomicU64::new(0));
    let lag_now = Arc::new(AtomicU64::new(0));
    let progress = {
        let (retries, lag_now) = (retries.clone(), lag_now.clone());
        Progress::start("workload", "commands", Some(args.commands), move || {
            format!(
                "{} retries, projection lag {} events",
                retries.load(Ordering::Relaxed),
                lag_now.load(Ordering::Relaxed)
            )
        })
    };
    let accounts = Arc::new(accounts);
    let next = Arc::new(AtomicU64::new(0));
    let args = Arc::new(args);
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency.max(1))
        .map(|task| {
            tokio::spawn(worker(
                executor.clone(),
                accounts.clone(),
                next.clone(),
                args.clone(),
                seed.wrapping_add(task as u64),
                progress.clone(),
                retries.clone(),
            ))
        })
        .collect();
    // How far the live projection trails the workload, sampled as it runs.
    let mut lag_samples = Vec::new();
    while !tasks.iter().all(|task| task.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let lag = projection.lag(&store, None).await?;
        lag_now.store(lag, Ordering::Relaxed);
        lag_samples.push(lag);
    }
    let mut stats = Stats::default();
    for task in tasks {
        stats.merge(task.await??);
    }
    let elapsed = started.elapsed();
    progress.finish().await;
    lag_samples.sort_unstable();

    let read = executor.store().read_streams(&accounts).await?;
    let balances = audit_balances(&read.events)?;
    let mut ok = report(&args, &mut stats, elapsed, &balances);

    println!();
    println!(
        "projection lag   during the workload ({} samples, every 250 ms): median {} events, max {}",
        lag_samples.len(),
        lag_samples.get(lag_samples.len() / 2).copied().unwrap_or(0),
        lag_samples.last().copied().unwrap_or(0)
    );
    let behind = projection.lag(&store, None).await?;
    let wait = caught_up(&projection, &store, None).await?;
    projection.stop().await?;
    let projected = model.balances_of(&accounts).await?;
    let live_ok = projected == balances;
    print_read_model(&projected);
    println!(
        "projection       {behind} events behind when the workload ended, caught up {:.0} ms later; \
         balances {}",
        wait.as_secs_f64() * 1000.0,
        if live_ok {
            "equal the write side"
        } else {
            "DIFFER from the write side"
        }
    );

    let rebuild = ProjectionRunner::new(store.clone(), model.clone(), checkpoints)
        .with_options(ProjectionOptions::default().checkpoint_every_events(10_000))
        .rebuild_from_zero()
        .start();
    let rebuilding = Progress::start("rebuild", "events", None, String::new);
    let took = caught_up(&rebuild, &store, Some(&rebuilding)).await?;
    let applied = rebuild.status().events_processed;
    rebuilding.set(applied);
    rebuilding.finish().await;
    rebuild.stop().await?;
    let this_run = opening_events + stats.events_written;
    let rebuilt_ok = model.balances_of(&accounts).await? == balances;
    println!(
        "rebuild          {applied} events in {:.2} s ({:.0} events/s): {this_run} written by \
         this run, {} by earlier runs; balances {}",
        took.as_secs_f64(),
        applied as f64 / took.as_secs_f64().max(1e-9),
        applied.saturating_sub(this_run),
        if rebuilt_ok {
            "equal the write side"
        } else {
            "DIFFER from the write side"
        }
    );
    ok &= live_ok && rebuilt_ok;
    println!(
        "{}",
        if ok {
            "CHECK OK: money conserved, no negative balance, read model equals the write side"
        } else {
            "CHECK FAILED"
        }
    );
    Ok(ok)
}

fn report(
    args: &Args,
    stats: &mut Stats,
    elapsed: Duration,
    balances: &BTreeMap<StreamId, i128>,
) -> bool {
    let commands = stats.latencies_us.len() as f64;
    let rejected: u64 = stats.rejections.values().sum();
    println!();
    println!("commands         {}", stats.latencies_us.len());
    println!("elapsed          {:.2} s", elapsed.as_secs_f64());
    println!("commands/s       {:.0}", commands / elapsed.as_secs_f64());
    println!("latency p50      {:.3} ms", stats.percentile_ms(0.50));
    println!("latency p99      {:.3} ms", stats.percentile_ms(0.99));
    println!("succeeded        {}", stats.succeeded);
    println!("conflict retries {}", stats.retries);
    println!("rejected         {rejected}");
    for (kind, n) in &stats.rejections {
        println!("  {kind:<16} {n}");
    }
    println!("failed           {}", stats.failures.len());
    for failure in stats.failures.iter().take(5) {
        println!("  {failure}");
    }

    let expected_total = i128::from(args.accounts) * i128::from(args.initial_cents);
    let total: i128 = balances.values().sum();
    let negative: Vec<_> = balances.iter().filter(|(_, b)| **b < 0).collect();
    println!();
    println!("total money      {total} cents (expected {expected_total})");
    println!("negative balances {}", negative.len());
    total == expected_total && negative.is_empty() && stats.failures.is_empty()
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let metrics = args.metrics_addr.map(|addr| (addr, args.metrics_linger));
    if let Some((addr, _)) = metrics {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
        println!("metrics: http://{addr}/metrics (Prometheus text format)");
    }
    let ok = if std::env::var_os("DATABASE_URL").is_some() {
        let config = PostgresConfig::from_env()?
            .schema(&args.schema)?
            .upcasters(banking::upcasters()?);
        println!("store: PostgreSQL, schema {} ({config:?})", args.schema);
        let store = PostgresEventStore::new(config).await?;
        store.initialize().await?;
        let model = PostgresBalances::create(&store).await?;
        let checkpoints = store.checkpoints();
        run(store, checkpoints, model, args).await?
    } else {
        println!("store: in-memory (set DATABASE_URL to run on PostgreSQL)");
        let store = InMemoryEventStore::new().with_upcasters(banking::upcasters()?);
        run(
            store,
            InMemoryCheckpointStore::new(),
            MemoryBalances::new(),
            args,
        )
        .await?
    };
    if let Some((addr, linger)) = metrics.filter(|(_, linger)| *linger > 0) {
        println!("metrics: still served on http://{addr}/metrics for {linger} s");
        tokio::time::sleep(Duration::from_secs(linger)).await;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
