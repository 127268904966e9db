//! A bank on EventCore: one stream per account, one freeze stream per account.
//!
//! A transfer reads three streams (source, destination and the source's
//! freeze stream) and writes two in one atomic append; the freeze stream is
//! read only, yet a freeze that lands between the transfer's read and its
//! write makes the append conflict, and the retried transfer is refused.

use std::collections::BTreeMap;

use eventcore::{
    Command, CommandLogic, Event, HandleContext, InvalidStreamId, InvalidUpcasters, RecordedEvent,
    SnapshotPolicy, StoredEvent, StreamId, Upcasters, Writes,
};
use nutype::nutype;
use serde::{Deserialize, Serialize};

/// A positive amount of money in cents: never zero, never negative, never a float.
///
/// ```
/// use eventcore_examples::banking::Amount;
///
/// assert_eq!(Amount::try_new(250)?.cents(), 250);
/// assert!(Amount::try_new(0).is_err());
/// # Ok::<(), eventcore_examples::banking::AmountError>(())
/// ```
#[nutype(
    validate(greater = 0),
    derive(
        Debug,
        Clone,
        Copy,
        PartialEq,
        Eq,
        PartialOrd,
        Ord,
        Hash,
        Display,
        Serialize,
        Deserialize,
        TryFrom
    )
)]
pub struct Amount(u64);

impl Amount {
    /// The amount in cents.
    pub fn cents(self) -> u64 {
        self.into_inner()
    }
}

/// Everything that happens in the bank; each variant is stored under its
/// own name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Event)]
pub enum BankEvent {
    /// An account was opened (account stream).
    AccountOpened {
        /// Who owns it.
        owner: String,
    },
    /// Cash came in (account stream). Schema version 2: version 1 had no
    /// `reference`; [`upcasters`] reads stored version 1 deposits with none.
    #[event(version = 2)]
    MoneyDeposited {
        /// How much.
        amount: Amount,
        /// The depositor's reference (a slip number, say), since version 2.
        reference: Option<String>,
    },
    /// Cash went out (account stream).
    MoneyWithdrawn {
        /// How much.
        amount: Amount,
    },
    /// Money left this account for another (source account stream).
    TransferSent {
        /// The destination account.
        to: StreamId,
        /// How much.
        amount: Amount,
    },
    /// Money arrived from another account (destination account stream).
    TransferReceived {
        /// The source account.
        from: StreamId,
        /// How much.
        amount: Amount,
    },
    /// Outgoing transfers are blocked (freeze stream).
    AccountFrozen {
        /// Why.
        reason: String,
    },
    /// Outgoing transfers are allowed again (freeze stream).
    AccountUnfrozen,
}

/// The bank's upcasters: how events stored in older shapes are read now.
/// Give them to the store the bank runs on
/// (`InMemoryEventStore::with_upcasters`, `PostgresConfig::upcasters`).
///
/// - `MoneyDeposited` version 1 had no `reference`: old deposits have none.
///
/// ```
/// use eventcore_examples::banking::upcasters;
///
/// let upcasters = upcasters()?;
/// assert_eq!(upcasters.current_version("MoneyDeposited"), Some(2));
/// # Ok::<(), eventcore::InvalidUpcasters>(())
/// ```
///
/// # Errors
/// None in practice: the upcasters are fixed; the `Result` is the builder's.
pub fn upcasters() -> Result<Upcasters, InvalidUpcasters> {
    Upcasters::builder()
        .step("MoneyDeposited", 1, |mut stored: serde_json::Value| {
            // Externally tagged: {"MoneyDeposited": {"amount": ...}}.
            let fields = stored
                .get_mut("MoneyDeposited")
                .and_then(serde_json::Value::as_object_mut)
                .ok_or("a MoneyDeposited event at version 1 holds a MoneyDeposited object")?;
            fields.insert("reference".to_owned(), serde_json::Value::Null);
            Ok(stored)
        })
        .build()
}

/// Why the bank refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// Opening an account that is already open.
    #[error("account {0} is already open")]
    AlreadyOpen(StreamId),
    /// Using an account that was never opened.
    #[error("account {0} is not open")]
    NotOpen(StreamId),
    /// Taking out more than the balance.
    #[error("account {account} holds {balance} cents, {requested} requested")]
    InsufficientFunds {
        /// The account.
        account: StreamId,
        /// Its balance, in cents.
        balance: u64,
        /// The amount asked for, in cents.
        requested: u64,
    },
    /// A transfer from an account to itself.
    #[error("cannot transfer from account {0} to itself")]
    SameAccount(StreamId),
    /// A transfer out of a frozen account.
    #[error("account {0} is frozen")]
    Frozen(StreamId),
    /// A balance that would not fit in 64 bits of cents.
    #[error("account {0} would overflow")]
    BalanceOverflow(StreamId),
    /// Freezing a frozen account, or unfreezing one that is not frozen.
    #[error("account {account} is {} frozen", if *.frozen { "already" } else { "not" })]
    FreezeUnchanged {
        /// The account.
        account: StreamId,
        /// Whether it is frozen now.
        frozen: bool,
    },
}

/// The stream that records freezes of `account`.
///
/// # Errors
/// If `account` is so long that the freeze stream's id would pass 255 characters.
pub fn freeze_stream_of(account: &StreamId) -> Result<StreamId, InvalidStreamId> {
    StreamId::try_new(format!("{account}/freeze"))
}

/// Events a command folds between two snapshots of its state.
///
/// Deposits and withdrawals share their account's snapshots (one fold, one
/// name); a transfer's are per (source, destination) pair.
pub const SNAPSHOT_EVERY: u64 = 50;

/// One account as the commands see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Whether it was opened.
    pub open: bool,
    /// Its balance in cents.
    pub balance: u64,
}

impl AccountState {
    /// Folds one event of the account's stream. Balances saturate rather than
    /// wrap: the commands never decide a write that would overflow or go below zero.
    pub fn apply(&mut self, event: &BankEvent) {
        match event {
            BankEvent::AccountOpened { .. } => self.open = true,
            BankEvent::MoneyDeposited { amount, .. }
            | BankEvent::TransferReceived { amount, .. } => {
                self.balance = self.balance.saturating_add(amount.cents());
            }
            BankEvent::MoneyWithdrawn { amount } | BankEvent::TransferSent { amount, .. } => {
                self.balance = self.balance.saturating_sub(amount.cents());
            }
            BankEvent::AccountFrozen { .. } | BankEvent::AccountUnfrozen => {}
        }
    }

    fn require_open(&self, account: &StreamId) -> Result<(), BankError> {
        if self.open {
            Ok(())
        } else {
            Err(BankError::NotOpen(account.clone()))
        }
    }

    fn require_funds(&self, account: &StreamId, amount: Amount) -> Result<(), BankError> {
        if self.balance >= amount.cents() {
            Ok(())
        } else {
            Err(BankError::InsufficientFunds {
                account: account.clone(),
                balance: self.balance,
                requested: amount.cents(),
            })
        }
    }
}

/// Whether the last event of a freeze stream left the account frozen.
fn apply_freeze(frozen: &mut bool, event: &BankEvent) {
    match event {
        BankEvent::AccountFrozen { .. } => *frozen = true,
        BankEvent::AccountUnfrozen => *frozen = false,
        _ => {}
    }
}

/// Opens an account.
#[derive(Debug, Clone, Command)]
pub struct OpenAccount {
    /// The new account.
    #[stream]
    pub account: StreamId,
    /// Its owner.
    pub owner: String,
}

impl CommandLogic for OpenAccount {
    type State = AccountState;
    type Event = BankEvent;
    type Error = BankError;

    fn apply(&self, state: &mut AccountState, event: &StoredEvent<BankEvent>) {
        state.apply(&event.payload);
    }

    fn handle(
        &self,
        state: AccountState,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, BankError> {
        if state.open {
            return Err(BankError::AlreadyOpen(self.account.clone()));
        }
        Ok(Writes::new().emit(
            self.account_stream(),
            BankEvent::AccountOpened {
                owner: self.owner.clone(),
            },
        ))
    }
}

/// Puts cash into an open account.
#[derive(Debug, Clone, Command)]
pub struct Deposit {
    /// The account.
    #[stream]
    pub account: StreamId,
    /// How much.
    pub amount: Amount,
    /// The depositor's reference, if any.
    pub reference: Option<String>,
}

impl CommandLogic for Deposit {
    type State = AccountState;
    type Event = BankEvent;
    type Error = BankError;

    fn snapshots(&self) -> Option<SnapshotPolicy<AccountState>> {
        Some(SnapshotPolicy::new("account", 1).every(SNAPSHOT_EVERY))
    }

    fn apply(&self, state: &mut AccountState, event: &StoredEvent<BankEvent>) {
        state.apply(&event.payload);
    }

    fn handle(
        &self,
        state: AccountState,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, BankError> {
        state.require_open(&self.account)?;
        if state.balance.checked_add(self.amount.cents()).is_none() {
            return Err(BankError::BalanceOverflow(self.account.clone()));
        }
        Ok(Writes::new().emit(
            self.account_stream(),
            BankEvent::MoneyDeposited {
                amount: self.amount,
                reference: self.reference.clone(),
            },
        ))
    }
}

/// Takes cash out of an open account, never below zero.
#[derive(Debug, Clone, Command)]
pub struct Withdraw {
    /// The account.
    #[stream]
    pub account: StreamId,
    /// How much.
    pub amount: Amount,
}

impl CommandLogic for Withdraw {
    type State = AccountState;
    type Event = BankEvent;
    type Error = BankError;

    fn snapshots(&self) -> Option<SnapshotPolicy<AccountState>> {
        Some(SnapshotPolicy::new("account", 1).every(SNAPSHOT_EVERY))
    }

    fn apply(&self, state: &mut AccountState, event: &StoredEvent<BankEvent>) {
        state.apply(&event.payload);
    }

    fn handle(
        &self,
        state: AccountState,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, BankError> {
        state.require_open(&self.account)?;
        state.require_funds(&self.account, self.amount)?;
        Ok(Writes::new().emit(
            self.account_stream(),
            BankEvent::MoneyWithdrawn {
                amount: self.amount,
            },
        ))
    }
}

/// Moves money between two accounts atomically, unless the source is frozen.
#[derive(Debug, Clone, Command)]
pub struct Transfer {
    /// Where the money comes from.
    #[stream]
    pub from: StreamId,
    /// Where it goes.
    #[stream]
    pub to: StreamId,
    /// The source's freeze stream: read, never written.
    #[stream]
    pub from_freeze: StreamId,
    /// How much.
    pub amount: Amount,
}

impl Transfer {
    /// A transfer of `amount` from `from` to `to`.
    ///
    /// # Errors
    /// If `from` is too long to name its freeze stream.
    pub fn new(from: StreamId, to: StreamId, amount: Amount) -> Result<Self, InvalidStreamId> {
        Ok(Self {
            from_freeze: freeze_stream_of(&from)?,
            from,
            to,
            amount,
        })
    }
}

/// What a transfer knows: both accounts and whether the source is frozen.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct TransferState {
    /// The source account.
    pub from: AccountState,
    /// The destination account.
    pub to: AccountState,
    /// Whether the source is frozen.
    pub frozen: bool,
}

impl CommandLogic for Transfer {
    type State = TransferState;
    type Event = BankEvent;
    type Error = BankError;

    fn snapshots(&self) -> Option<SnapshotPolicy<TransferState>> {
        Some(SnapshotPolicy::new("transfer", 1).every(SNAPSHOT_EVERY))
    }

    fn apply(&self, state: &mut TransferState, event: &StoredEvent<BankEvent>) {
        if event.stream_id == self.from_freeze {
            apply_freeze(&mut state.frozen, &event.payload);
        } else if event.stream_id == self.from {
            state.from.apply(&event.payload);
        } else if event.stream_id == self.to {
            state.to.apply(&event.payload);
        }
    }

    fn handle(
        &self,
        state: TransferState,
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, BankError> {
        if self.from == self.to {
            return Err(BankError::SameAccount(self.from.clone()));
        }
        state.from.require_open(&self.from)?;
        state.to.require_open(&self.to)?;
        if state.frozen {
            return Err(BankError::Frozen(self.from.clone()));
        }
        state.from.require_funds(&self.from, self.amount)?;
        if state.to.balance.checked_add(self.amount.cents()).is_none() {
            return Err(BankError::BalanceOverflow(self.to.clone()));
        }
        Ok(Writes::new()
            .emit(
                self.from_stream(),
                BankEvent::TransferSent {
                    to: self.to.clone(),
                    amount: self.amount,
                },
            )
            .emit(
                self.to_stream(),
                BankEvent::TransferReceived {
                    from: self.from.clone(),
                    amount: self.amount,
                },
            ))
    }
}

/// Freezes or unfreezes outgoing transfers of an open account.
#[derive(Debug, Clone, Command)]
pub struct SetFreeze {
    /// The account: read to check it is open, not written.
    #[stream]
    pub account: StreamId,
    /// Its freeze stream.
    #[stream]
    pub freeze: StreamId,
    /// Freeze (with this reason) or, when `None`, unfreeze.
    pub reason: Option<String>,
}

impl SetFreeze {
    /// Freezes `account` for `reason`, or unfreezes it when `reason` is `None`.
    ///
    /// # Errors
    /// If `account` is too long to name its freeze stream.
    pub fn new(account: StreamId, reason: Option<String>) -> Result<Self, InvalidStreamId> {
        Ok(Self {
            freeze: freeze_stream_of(&account)?,
            account,
            reason,
        })
    }
}

impl CommandLogic for SetFreeze {
    type State = (AccountState, bool);
    type Event = BankEvent;
    type Error = BankError;

    fn apply(&self, (account, frozen): &mut (AccountState, bool), event: &StoredEvent<BankEvent>) {
        if event.stream_id == self.freeze {
            apply_freeze(frozen, &event.payload);
        } else {
            account.apply(&event.payload);
        }
    }

    fn handle(
        &self,
        (account, frozen): (AccountState, bool),
        _: &mut HandleContext<'_, Self>,
    ) -> Result<Writes<Self>, BankError> {
        account.require_open(&self.account)?;
        if frozen == self.reason.is_some() {
            return Err(BankError::FreezeUnchanged {
                account: self.account.clone(),
                frozen,
            });
        }
        let event = match &self.reason {
            Some(reason) => BankEvent::AccountFrozen {
                reason: reason.clone(),
            },
            None => BankEvent::AccountUnfrozen,
        };
        Ok(Writes::new().emit(self.freeze_stream(), event))
    }
}

/// Balances recomputed from raw events, as signed numbers so that an
/// impossible negative balance shows instead of saturating.
///
/// # Errors
/// The first event that does not decode as a [`BankEvent`].
pub fn audit_balances<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
) -> Result<BTreeMap<StreamId, i128>, eventcore::DecodeError> {
    let mut balances = BTreeMap::new();
    for event in events {
        if let Some(delta) = balance_change(&event.decode::<BankEvent>()?.payload) {
            *balances.entry(event.stream_id.clone()).or_insert(0) += delta;
        }
    }
    Ok(balances)
}

/// How an event changes its account's balance, in cents; `None` for events
/// of freeze streams, which hold no money.
pub fn balance_change(event: &BankEvent) -> Option<i128> {
    match event {
        BankEvent::AccountOpened { .. } => Some(0),
        BankEvent::MoneyDeposited { amount, .. } | BankEvent::TransferReceived { amount, .. } => {
            Some(i128::from(amount.cents()))
        }
        BankEvent::MoneyWithdrawn { amount } | BankEvent::TransferSent { amount, .. } => {
            Some(-i128::from(amount.cents()))
        }
        BankEvent::AccountFrozen { .. } | BankEvent::AccountUnfrozen => None,
    }
}
