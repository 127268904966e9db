//! Eight OS processes run random transfers over 20 shared accounts on one
//! PostgreSQL database; in the second test some of them are killed with
//! SIGKILL mid-run. Afterwards: money conserved, no negative balance,
//! versions contiguous, every acknowledged transfer present exactly once,
//! and no transfer half-written.
//!
//! Each process is this test binary again, in its child role. Commands per
//! process: 150, or 2,000 with `EVENTCORE_LONG_TESTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Stdio,
    time::Duration,
};

use eventcore::{CommandExecutor, ExecutionError, ExecutionOptions, RecordedEvent, StreamId};
use eventcore_examples::banking::{
    Amount, BankEvent, Deposit, OpenAccount, Transfer, audit_balances,
};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing};
use support::everything;
use tokio::io::{AsyncBufReadExt, BufReader};

const PROCESSES: u64 = 8;
const ACCOUNTS: u64 = 20;
const OPENING_CENTS: u64 = 10_000;
const CHILD_SCHEMA: &str = "MULTIPROCESS_CHILD_SCHEMA";
const CHILD_INDEX: &str = "MULTIPROCESS_CHILD_INDEX";
const CHILD_COMMANDS: &str = "MULTIPROCESS_CHILD_COMMANDS";
/// For the children of the PgBouncer test: the pooler's and the session URL.
const CHILD_POOLER: &str = "MULTIPROCESS_CHILD_POOLER";
const CHILD_SESSION: &str = "MULTIPROCESS_CHILD_SESSION";

fn commands_per_process() -> u64 {
    if std::env::var("EVENTCORE_LONG_TESTS").is_ok_and(|v| v == "1") {
        2_000
    } else {
        150
    }
}

fn account(n: u64) -> StreamId {
    StreamId::try_new(format!("mp-account-{n:02}")).unwrap()
}

/// The child role: random transfers; prints `ack <correlation id>` for each
/// one that succeeded and `progress <n>` as it goes.
async fn child(schema: &str, index: u64, commands: u64) {
    // One command at a time: one connection to read, one to write. Sixteen
    // processes (two tests at once) stay far below the server's limit.
    let config = match (std::env::var(CHILD_POOLER), std::env::var(CHILD_SESSION)) {
        (Ok(pooler), Ok(session)) => PostgresConfig::new(pooler).transaction_pooler(session),
        _ => PostgresConfig::new(testing::test_database_url().await.unwrap()),
    }
    .max_connections(1)
    .schema(schema)
    .unwrap();
    let store = PostgresEventStore::new(config).await.unwrap();
    let executor = CommandExecutor::new(store);
    let mut rng = fastrand::Rng::with_seed(index);
    for n in 1..=commands {
        let from = rng.u64(..ACCOUNTS);
        let to = (from + rng.u64(1..ACCOUNTS)) % ACCOUNTS;
        let amount = Amount::try_new(rng.u64(1..=2_000)).unwrap();
        let transfer = Transfer::new(account(from), account(to), amount).unwrap();
        match executor
            .execute(&transfer, ExecutionOptions::default())
            .await
        {
            Ok(result) => println!("ack {}", result.correlation_id),
            Err(ExecutionError::Rejected(_) | ExecutionError::RetriesExhausted { .. }) => {}
            Err(other) => panic!("transfer failed: {other}"),
        }
        if n % 10 == 0 {
            println!("progress {n}");
        }
    }
    println!("finished");
}

struct Outcome {
    acknowledged: BTreeSet<String>,
    killed: usize,
}

/// Runs the child processes; kills those in `to_kill` once they report
/// `kill_after` commands done.
async fn run_children(
    store: &PostgresEventStore,
    test_name: &str,
    to_kill: &[u64],
    kill_after: u64,
) -> Outcome {
    run_children_with(store, test_name, to_kill, kill_after, &[]).await
}

/// [`run_children`], with more environment for the children.
async fn run_children_with(
    store: &PostgresEventStore,
    test_name: &str,
    to_kill: &[u64],
    kill_after: u64,
    env: &[(&str, String)],
) -> Outcome {
    let url = testing::test_database_url().await.unwrap();
    let commands = commands_per_process();
    let mut handles = Vec::new();
    for index in 0..PROCESSES {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test_name, "--nocapture"])
            .env(CHILD_SCHEMA, store.schema().as_str())
            .env(CHILD_INDEX, index.to_string())
            .env(CHILD_COMMANDS, commands.to_string())
            .env("DATABASE_URL", &url)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let kill = to_kill.contains(&index);
        handles.push(tokio::spawn(async move {
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut acknowledged = Vec::new();
            let mut finished = false;
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(id) = line.strip_prefix("ack ") {
                    acknowledged.push(id.to_owned());
                } else if let Some(n) = line.strip_prefix("progress ") {
                    if kill && n.parse::<u64>().unwrap() >= kill_after {
                        child.kill().await.unwrap(); // SIGKILL
                        return (acknowledged, true);
                    }
                } else if line == "finished" {
                    finished = true;
                }
            }
            let status = child.wait().await.unwrap();
            assert!(
                status.success() && finished,
                "child {index} failed: {status}"
            );
            (acknowledged, false)
        }));
    }
    let mut outcome = Outcome {
        acknowledged: BTreeSet::new(),
        killed: 0,
    };
    for handle in handles {
        // Commands replay whole account streams (no snapshots yet), so a run
        // slows as they grow: allow a generous, size-scaled time.
        let limit = Duration::from_secs(120 + 3 * commands_per_process());
        let (acks, killed) = tokio::time::timeout(limit, handle)
            .await
            .expect("the child processes finish")
            .unwrap();
        outcome.acknowledged.extend(acks);
        outcome.killed += usize::from(killed);
    }
    outcome
}

async fn open_accounts(store: &PostgresEventStore) {
    let executor = CommandExecutor::new(store.clone());
    for n in 0..ACCOUNTS {
        let open = OpenAccount {
            account: account(n),
            owner: format!("owner {n}"),
        };
        executor
            .execute(&open, ExecutionOptions::default())
            .await
            .unwrap();
        let deposit = Deposit {
            account: account(n),
            amount: Amount::try_new(OPENING_CENTS).unwrap(),
            reference: None,
        };
        executor
            .execute(&deposit, ExecutionOptions::default())
            .await
            .unwrap();
    }
}

/// Checks every invariant; returns the number of transfers written.
fn check_invariants(events: &[RecordedEvent], acknowledged: &BTreeSet<String>) -> usize {
    // Versions contiguous per stream, in global order.
    let mut versions: BTreeMap<&StreamId, u64> = BTreeMap::new();
    for event in events {
        let last = versions.entry(&event.stream_id).or_default();
        assert_eq!(
            event.version.value(),
            *last + 1,
            "gap or repeat in {}",
            event.stream_id
        );
        *last += 1;
    }
    // Money conserved, no negative balance.
    let accounts: Vec<StreamId> = (0..ACCOUNTS).map(account).collect();
    let balances =
        audit_balances(events.iter().filter(|e| accounts.contains(&e.stream_id))).unwrap();
    assert_eq!(
        balances.values().sum::<i128>(),
        i128::from(ACCOUNTS * OPENING_CENTS)
    );
    assert!(
        balances.values().all(|b| *b >= 0),
        "a negative balance: {balances:?}"
    );
    // Every transfer whole: its execution wrote one TransferSent and one TransferReceived.
    let mut by_execution: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for event in events {
        let kind = match event.decode::<BankEvent>().unwrap().payload {
            BankEvent::TransferSent { .. } => "sent",
            BankEvent::TransferReceived { .. } => "received",
            _ => continue,
        };
        let id = event
            .metadata
            .correlation_id
            .expect("a correlation id")
            .to_string();
        by_execution.entry(id).or_default().push(kind);
    }
    for (id, kinds) in &by_execution {
        let mut kinds = kinds.clone();
        kinds.sort_unstable();
        assert_eq!(kinds, ["received", "sent"], "transfer {id} is not whole");
    }
    // Every acknowledged transfer is there (exactly once, by the check above).
    for id in acknowledged {
        assert!(
            by_execution.contains_key(id),
            "acknowledged transfer {id} is missing"
        );
    }
    by_execution.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_share_twenty_accounts() {
    if let (Ok(schema), Ok(index)) = (std::env::var(CHILD_SCHEMA), std::env::var(CHILD_INDEX)) {
        let commands = std::env::var(CHILD_COMMANDS).unwrap().parse().unwrap();
        return child(&schema, index.parse().unwrap(), commands).await;
    }
    let store = testing::fresh_store().await.unwrap();
    open_accounts(&store).await;
    let outcome = run_children(&store, "eight_processes_share_twenty_accounts", &[], 0).await;
    let events = everything(&store).await;
    let transfers = check_invariants(&events, &outcome.acknowledged);
    assert_eq!(
        transfers,
        outcome.acknowledged.len(),
        "only acknowledged transfers are written"
    );
    println!(
        "{PROCESSES} processes x {} commands: {} transfers acknowledged and present once, 0 violations",
        commands_per_process(),
        outcome.acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_run_leave_nothing_half_written() {
    if let (Ok(schema), Ok(index)) = (std::env::var(CHILD_SCHEMA), std::env::var(CHILD_INDEX)) {
        let commands = std::env::var(CHILD_COMMANDS).unwrap().parse().unwrap();
        return child(&schema, index.parse().unwrap(), commands).await;
    }
    let store = testing::fresh_store().await.unwrap();
    open_accounts(&store).await;
    let victims = [1, 4, 6];
    let outcome = run_children(
        &store,
        "writers_killed_mid_run_leave_nothing_half_written",
        &victims,
        commands_per_process() / 3,
    )
    .await;
    assert_eq!(outcome.killed, victims.len());
    let events = everything(&store).await;
    let transfers = check_invariants(&events, &outcome.acknowledged);
    // A killed process may have committed a transfer it never acknowledged.
    assert!(transfers >= outcome.acknowledged.len());
    println!(
        "{} of {PROCESSES} processes killed with SIGKILL: {} transfers written, {} acknowledged, 0 half-written",
        outcome.killed,
        transfers,
        outcome.acknowledged.len()
    );
}

/// The same eight processes with every append and read through PgBouncer
/// in transaction mode (sessions direct): money conserved, every
/// acknowledged transfer present once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_share_twenty_accounts_through_pgbouncer() {
    if let (Ok(schema), Ok(index)) = (std::env::var(CHILD_SCHEMA), std::env::var(CHILD_INDEX)) {
        let commands = std::env::var(CHILD_COMMANDS).unwrap().parse().unwrap();
        return child(&schema, index.parse().unwrap(), commands).await;
    }
    let cluster = testing::ThrowawayCluster::start().await.unwrap();
    let bouncer = testing::PgBouncer::start(&cluster, 4).await.unwrap();
    let config = PostgresConfig::new(bouncer.url())
        .transaction_pooler(cluster.url())
        .schema("bank_through_pgbouncer")
        .unwrap();
    let store = PostgresEventStore::new(config).await.unwrap();
    store.initialize().await.unwrap();
    open_accounts(&store).await;
    let outcome = run_children_with(
        &store,
        "eight_processes_share_twenty_accounts_through_pgbouncer",
        &[],
        0,
        &[
            (CHILD_POOLER, bouncer.url()),
            (CHILD_SESSION, cluster.url()),
        ],
    )
    .await;
    let events = everything(&store).await;
    let transfers = check_invariants(&events, &outcome.acknowledged);
    assert_eq!(transfers, outcome.acknowledged.len());
    println!(
        "through PgBouncer (transaction mode, 4 server connections): {PROCESSES} processes x {} \
         commands: {} transfers acknowledged and present once, money conserved",
        commands_per_process(),
        outcome.acknowledged.len()
    );
}
