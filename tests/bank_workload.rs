//! Property test: random banking workloads executed concurrently through the
//! executor on the memory store. Afterwards money is conserved, no balance is
//! negative, every successful command's events are stored exactly once, and
//! nothing else is stored: failed commands wrote nothing.

use std::{collections::HashMap, num::NonZeroUsize, sync::Arc};

use eventcore::{
    CommandExecutor, EventId, EventStore, ExecutionError, ExecutionOptions, ReadAllQuery,
    RetryPolicy, StreamId,
};
use eventcore_examples::banking::{
    Amount, BankError, Deposit, OpenAccount, SetFreeze, Transfer, Withdraw, audit_balances,
};
use eventcore_memory::InMemoryEventStore;
use proptest::prelude::*;

const INITIAL: u64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    Transfer { from: usize, to: usize, cents: u64 },
    Deposit { account: usize, cents: u64 },
    Withdraw { account: usize, cents: u64 },
    Freeze { account: usize, on: bool },
}

fn op_strategy(accounts: usize) -> impl Strategy<Value = Op> {
    let account = 0..accounts;
    let cents = 1_u64..600;
    prop_oneof![
        6 => (account.clone(), account.clone(), cents.clone())
            .prop_map(|(from, to, cents)| Op::Transfer { from, to, cents }),
        1 => (account.clone(), cents.clone()).prop_map(|(account, cents)| Op::Deposit { account, cents }),
        1 => (account.clone(), cents).prop_map(|(account, cents)| Op::Withdraw { account, cents }),
        1 => (account, any::<bool>()).prop_map(|(account, on)| Op::Freeze { account, on }),
    ]
}

fn workload() -> impl Strategy<Value = (usize, Vec<Vec<Op>>)> {
    (2_usize..6).prop_flat_map(|accounts| {
        let task = proptest::collection::vec(op_strategy(accounts), 1..30);
        (Just(accounts), proptest::collection::vec(task, 2..6))
    })
}

/// What one command did: the events it wrote and its effect on the money supply.
#[derive(Debug, Default)]
struct Ledger {
    written: Vec<EventId>,
    money_in: i128,
    failures: Vec<String>,
}

impl Ledger {
    fn record(
        &mut self,
        outcome: Result<eventcore::ExecutionResult, ExecutionError<BankError>>,
        money_in: i128,
    ) {
        match outcome {
            Ok(result) => {
                self.written.extend(result.events.iter().map(|e| e.id));
                self.money_in += money_in;
            }
            Err(ExecutionError::Rejected(_)) => {}
            Err(other) => self.failures.push(other.to_string()),
        }
    }
}

fn account(n: usize) -> StreamId {
    StreamId::try_new(format!("acct-{n}")).unwrap()
}

fn amount(cents: u64) -> Amount {
    Amount::try_new(cents).unwrap()
}

async fn run_task(executor: Arc<CommandExecutor<InMemoryEventStore>>, ops: Vec<Op>) -> Ledger {
    let mut ledger = Ledger::default();
    let options = ExecutionOptions::default;
    for op in ops {
        match op {
            Op::Transfer { from, to, cents } => {
                let command = Transfer::new(account(from), account(to), amount(cents)).unwrap();
                let outcome = executor.execute(&command, options()).await;
                ledger.record(outcome, 0);
            }
            Op::Deposit { account: n, cents } => {
                let command = Deposit {
                    account: account(n),
                    amount: amount(cents),
                    reference: None,
                };
                let outcome = executor.execute(&command, options()).await;
                ledger.record(outcome, i128::from(cents));
            }
            Op::Withdraw { account: n, cents } => {
                let command = Withdraw {
                    account: account(n),
                    amount: amount(cents),
                };
                let outcome = executor.execute(&command, options()).await;
                ledger.record(outcome, -i128::from(cents));
            }
            Op::Freeze { account: n, on } => {
                let command = SetFreeze::new(account(n), on.then(|| "test".to_owned())).unwrap();
                let outcome = executor.execute(&command, options()).await;
                ledger.record(outcome, 0);
            }
        }
    }
    ledger
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn concurrent_banking_conserves_money_and_writes_exactly_what_succeeded(
        (accounts, tasks) in workload()
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let store = InMemoryEventStore::new();
        // Plenty of attempts: under this contention a command must not give up.
        let executor = Arc::new(
            CommandExecutor::new(store.clone())
                .with_retry_policy(RetryPolicy::default().with_max_attempts(100).with_time_budget(None)),
        );
        let (setup, ledgers) = runtime.block_on(async {
            let mut setup = Ledger::default();
            for n in 0..accounts {
                let open = OpenAccount { account: account(n), owner: format!("owner {n}") };
                setup.record(executor.execute(&open, ExecutionOptions::default()).await, 0);
                let fund = Deposit { account: account(n), amount: amount(INITIAL), reference: None };
                setup.record(
                    executor.execute(&fund, ExecutionOptions::default()).await,
                    i128::from(INITIAL),
                );
            }
            let handles: Vec<_> = tasks
                .into_iter()
                .map(|ops| tokio::spawn(run_task(executor.clone(), ops)))
                .collect();
            let mut ledgers = Vec::new();
            for handle in handles {
                ledgers.push(handle.await.unwrap());
            }
            (setup, ledgers)
        });

        let stored = runtime
            .block_on(store.read_all(&ReadAllQuery::from_start().page_size(NonZeroUsize::new(1 << 20).unwrap())))
            .unwrap();
        let mut counts: HashMap<EventId, usize> = HashMap::new();
        for event in &stored {
            *counts.entry(event.id).or_default() += 1;
        }
        let mut expected_money = 0;
        let mut acknowledged = 0;
        for ledger in std::iter::once(&setup).chain(&ledgers) {
            prop_assert!(ledger.failures.is_empty(), "unexpected failures: {:?}", ledger.failures);
            expected_money += ledger.money_in;
            for id in &ledger.written {
                acknowledged += 1;
                prop_assert_eq!(counts.get(id), Some(&1), "event {} stored exactly once", id);
            }
        }
        prop_assert_eq!(stored.len(), acknowledged, "only acknowledged events are stored");

        let balances = audit_balances(&stored).unwrap();
        let total: i128 = balances.values().sum();
        prop_assert_eq!(total, expected_money, "money is conserved");
        for (id, balance) in &balances {
            prop_assert!(*balance >= 0, "{} went negative: {}", id, balance);
        }
    }
}
