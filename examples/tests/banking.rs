//! The banking rules, scenario by scenario, with the given/when/then fixture.

use eventcore::{ExecutionError, StreamId};
use eventcore_examples::banking::{
    Amount, BankError, BankEvent, Deposit, OpenAccount, SetFreeze, Transfer, Withdraw,
    freeze_stream_of,
};
use eventcore_memory::testing::given;

fn id(name: &str) -> StreamId {
    StreamId::try_new(name).unwrap()
}

fn cents(n: u64) -> Amount {
    Amount::try_new(n).unwrap()
}

fn opened() -> BankEvent {
    BankEvent::AccountOpened {
        owner: "ann".into(),
    }
}

fn deposited(n: u64) -> BankEvent {
    BankEvent::MoneyDeposited {
        amount: cents(n),
        reference: None,
    }
}

fn frozen() -> BankEvent {
    BankEvent::AccountFrozen {
        reason: "fraud check".into(),
    }
}

#[test]
fn amounts_are_positive_whole_cents() {
    assert!(Amount::try_new(0).is_err());
    assert!(serde_json::from_str::<Amount>("0").is_err());
    assert!(serde_json::from_str::<Amount>("-5").is_err());
    assert!(serde_json::from_str::<Amount>("1.5").is_err());
    assert_eq!(serde_json::from_str::<Amount>("15").unwrap().cents(), 15);
}

#[test]
fn an_account_opens_once() {
    let a = id("a");
    given::<BankEvent>([])
        .when(&OpenAccount {
            account: a.clone(),
            owner: "ann".into(),
        })
        .then_expect_events([(a.clone(), opened())]);
    given([(a.clone(), vec![opened()])])
        .when(&OpenAccount {
            account: a.clone(),
            owner: "bob".into(),
        })
        .then_expect_error(BankError::AlreadyOpen(a));
}

#[test]
fn deposits_need_an_open_account() {
    let a = id("a");
    given([(a.clone(), vec![opened()])])
        .when(&Deposit {
            account: a.clone(),
            amount: cents(500),
            reference: None,
        })
        .then_expect_events([(a.clone(), deposited(500))]);
    given::<BankEvent>([])
        .when(&Deposit {
            account: a.clone(),
            amount: cents(500),
            reference: None,
        })
        .then_expect_error(BankError::NotOpen(a));
}

#[test]
fn deposits_that_would_overflow_are_refused() {
    let a = id("a");
    given([(a.clone(), vec![opened(), deposited(u64::MAX - 1)])])
        .when(&Deposit {
            account: a.clone(),
            amount: cents(2),
            reference: None,
        })
        .then_expect_error(BankError::BalanceOverflow(a));
}

#[test]
fn withdrawals_never_take_the_balance_below_zero() {
    let a = id("a");
    let history = || [(a.clone(), vec![opened(), deposited(300)])];
    given(history())
        .when(&Withdraw {
            account: a.clone(),
            amount: cents(300),
        })
        .then_expect_events([(a.clone(), BankEvent::MoneyWithdrawn { amount: cents(300) })]);
    given(history())
        .when(&Withdraw {
            account: a.clone(),
            amount: cents(301),
        })
        .then_expect_error(BankError::InsufficientFunds {
            account: a,
            balance: 300,
            requested: 301,
        });
}

#[test]
fn a_transfer_writes_both_accounts_in_one_append() {
    let (a, b) = (id("a"), id("b"));
    let then = given([
        (a.clone(), vec![opened(), deposited(1000)]),
        (b.clone(), vec![opened()]),
    ])
    .when(&Transfer::new(a.clone(), b.clone(), cents(400)).unwrap())
    .then_expect_events([
        (
            a.clone(),
            BankEvent::TransferSent {
                to: b.clone(),
                amount: cents(400),
            },
        ),
        (
            b.clone(),
            BankEvent::TransferReceived {
                from: a.clone(),
                amount: cents(400),
            },
        ),
    ]);
    let result = then.result().as_ref().unwrap();
    assert_eq!(result.events.len(), 2);
    assert_eq!(
        result.events[0].position.transaction(),
        result.events[1].position.transaction(),
        "one atomic append"
    );
    assert!(
        result.versions.contains_key(&freeze_stream_of(&a).unwrap()),
        "the freeze stream was version-checked although not written"
    );
}

#[test]
fn transfers_are_refused_for_every_broken_rule() {
    let (a, b) = (id("a"), id("b"));
    let funded = || {
        vec![
            (a.clone(), vec![opened(), deposited(100)]),
            (b.clone(), vec![opened()]),
        ]
    };
    given(funded())
        .when(&Transfer::new(a.clone(), a.clone(), cents(1)).unwrap())
        .then_expect_error(BankError::SameAccount(a.clone()));
    given(funded())
        .when(&Transfer::new(a.clone(), id("nobody"), cents(1)).unwrap())
        .then_expect_error(BankError::NotOpen(id("nobody")));
    given(funded())
        .when(&Transfer::new(a.clone(), b.clone(), cents(101)).unwrap())
        .then_expect_error(BankError::InsufficientFunds {
            account: a.clone(),
            balance: 100,
            requested: 101,
        });
    let mut frozen_history = funded();
    frozen_history.push((freeze_stream_of(&a).unwrap(), vec![frozen()]));
    given(frozen_history)
        .when(&Transfer::new(a.clone(), b.clone(), cents(1)).unwrap())
        .then_expect_error(BankError::Frozen(a.clone()));
    // Money may still come in to a frozen account.
    let mut frozen_destination = funded();
    frozen_destination.push((freeze_stream_of(&b).unwrap(), vec![frozen()]));
    given(frozen_destination)
        .when(&Transfer::new(a.clone(), b.clone(), cents(1)).unwrap())
        .then_expect_events([
            (
                a.clone(),
                BankEvent::TransferSent {
                    to: b.clone(),
                    amount: cents(1),
                },
            ),
            (
                b.clone(),
                BankEvent::TransferReceived {
                    from: a,
                    amount: cents(1),
                },
            ),
        ]);
}

#[test]
fn an_unfrozen_account_can_send_again() {
    let (a, b) = (id("a"), id("b"));
    given([
        (a.clone(), vec![opened(), deposited(10)]),
        (b.clone(), vec![opened()]),
        (
            freeze_stream_of(&a).unwrap(),
            vec![frozen(), BankEvent::AccountUnfrozen],
        ),
    ])
    .when(&Transfer::new(a.clone(), b.clone(), cents(10)).unwrap())
    .then_expect_events([
        (
            a.clone(),
            BankEvent::TransferSent {
                to: b.clone(),
                amount: cents(10),
            },
        ),
        (
            b,
            BankEvent::TransferReceived {
                from: a,
                amount: cents(10),
            },
        ),
    ]);
}

#[test]
fn freezing_writes_only_the_freeze_stream() {
    let a = id("a");
    let freeze = freeze_stream_of(&a).unwrap();
    given([(a.clone(), vec![opened()])])
        .when(&SetFreeze::new(a.clone(), Some("fraud check".into())).unwrap())
        .then_expect_events([(freeze.clone(), frozen())]);
    given([
        (a.clone(), vec![opened()]),
        (freeze.clone(), vec![frozen()]),
    ])
    .when(&SetFreeze::new(a.clone(), Some("again".into())).unwrap())
    .then_expect_error(BankError::FreezeUnchanged {
        account: a.clone(),
        frozen: true,
    });
    given::<BankEvent>([])
        .when(&SetFreeze::new(a.clone(), None).unwrap())
        .then_expect_failure(|e| matches!(e, ExecutionError::Rejected(BankError::NotOpen(_))));
}

/// A deposit as the release before references stored it: schema version 1,
/// `{"MoneyDeposited": {"amount": n}}`.
fn stored_v1_deposit(n: u64) -> eventcore::NewEvent {
    eventcore::NewEvent::from_parts(
        eventcore::EventType::try_new("MoneyDeposited").unwrap(),
        serde_json::json!({ "MoneyDeposited": { "amount": n } }),
        eventcore::EventMetadata::default(),
    )
    .unwrap()
}

#[test]
fn deposits_stored_before_references_count_through_the_upcaster() {
    let a = id("a");
    let with_v1_deposits = || {
        given([(a.clone(), vec![opened()])])
            .and_stored(
                a.clone(),
                vec![stored_v1_deposit(200), stored_v1_deposit(100)],
            )
            .with_upcasters(eventcore_examples::banking::upcasters().unwrap())
    };
    with_v1_deposits()
        .when(&Withdraw {
            account: a.clone(),
            amount: cents(300),
        })
        .then_expect_events([(a.clone(), BankEvent::MoneyWithdrawn { amount: cents(300) })]);
    with_v1_deposits()
        .when(&Withdraw {
            account: a.clone(),
            amount: cents(301),
        })
        .then_expect_error(BankError::InsufficientFunds {
            account: a.clone(),
            balance: 300,
            requested: 301,
        });
}

#[test]
fn deposits_stored_before_references_need_the_upcaster() {
    let a = id("a");
    given([(a.clone(), vec![opened()])])
        .and_stored(a.clone(), vec![stored_v1_deposit(200)])
        .when(&Withdraw {
            account: a.clone(),
            amount: cents(100),
        })
        .then_expect_failure(|error| {
            let message = error.to_string();
            matches!(error, ExecutionError::Decode(_)) && message.contains("register an upcaster")
        });
}

#[tokio::test]
async fn the_balance_audit_reads_v1_deposits_in_their_current_shape() {
    use eventcore::{AppendRequest, EventStore, ExpectedVersion};
    let store = eventcore_memory::InMemoryEventStore::new();
    let a = id("a");
    let old = vec![
        eventcore::NewEvent::from_event(&opened(), eventcore::EventMetadata::default()).unwrap(),
        stored_v1_deposit(250),
    ];
    store
        .append(AppendRequest::single(a.clone(), ExpectedVersion::Any, old))
        .await
        .unwrap();
    let upcasting = store.with_upcasters(eventcore_examples::banking::upcasters().unwrap());
    let events = upcasting
        .read_all(&eventcore::ReadAllQuery::from_start())
        .await
        .unwrap();
    assert_eq!(
        events[1].decode::<BankEvent>().unwrap().payload,
        deposited(250)
    );
    let balances = eventcore_examples::banking::audit_balances(&events).unwrap();
    assert_eq!(balances[&a], 250);
}
