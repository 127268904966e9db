//! The account-balances read model, kept by a projection: in memory, or in
//! a PostgreSQL table.
//!
//! Both versions apply each account's events at most once per version: a
//! stream's events reach a projection in version order, so remembering the
//! last version applied per account makes `apply` idempotent, and the
//! at-least-once delivery after a crash harmless.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use eventcore::{DecodeError, Projection, RecordedEvent, StreamId, StreamVersion};
use sqlx::{PgPool, Row};

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
        let Some(delta) = balance_change(&event.decode::<BankEvent>()?.payload) else {
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

/// Balances in the table `bank_balances` of a PostgreSQL schema.
#[derive(Debug, Clone)]
pub struct PostgresBalances {
    pool: PgPool,
    apply: String,
    reset: String,
    select: String,
}

impl PostgresBalances {
    /// Creates the table in `schema` (already validated by the store) when missing.
    ///
    /// # Errors
    /// The database's error.
    pub async fn create(pool: PgPool, schema: &str) -> Result<Self, BalancesError> {
        let table = format!("\"{schema}\".bank_balances");
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (\
                 account text PRIMARY KEY, balance numeric NOT NULL, version bigint NOT NULL)"
        ))
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            // Applies the change only if this version is newer than the last applied.
            apply: format!(
                "INSERT INTO {table} AS b (account, balance, version) VALUES ($1, $2::text::numeric, $3) \
                 ON CONFLICT (account) DO UPDATE \
                 SET balance = b.balance + excluded.balance, version = excluded.version \
                 WHERE b.version < excluded.version"
            ),
            reset: format!("DELETE FROM {table}"),
            select: format!("SELECT account, balance::text AS balance FROM {table} WHERE account = ANY($1)"),
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
        let rows = sqlx::query(&self.select)
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
}

impl Projection for PostgresBalances {
    type Error = BalancesError;

    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    async fn apply(&mut self, event: &RecordedEvent) -> Result<(), BalancesError> {
        let Some(delta) = balance_change(&event.decode::<BankEvent>()?.payload) else {
            return Ok(());
        };
        sqlx::query(&self.apply)
            .bind(event.stream_id.as_ref())
            .bind(delta.to_string())
            .bind(i64::try_from(event.version.value()).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), BalancesError> {
        sqlx::query(&self.reset).execute(&self.pool).await?;
        Ok(())
    }
}
