//! PostgreSQL restarts in the middle of a banking workload whose clients
//! retry every failure with the command's idempotency key: every command
//! ends up written exactly once. On a throwaway cluster this test owns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use eventcore::{
    CommandExecutor, EventStore, ExecutionOptions, IdempotencyKey, ReadAllQuery, RetryPolicy,
    StreamId,
};
use eventcore_examples::banking::{Amount, BankEvent, Deposit, OpenAccount};
use eventcore_postgres::{PostgresConfig, PostgresEventStore, testing::ThrowawayCluster};

const TASKS: u64 = 4;
const COMMANDS_PER_TASK: u64 = 60;
const ACCOUNTS: u64 = 3;

fn account(n: u64) -> StreamId {
    StreamId::try_new(format!("restart-account-{n}")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_workload_loses_and_doubles_nothing() {
    let cluster = ThrowawayCluster::start()
        .await
        .expect("a throwaway cluster");
    let store = PostgresEventStore::new(
        PostgresConfig::new(cluster.url())
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    store.initialize().await.unwrap();
    let executor = Arc::new(
        CommandExecutor::new(store.clone())
            .with_retry_policy(RetryPolicy::default().with_max_attempts(3)),
    );
    for n in 0..ACCOUNTS {
        let open = OpenAccount {
            account: account(n),
            owner: "restart".into(),
        };
        executor
            .execute(&open, ExecutionOptions::default())
            .await
            .unwrap();
    }

    let acknowledged = Arc::new(AtomicU64::new(0));
    let client_retries = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (executor, acknowledged, client_retries) = (
            executor.clone(),
            acknowledged.clone(),
            client_retries.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..COMMANDS_PER_TASK {
                // Command n deposits n + 1 cents: every amount is unique.
                let n = task * COMMANDS_PER_TASK + i;
                let deposit = Deposit {
                    account: account(n % ACCOUNTS),
                    amount: Amount::try_new(n + 1).unwrap(),
                    reference: None,
                };
                let key = IdempotencyKey::try_new(format!("deposit-{n}")).unwrap();
                // The client retries whatever failed, with the same key.
                loop {
                    let options = ExecutionOptions::default().with_idempotency_key(key.clone());
                    match executor.execute(&deposit, options).await {
                        Ok(_) => break,
                        Err(_) => {
                            client_retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Restart once a third of the commands are acknowledged, while the rest run.
    while acknowledged.load(Ordering::Relaxed) < TASKS * COMMANDS_PER_TASK / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_server().await.unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("the workload finishes after the restart")
            .unwrap();
    }

    let mut amounts: BTreeMap<u64, u32> = BTreeMap::new();
    let mut query = ReadAllQuery::from_start();
    loop {
        let page = store.read_all(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query.after = last.position;
        for event in &page {
            if let BankEvent::MoneyDeposited { amount, .. } =
                event.decode::<BankEvent>().unwrap().payload
            {
                *amounts.entry(amount.cents()).or_default() += 1;
            }
        }
    }
    let total = TASKS * COMMANDS_PER_TASK;
    let doubled: Vec<_> = amounts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "commands written twice: {doubled:?}");
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        amounts.keys().copied().collect::<Vec<_>>(),
        expected,
        "every command once"
    );
    println!(
        "restart mid-workload: {total} commands acknowledged, {} client retries, 0 lost, 0 doubled",
        client_retries.load(Ordering::Relaxed)
    );
}
