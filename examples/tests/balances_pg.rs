//! The balances read model on PostgreSQL: equal to the write side after a
//! concurrent workload, and exactly once across a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use eventcore::{
    Checkpoint, CheckpointStore, CommandExecutor, ExecutionOptions, Projection, ProjectionHandle,
    ProjectionOptions, ProjectionRunner, RecordedEvent, StreamId,
};
use eventcore_examples::{
    balances::{PROJECTION_NAME, PostgresBalances},
    banking::{Amount, Deposit, OpenAccount, Transfer, audit_balances},
};
use eventcore_postgres::{PostgresEventStore, testing};
use support::everything;

const ACCOUNTS: u32 = 8;

fn accounts() -> Vec<StreamId> {
    (0..ACCOUNTS)
        .map(|n| StreamId::try_new(format!("acct-{n}")).unwrap())
        .collect()
}

async fn open_and_fund(executor: &CommandExecutor<PostgresEventStore>) {
    for account in accounts() {
        let open = OpenAccount {
            account: account.clone(),
            owner: "tester".into(),
        };
        executor
            .execute(&open, ExecutionOptions::default())
            .await
            .unwrap();
        let deposit = Deposit {
            account,
            amount: Amount::try_new(10_000).unwrap(),
            reference: None,
        };
        executor
            .execute(&deposit, ExecutionOptions::default())
            .await
            .unwrap();
    }
}

/// `tasks` tasks, `each` random transfers each; business refusals are fine.
async fn transfers(executor: Arc<CommandExecutor<PostgresEventStore>>, tasks: u64, each: u32) {
    let accounts = Arc::new(accounts());
    let mut handles = Vec::new();
    for task in 0..tasks {
        let executor = executor.clone();
        let accounts = accounts.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(task);
            for _ in 0..each {
                let from = accounts[rng.usize(..accounts.len())].clone();
                let to = accounts[rng.usize(..accounts.len())].clone();
                if from == to {
                    continue;
                }
                let amount = Amount::try_new(rng.u64(1..3_000)).unwrap();
                let transfer = Transfer::new(from, to, amount).unwrap();
                match executor
                    .execute(&transfer, ExecutionOptions::default())
                    .await
                {
                    Ok(_) | Err(eventcore::ExecutionError::Rejected(_)) => {}
                    Err(other) => panic!("transfer failed: {other}"),
                }
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

async fn caught_up<P>(handle: &ProjectionHandle<P>, store: &PostgresEventStore) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while handle.lag(store, None).await.unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the projection catches up");
}

/// Hangs forever on the event after the first `stop_at`: a runner killed
/// there has exactly `stop_at` events in hand, whatever the timing.
struct Gate<P> {
    inner: P,
    stop_at: u64,
    applied: u64,
}

impl<P: Projection> Projection for Gate<P> {
    type Error = P::Error;

    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), P::Error> {
        if self.applied == self.stop_at {
            std::future::pending::<()>().await;
        }
        self.applied += 1;
        self.inner.apply(event).await
    }

    async fn reset(&mut self) -> Result<(), P::Error> {
        self.inner.reset().await
    }

    async fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<bool, P::Error> {
        self.inner.save_checkpoint(checkpoint).await
    }
}

fn write_side(events: &[RecordedEvent]) -> BTreeMap<StreamId, i128> {
    let accounts = accounts();
    audit_balances(events.iter().filter(|e| accounts.contains(&e.stream_id))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_concurrent_workload_the_read_model_equals_the_write_side() {
    let store = testing::fresh_store().await.unwrap();
    let model = PostgresBalances::create(&store).await.unwrap();
    let runner = ProjectionRunner::new(store.clone(), model.clone(), store.checkpoints())
        .with_options(ProjectionOptions::default().checkpoint_every_events(25))
        .start();
    let executor = Arc::new(CommandExecutor::new(store.clone()));
    open_and_fund(&executor).await;
    transfers(executor, 4, 40).await;
    caught_up(&runner, &store).await;
    runner.stop().await.unwrap();

    let expected = write_side(&everything(&store).await);
    assert_eq!(model.balances(&accounts()).await.unwrap(), expected);
    assert_eq!(
        expected.values().sum::<i128>(),
        i128::from(ACCOUNTS) * 10_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_the_batch_and_its_checkpoint_together() {
    let store = testing::fresh_store().await.unwrap();
    let executor = Arc::new(CommandExecutor::new(store.clone()));
    open_and_fund(&executor).await;
    transfers(executor, 2, 60).await;
    let events = everything(&store).await;
    assert!(events.len() > 120, "enough events to crash mid-batch");

    let model = PostgresBalances::create(&store).await.unwrap();
    let options = ProjectionOptions::default()
        .checkpoint_every_events(50)
        .checkpoint_interval(Duration::from_secs(3600));
    let gated = Gate {
        inner: model.clone(),
        stop_at: 120,
        applied: 0,
    };
    let runner = ProjectionRunner::new(store.clone(), gated, store.checkpoints())
        .with_options(options.clone())
        .start();
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.wait_for(|s| s.events_processed >= 120),
    )
    .await
    .unwrap()
    .unwrap();
    runner.abort();
    // What was committed: exactly the events up to the saved checkpoint, once.
    let saved = store
        .checkpoints()
        .load(PROJECTION_NAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.events_processed, 100);
    let covered: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| e.position <= saved.position)
        .cloned()
        .collect();
    assert_eq!(covered.len(), 100);
    assert_eq!(
        model.balances(&accounts()).await.unwrap(),
        write_side(&covered)
    );

    let runner = ProjectionRunner::new(store.clone(), model.clone(), store.checkpoints())
        .with_options(options)
        .start();
    caught_up(&runner, &store).await;
    let status = runner.status();
    runner.stop().await.unwrap();
    assert_eq!(
        status.events_processed,
        events.len() as u64,
        "each event counted once"
    );
    assert_eq!(
        model.balances(&accounts()).await.unwrap(),
        write_side(&events)
    );
}

const CHILD_SCHEMA: &str = "BALANCES_KILL_CHILD_SCHEMA";

/// Runs the projection in a child process (this same test, in its child
/// role), kills it with SIGKILL mid-batch, and checks that the read model
/// holds exactly what its checkpoint covers; a restart then completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_killed_with_sigkill_loses_nothing_and_doubles_nothing() {
    if let Ok(schema) = std::env::var(CHILD_SCHEMA) {
        return run_as_killed_child(&schema).await;
    }
    let store = testing::fresh_store().await.unwrap();
    let executor = Arc::new(CommandExecutor::new(store.clone()));
    open_and_fund(&executor).await;
    transfers(executor, 2, 60).await;
    let events = everything(&store).await;
    assert!(events.len() > 120);

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_projection_killed_with_sigkill_loses_nothing_and_doubles_nothing",
            "--nocapture",
        ])
        .env(CHILD_SCHEMA, store.schema().as_str())
        .env("DATABASE_URL", testing::test_database_url().await.unwrap())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "READY" {
                return;
            }
        }
        panic!("the child ended without getting ready");
    })
    .await
    .expect("the child gets ready");
    child.kill().await.unwrap(); // SIGKILL

    let model = PostgresBalances::create(&store).await.unwrap();
    let saved = store
        .checkpoints()
        .load(PROJECTION_NAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.events_processed, 100);
    let covered: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| e.position <= saved.position)
        .cloned()
        .collect();
    assert_eq!(
        model.balances(&accounts()).await.unwrap(),
        write_side(&covered)
    );

    let runner = ProjectionRunner::new(store.clone(), model.clone(), store.checkpoints()).start();
    caught_up(&runner, &store).await;
    runner.stop().await.unwrap();
    assert_eq!(
        model.balances(&accounts()).await.unwrap(),
        write_side(&events)
    );
}

/// The child's role: apply 120 events (checkpoints at 50 and 100), say
/// READY, and hang with 20 events in hand until killed.
async fn run_as_killed_child(schema: &str) {
    let config =
        eventcore_postgres::PostgresConfig::new(testing::test_database_url().await.unwrap())
            .schema(schema)
            .unwrap();
    let store = PostgresEventStore::new(config).await.unwrap();
    let model = PostgresBalances::create(&store).await.unwrap();
    let gated = Gate {
        inner: model,
        stop_at: 120,
        applied: 0,
    };
    let runner = ProjectionRunner::new(store.clone(), gated, store.checkpoints())
        .with_options(
            ProjectionOptions::default()
                .checkpoint_every_events(50)
                .checkpoint_interval(Duration::from_secs(3600)),
        )
        .start();
    runner
        .wait_for(|s| s.events_processed >= 120)
        .await
        .unwrap();
    println!("READY");
    std::future::pending::<()>().await;
}
