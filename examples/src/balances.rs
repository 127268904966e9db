//! The account-balances read model, kept by a projection: in memory, or in
//! a PostgreSQL table.
//!
//! In memory, `apply` is idempotent: a stream's events reach a projection in
//! version order, so remembering the last version applied per account makes
//! the at-least-once delivery after a crash harmless. In PostgreSQL, the
//! table and the checkpoint commit together (exactly-once effect).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use eventcore::{
    Checkpoint, DecodeError, Projection, RecordedEvent, StoreError, StreamId, StreamVersion,
};
use eventcore_postgres::{PostgresCheckpointStore, PostgresEventStore};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row, SqlSafeStr, SqlStr};

use crate::banking::{BankEvent, balance_change};

/// The projection's name (its checkpoint's key).
pub const PROJECTION_NAME: &str = "bank-balances";

/// Why the read model could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum BalancesError {
    /// A stored event is not a bank event.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The read model's table refused the update.
    #[error("the balances table failed: {0}")]
    Database(#[from] sqlx::Error),
    /// The checkpoint could not be written with the read model.
    #[error(transparent)]
    Checkpoint(#[from] StoreError),
}

/// How a stored event changes its account's balance; `None` for freeze events.
fn change_of(event: &RecordedEvent) -> Result<Option<i128>, DecodeError> {
    Ok(balance_change(&event.decode::<BankEvent>()?.payload))
}

/// Balances in memory: `account -> (balance in cents, last version applied)`.
#[derive(Debug, Clone, Default)]
pub struct MemoryBalances {
    accounts: Arc<Mutex<BTreeMap<StreamId, (i128, StreamVersion)>>>,
}

impl MemoryBalances {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }

    /// The balance of every account seen, in cents.
    pub fn balances(&self) -> BTreeMap<StreamId, i128> {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        accounts
            .iter()
            .map(|(account, (balance, _))| (account.clone(), *balance))
            .collect()
    }
}

impl Projection for MemoryBalances {
    type Error = BalancesError;

    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), BalancesError> {
        let Some(delta) = change_of(event)? else {
            return Ok(());
        };
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = accounts
            .entry(event.stream_id.clone())
            .or_insert((0, StreamVersion::INITIAL));
        if event.version > entry.1 {
            *entry = (entry.0 + delta, event.version);
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), BalancesError> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }
}

/// Balances in the table `bank_balances` of a PostgreSQL schema, committed
/// together with the projection's checkpoint (exactly-once effect).
///
/// `apply` only adds the change to a batch in memory; when the runner saves
/// the checkpoint, one short transaction writes the whole batch and the
/// checkpoint, and commits. A crash loses the batch and the checkpoint
/// together, so the events are applied again, once. No transaction stays
/// open between checkpoints, which would hold back the store's gap-safe
/// global order.
#[derive(Debug, Clone)]
pub struct PostgresBalances {
    pool: PgPool,
    checkpoints: PostgresCheckpointStore,
    pending: BTreeMap<String, Pending>,
    reset_pending: bool,
    flush: SqlStr,
    reset: SqlStr,
    select: SqlStr,
}

/// A statement naming the balances table. Its only text not written here is
/// the store's schema name, which `SchemaName` admits only as an identifier
/// (quoted here), so sqlx may run it as it is.
fn in_schema(sql: String) -> SqlStr {
    AssertSqlSafe(std::sync::Arc::<str>::from(sql)).into_sql_str()
}

/// The batched change of one account: the sum of its deltas and the versions they span.
#[derive(Debug, Clone, Copy)]
struct Pending {
    delta: i128,
    first_version: i64,
    last_version: i64,
}

impl PostgresBalances {
    /// Creates the table in the store's schema when missing.
    ///
    /// # Errors
    /// The database's error.
    pub async fn create(store: &PostgresEventStore) -> Result<Self, BalancesError> {
        let table = format!("\"{}\".bank_balances", store.schema().as_str());
        let pool = store.pool().clone();
        sqlx::query(in_schema(format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
                 account text PRIMARY KEY, balance numeric NOT NULL, version bigint NOT NULL)"
        )))
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            checkpoints: store.checkpoints(),
            pending: BTreeMap::new(),
            reset_pending: false,
            // Existing accounts are updated, new ones inserted, in one
            // statement. The version guard keeps a batch from being counted
            // twice should it ever overlap what the table holds.
            flush: in_schema(format!(
                "WITH input AS (\
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                         AS t(account, delta, first_version, last_version)), \
                 updated AS (\
                     UPDATE {table} AS b \
                     SET balance = b.balance + i.delta::numeric, version = i.last_version \
                     FROM input i WHERE b.account = i.account AND b.version < i.first_version) \
                 INSERT INTO {table} (account, balance, version) \
                 SELECT i.account, i.delta::numeric, i.last_version FROM input i \
                 WHERE NOT EXISTS (SELECT 1 FROM {table} b WHERE b.account = i.account)"
            )),
            reset: in_schema(format!("DELETE FROM {table}")),
            select: in_schema(format!(
                "SELECT account, balance::text AS balance FROM {table} WHERE account = ANY($1)"
            )),
        })
    }

    /// The balances of `accounts`, in cents (accounts never seen are absent).
    ///
    /// # Errors
    /// The database's error.
    pub async fn balances(
        &self,
        accounts: &[StreamId],
    ) -> Result<BTreeMap<StreamId, i128>, BalancesError> {
        let names: Vec<&str> = accounts.iter().map(AsRef::as_ref).collect();
        let rows = sqlx::query(self.select.clone())
            .bind(&names)
            .fetch_all(&self.pool)
            .await?;
        let mut balances = BTreeMap::new();
        for row in rows {
            let account: String = row.try_get("account")?;
            let balance: String = row.try_get("balance")?;
            if let (Some(account), Ok(balance)) = (
                accounts.iter().find(|a| a.as_ref() == account),
                balance.parse::<i128>(),
            ) {
                balances.insert(account.clone(), balance);
            }
        }
        Ok(balances)
    }

    /// Writes the batch and `checkpoint` in one transaction.
    async fn flush(&mut self, checkpoint: &Checkpoint) -> Result<(), BalancesError> {
        let mut accounts = Vec::with_capacity(self.pending.len());
        let mut deltas = Vec::with_capacity(self.pending.len());
        let mut firsts = Vec::with_capacity(self.pending.len());
        let mut lasts = Vec::with_capacity(self.pending.len());
        for (account, pending) in &self.pending {
            accounts.push(account.as_str());
            deltas.push(pending.delta.to_string());
            firsts.push(pending.first_version);
            lasts.push(pending.last_version);
        }
        let mut tx = self.pool.begin().await?;
        let connection: &mut PgConnection = &mut tx;
        if self.reset_pending {
            sqlx::query(self.reset.clone())
                .execute(&mut *connection)
                .await?;
        }
        if !accounts.is_empty() {
            sqlx::query(self.flush.clone())
                .bind(&accounts)
                .bind(&deltas)
                .bind(&firsts)
                .bind(&lasts)
                .execute(&mut *connection)
                .await?;
        }
        self.checkpoints
            .save_in(&mut *connection, checkpoint)
            .await?;
        tx.commit().await?;
        self.pending.clear();
        self.reset_pending = false;
        Ok(())
    }
}

impl Projection for PostgresBalances {
    type Error = BalancesError;

    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), BalancesError> {
        let Some(delta) = change_of(event)? else {
            return Ok(());
        };
        let version = i64::try_from(event.version.value()).unwrap_or(i64::MAX);
        self.pending
            .entry(event.stream_id.as_ref().to_owned())
            .and_modify(|p| {
                p.delta += delta;
                p.last_version = version;
            })
            .or_insert(Pending {
                delta,
                first_version: version,
                last_version: version,
            });
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), BalancesError> {
        self.pending.clear();
        self.reset_pending = true;
        Ok(())
    }

    async fn resume_from(&mut self, _checkpoint: &Checkpoint) -> Result<(), BalancesError> {
        // Whatever was batched since the last commit is applied again from
        // the checkpoint: keeping it would count it twice.
        self.pending.clear();
        self.reset_pending = false;
        Ok(())
    }

    async fn save_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<bool, BalancesError> {
        self.flush(checkpoint).await?;
        Ok(true)
    }
}
