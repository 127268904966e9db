//! Connection settings: a builder, or the `DATABASE_*` environment variables.

use std::{fmt, future::Future, pin::Pin, str::FromStr, time::Duration};

use sqlx::{
    Connection, PgConnection,
    pool::PoolConnectionMetadata,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// Settings of a [`PostgresEventStore`](crate::PostgresEventStore).
///
/// ```
/// use std::time::Duration;
/// use eventcore_postgres::PostgresConfig;
///
/// let config = PostgresConfig::new("postgres://app:secret@localhost/bank")
///     .max_connections(20)
///     .acquire_timeout(Duration::from_secs(3))
///     .schema("bank")?;
/// assert!(!format!("{config:?}").contains("secret"), "the password is never printed");
/// // Nor in the query string, in any spelling sqlx accepts.
/// let config = PostgresConfig::new("postgresql://db/bank?user=app&password=secret");
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), eventcore_postgres::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct PostgresConfig {
    url: String,
    replica_urls: Vec<String>,
    session_url: Option<String>,
    max_connections: u32,
    write_connections: Option<u32>,
    group_commit: Option<crate::GroupCommit>,
    min_connections: u32,
    acquire_timeout: Duration,
    idle_timeout: Option<Duration>,
    check_idle_after: Duration,
    statement_timeout: Option<Duration>,
    schema: SchemaName,
    poll_interval: Duration,
    in_flight_wait: Duration,
    key_retention: Duration,
    upcasters: eventcore::Upcasters,
}

/// How long a connection may sit idle before it is checked, by default.
pub(crate) const DEFAULT_CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How often a caught-up subscription polls by default.
pub(crate) const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `read_all` waits by default for transactions in flight when it is called.
pub(crate) const DEFAULT_IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// A configuration that cannot be used.
///
/// ```
/// use eventcore_postgres::{ConfigError, PostgresConfig};
///
/// match PostgresConfig::new("postgres://app@localhost/app").schema("app-1") {
///     Err(error @ ConfigError::InvalidSchema { .. }) => println!("{error}"), // says what a name may hold
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `from_env` found no `DATABASE_URL`.
    #[error("DATABASE_URL is not set")]
    MissingDatabaseUrl,
    /// A numeric environment variable does not parse.
    #[error("{variable} must be a whole number, got {value:?}")]
    InvalidNumber {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
    },
    /// The schema name is not a plain identifier.
    #[error("invalid schema name {name:?}: {reason}")]
    InvalidSchema {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URL is not a PostgreSQL URL (`mysql://`, `sqlite:`, ...).
    #[error(
        "the database URL is a {scheme}: URL; EventCore's PostgreSQL store needs a \
         postgres:// (or postgresql://) URL"
    )]
    NotPostgres {
        /// The URL's scheme.
        scheme: String,
    },
    /// The URL has a query parameter named like a password that PostgreSQL
    /// does not know (only `password` is); its value is not repeated.
    #[error(
        "the database URL has a parameter {key:?} that PostgreSQL does not know: pass the \
         password as `password=` or in the user part"
    )]
    UnknownSecretParameter {
        /// The parameter's name.
        key: String,
    },
    /// The database URL does not parse (the URL itself is not repeated, it may hold a password).
    #[error("the database URL is invalid")]
    InvalidUrl {
        /// sqlx's parse error.
        #[source]
        source: sqlx::Error,
    },
}

/// A PostgreSQL schema name EventCore may use: 1 to 63 ASCII letters, digits
/// or underscores, not starting with a digit, and not a system schema
/// (`information_schema`, or a name starting with `pg_`, which PostgreSQL
/// reserves). It is always written quoted.
///
/// ```
/// use eventcore_postgres::{ConfigError, SchemaName};
///
/// let schema = SchemaName::new("bank")?;
/// assert_eq!(schema.as_str(), "bank");
/// assert!(matches!(SchemaName::new("bank; DROP TABLE x"), Err(ConfigError::InvalidSchema { .. })));
/// # Ok::<(), ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

impl SchemaName {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSchema`] saying what is wrong.
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidSchema {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() || name.len() > 63 {
            return Err(invalid("it must have 1 to 63 characters"));
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(invalid("it must not start with a digit"));
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                "only ASCII letters, digits and underscores are allowed",
            ));
        }
        if name == "information_schema" || name.starts_with("pg_") {
            return Err(invalid(
                "it is a system schema (information_schema, pg_*): choose a schema of your own",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The LISTEN/NOTIFY channel of this schema's appends. PostgreSQL
    /// truncates identifiers at 63 bytes and refuses longer channel names in
    /// `pg_notify`, so a name that would not fit keeps a prefix and adds a
    /// hash of the whole name: every valid schema has a channel of its own.
    pub(crate) fn channel(&self) -> String {
        const PREFIX: &str = "eventcore_";
        const MAX_IDENTIFIER_BYTES: usize = 63;
        if PREFIX.len() + self.0.len() <= MAX_IDENTIFIER_BYTES {
            return format!("{PREFIX}{}", self.0);
        }
        let head = self.0.get(..32).unwrap_or(&self.0);
        format!("{PREFIX}{head}_{:016x}", fnv1a(self.0.as_bytes()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier (safe: the name holds no quote).
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases and
/// processes, as a channel name shared by every process must.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Default for SchemaName {
    fn default() -> Self {
        Self("public".to_owned())
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("session_url", &self.session_url.as_deref().map(redact))
            .field(
                "replica_urls",
                &self
                    .replica_urls
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>(),
            )
            .field("max_connections", &self.max_connections)
            .field("write_connections", &self.write_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("check_idle_after", &self.check_idle_after)
            .field("statement_timeout", &self.statement_timeout)
            .field("schema", &self.schema)
            .field("poll_interval", &self.poll_interval)
            .field("in_flight_wait", &self.in_flight_wait)
            .field("key_retention", &self.key_retention)
            .field("upcasters", &self.upcasters)
            .finish()
    }
}

/// The URL with every password replaced, for logs and debug output: the
/// one in the user part and any query parameter whose name holds
/// `password` (`?password=`, `?sslpassword=`, in any case). The fragment is
/// dropped. A URL that does not parse is not printed at all, since there
/// is no telling where its password is.
pub(crate) fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<database url that does not parse, not shown>".to_owned();
    };
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        return "<database url, not shown>".to_owned();
    }
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, value)| {
            let secret = key.to_ascii_lowercase().contains("password");
            let value = if secret { "***".into() } else { value };
            (key.into_owned(), value.into_owned())
        })
        .collect();
    if pairs.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.set_fragment(None);
    // `***` is percent-encoded in the user part; show it as written.
    parsed.to_string().replace("%2A%2A%2A", "***")
}

impl PostgresConfig {
    /// Settings for the database at `url`, with defaults for the rest: 10
    /// connections at most, none kept open when idle, a 5 s acquire timeout,
    /// a 10 min idle timeout, connections idle for 1 s or more checked
    /// before use, a 30 s statement timeout, schema `public`,
    /// subscriptions polling every 500 ms when no notification arrives, and
    /// `read_all` waiting up to 1 s for transactions in flight.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            replica_urls: Vec::new(),
            session_url: None,
            max_connections: 10,
            write_connections: None,
            group_commit: None,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            check_idle_after: DEFAULT_CHECK_IDLE_AFTER,
            statement_timeout: Some(Duration::from_secs(30)),
            schema: SchemaName::default(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            in_flight_wait: DEFAULT_IN_FLIGHT_WAIT,
            key_retention: eventcore::DEFAULT_IDEMPOTENCY_RETENTION,
            upcasters: eventcore::Upcasters::none(),
        }
    }

    /// Settings from `DATABASE_URL` (required), `DATABASE_MAX_CONNECTIONS`,
    /// `DATABASE_ACQUIRE_TIMEOUT` (seconds), `DATABASE_SESSION_URL` (when
    /// `DATABASE_URL` is a transaction pooler, see
    /// [`transaction_pooler`](Self::transaction_pooler)) and
    /// `DATABASE_REPLICA_URLS` (comma-separated, see
    /// [`read_replica`](Self::read_replica)), defaults for the rest.
    ///
    /// # Errors
    /// [`ConfigError`] naming the missing or malformed variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = std::env::var("DATABASE_URL").map_err(|_| ConfigError::MissingDatabaseUrl)?;
        let mut config = Self::new(url);
        if let Some(max) = env_number("DATABASE_MAX_CONNECTIONS")? {
            config = config.max_connections(u32::try_from(max).unwrap_or(u32::MAX));
        }
        if let Some(seconds) = env_number("DATABASE_ACQUIRE_TIMEOUT")? {
            config = config.acquire_timeout(Duration::from_secs(seconds));
        }
        if let Ok(session) = std::env::var("DATABASE_SESSION_URL") {
            config = config.transaction_pooler(session);
        }
        if let Ok(replicas) = std::env::var("DATABASE_REPLICA_URLS") {
            for url in replicas.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                config = config.read_replica(url);
            }
        }
        Ok(config)
    }

    /// Most connections the read pool opens (at least 1), and the writer
    /// pool too unless [`write_connections`](Self::write_connections) sizes
    /// it; each replica's pool opens as many. See the crate docs,
    /// "Connections", for the whole budget.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Most connections the writer pool (appends) opens, at least 1; the
    /// same as [`max_connections`](Self::max_connections) unless set.
    ///
    /// Appends have a pool of their own because its connections default
    /// to `SERIALIZABLE`: an append is then one autocommit statement, one
    /// round trip, instead of BEGIN, the call and COMMIT. Appends hold a
    /// connection only for that round trip, so a writer pool smaller than
    /// the read pool serves as many commands when the database is near.
    #[must_use]
    pub fn write_connections(mut self, n: u32) -> Self {
        self.write_connections = Some(n.max(1));
        self
    }

    /// Writes appends that are ready at the same moment, on streams that
    /// do not overlap, in one transaction: one round trip, one commit and
    /// one WAL flush for the lot, each append with its own version checks,
    /// idempotency key and result. Off by default.
    ///
    /// A batch is taken whenever a connection is free, so nothing waits
    /// for company: at low load each append goes alone, as without group
    /// commit. Every guarantee holds per append: all or nothing,
    /// `SERIALIZABLE`, the gap-safe order (a batch's events are one
    /// transaction's, in the order of its appends). An append refused for
    /// its versions fails alone; a batch that meets contention or a lock
    /// wait limit is written again one append at a time, so that what
    /// fails one append fails only that one. An unknown commit outcome is
    /// reported to every append of the batch.
    ///
    /// ```
    /// use eventcore_postgres::{GroupCommit, PostgresConfig};
    ///
    /// let config = PostgresConfig::new("postgres://localhost/app")
    ///     .write_connections(4)
    ///     .group_commit(GroupCommit::new().batches_in_flight(2));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn group_commit(mut self, group: crate::GroupCommit) -> Self {
        self.group_commit = Some(group);
        self
    }

    pub(crate) fn group_commit_setting(&self) -> Option<crate::GroupCommit> {
        self.group_commit
    }

    /// The writer pool's limit.
    pub(crate) fn writer_limit(&self) -> u32 {
        self.write_connections.unwrap_or(self.max_connections)
    }

    /// Connections the pool keeps open even when idle.
    #[must_use]
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// How long a call waits for a free connection before failing with `StoreError::Unavailable`.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long an unused connection stays open; `None` keeps it.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// A connection that sat unused in the pool this long is checked with a
    /// round trip before a call gets it (default 1 s); a dead one is closed
    /// and replaced, so that calls after an outage do not fail on it.
    ///
    /// Connections used more recently are handed out unchecked: under load
    /// that saves a round trip per call (two per command). If the server went
    /// away within this window, the call fails instead: with
    /// `StoreError::Unavailable` when the server said goodbye on the
    /// connection (a shutdown: nothing was written), or, for an append whose
    /// connection simply broke, with `StoreError::UnknownOutcome` (its
    /// statement may have reached the server). `Duration::ZERO` checks every
    /// connection every time.
    #[must_use]
    pub fn check_idle_after(mut self, idle: Duration) -> Self {
        self.check_idle_after = idle;
        self
    }

    /// The server-side limit on one statement; `None` for the server's default.
    #[must_use]
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The PostgreSQL schema holding EventCore's tables (default `public`).
    ///
    /// # Errors
    /// [`ConfigError::InvalidSchema`] unless the name is a plain identifier.
    pub fn schema(mut self, name: &str) -> Result<Self, ConfigError> {
        self.schema = SchemaName::new(name)?;
        Ok(self)
    }

    /// How often a caught-up subscription polls when no notification arrives.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long `read_all` waits for the transactions running when it was
    /// called to finish (default 1 s).
    ///
    /// The global order is delivered only below the oldest transaction still
    /// running anywhere on the server. Waiting for the transactions in flight
    /// at the call means a read returns everything committed before it (your
    /// own appends included); if one of them runs longer than this, the read
    /// returns the part of the order below it, and the rest comes later.
    #[must_use]
    pub fn in_flight_wait(mut self, wait: Duration) -> Self {
        self.in_flight_wait = wait;
        self
    }

    pub(crate) fn read_in_flight_wait(&self) -> Duration {
        self.in_flight_wait
    }

    /// How long idempotency keys are kept (default 24 hours,
    /// [`DEFAULT_IDEMPOTENCY_RETENTION`](eventcore::DEFAULT_IDEMPOTENCY_RETENTION)).
    ///
    /// A retry whose key lookup comes within this period after the first
    /// execution finds the first result; older keys are purged
    /// ([`PostgresEventStore::purge_idempotency_keys`](crate::PostgresEventStore::purge_idempotency_keys)),
    /// and a command retried after that runs again. Choose it longer than
    /// any client retries.
    #[must_use]
    pub fn idempotency_retention(mut self, retention: Duration) -> Self {
        self.key_retention = retention;
        self
    }

    pub(crate) fn key_retention(&self) -> Duration {
        self.key_retention
    }

    /// Reads stored events through `upcasters`, so every reader of the
    /// store sees them in their current shape, and refuses appends of
    /// outdated shapes (see [`eventcore::upcast`]). None by default.
    ///
    /// ```
    /// use eventcore::Upcasters;
    /// use eventcore_postgres::PostgresConfig;
    ///
    /// let upcasters = Upcasters::builder()
    ///     .step("MoneyDeposited", 1, |mut v| {
    ///         v["reference"] = serde_json::Value::Null;
    ///         Ok(v)
    ///     })
    ///     .build()?;
    /// let config = PostgresConfig::new("postgres://localhost/bank").upcasters(upcasters);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn upcasters(mut self, upcasters: eventcore::Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    pub(crate) fn configured_upcasters(&self) -> eventcore::Upcasters {
        self.upcasters.clone()
    }

    pub(crate) fn schema_name(&self) -> &SchemaName {
        &self.schema
    }

    pub(crate) fn subscription_poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Adds a streaming replica (hot standby) of the primary at `url`, for
    /// the store handles [`PostgresEventStore::replica`](crate::PostgresEventStore::replica)
    /// returns: their event reads (`read_all`, subscriptions, projection
    /// catch-up, stream pages, and command reads when given to an
    /// executor) go to the replica; appends, idempotency keys, snapshots
    /// saved, checkpoints, leases and notifications stay on the primary.
    /// Each replica gets a pool of its own, sized like the primary's and
    /// opened lazily (a replica that is down fails only the reads sent to it).
    ///
    /// ```
    /// use eventcore_postgres::PostgresConfig;
    ///
    /// let config = PostgresConfig::new("postgres://app:secret@primary/bank")
    ///     .read_replica("postgres://app:secret@replica-1/bank");
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    #[must_use]
    pub fn read_replica(mut self, url: impl Into<String>) -> Self {
        self.replica_urls.push(url.into());
        self
    }

    /// Declares that the URL given to [`new`](Self::new) is a transaction
    /// pooler (PgBouncer with `pool_mode = transaction`, or one like it)
    /// and that `session_url` reaches the same database with sessions of
    /// its own (directly, or through a session-mode pool).
    ///
    /// Appends, reads and snapshot loads go through the pooler, each in a
    /// transaction of its own (a pooler may hand every statement outside
    /// one to another server connection) and with unnamed statements
    /// (named prepared statements stay behind on the server connection
    /// that prepared them): BEGIN, the statement and COMMIT, two round
    /// trips more than directly. The statement timeout is set per
    /// transaction (`SET LOCAL`), since a pooler drops the `options`
    /// startup parameter. What needs a session goes to `session_url`:
    /// subscriptions' LISTEN, projection leases (session advisory locks:
    /// through a transaction pooler two runners would both lead),
    /// checkpoints, `initialize`, stream rows, idempotency keys, snapshot
    /// saves and the operator's queries.
    ///
    /// The pooler must let sqlx's startup parameters through: PgBouncer
    /// needs `ignore_startup_parameters = extra_float_digits,options`.
    /// Leadership through a pooler that was not declared is refused: see
    /// [`PostgresLeadership`](crate::PostgresLeadership).
    ///
    /// ```
    /// use eventcore_postgres::PostgresConfig;
    ///
    /// let config = PostgresConfig::new("postgres://app:secret@pgbouncer:6432/bank")
    ///     .transaction_pooler("postgres://app:secret@db:5432/bank");
    /// assert!(!format!("{config:?}").contains("secret"));
    /// ```
    #[must_use]
    pub fn transaction_pooler(mut self, session_url: impl Into<String>) -> Self {
        self.session_url = Some(session_url.into());
        self
    }

    /// Whether [`transaction_pooler`](Self::transaction_pooler) was declared.
    pub(crate) fn behind_transaction_pooler(&self) -> bool {
        self.session_url.is_some()
    }

    /// The options of the session connections: `session_url`'s when
    /// behind a transaction pooler, else the main URL's.
    pub(crate) fn session_pool_options(
        &self,
    ) -> Result<(PgPoolOptions, PgConnectOptions), ConfigError> {
        self.pool_options_for(self.session_url.as_deref().unwrap_or(&self.url))
    }

    /// The statement timeout, for pooled transactions (`SET LOCAL`).
    pub(crate) fn statement_timeout_setting(&self) -> Option<Duration> {
        self.statement_timeout
    }

    /// The options of connections through the transaction pooler: no
    /// `options` startup parameter (a pooler drops or refuses it) and no
    /// statement cache (a prepared statement lives on one server connection).
    pub(crate) fn pooled_pool_options(
        &self,
    ) -> Result<(PgPoolOptions, PgConnectOptions), ConfigError> {
        let (pool, _) = self.pool_options_for(&self.url)?;
        let connect = PgConnectOptions::from_str(&password_parameters_checked(&self.url)?)
            .map_err(|source| ConfigError::InvalidUrl { source })?
            .statement_cache_capacity(0);
        Ok((pool, connect))
    }

    /// The sqlx options of each configured replica, in order.
    pub(crate) fn replica_pool_options(
        &self,
    ) -> Result<Vec<(PgPoolOptions, PgConnectOptions)>, ConfigError> {
        self.replica_urls
            .iter()
            .map(|url| self.pool_options_for(url))
            .collect()
    }

    /// The options for the server at `url`, with these settings.
    fn pool_options_for(
        &self,
        url: &str,
    ) -> Result<(PgPoolOptions, PgConnectOptions), ConfigError> {
        if let Ok(parsed) = url::Url::parse(url)
            && !matches!(parsed.scheme(), "postgres" | "postgresql")
        {
            return Err(ConfigError::NotPostgres {
                scheme: parsed.scheme().to_owned(),
            });
        }
        let mut connect = PgConnectOptions::from_str(&password_parameters_checked(url)?)
            .map_err(|source| ConfigError::InvalidUrl { source })?;
        if let Some(timeout) = self.statement_timeout {
            connect = connect.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.min_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .test_before_acquire(false)
            .before_acquire(check_idle(self.check_idle_after));
        Ok((pool, connect))
    }
}

/// The URL with a `password` query parameter spelled in any case renamed
/// to `password`, which sqlx understands; any other parameter named like a
/// password is refused. sqlx logs a parameter it does not know, value
/// included, so neither may reach it.
fn password_parameters_checked(url: &str) -> Result<String, ConfigError> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // sqlx reports the malformed URL without repeating it.
        return Ok(url.to_owned());
    };
    let mut renamed = false;
    let mut pairs = Vec::new();
    for (key, value) in parsed.query_pairs() {
        let lower = key.to_ascii_lowercase();
        if lower == "password" && key != "password" {
            renamed = true;
            pairs.push(("password".to_owned(), value.into_owned()));
        } else if lower.contains("password") && key != "password" {
            return Err(ConfigError::UnknownSecretParameter {
                key: key.into_owned(),
            });
        } else {
            pairs.push((key.into_owned(), value.into_owned()));
        }
    }
    if !renamed {
        return Ok(url.to_owned());
    }
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(parsed.into())
}

/// What a `before_acquire` hook returns: whether to hand the connection out.
type Verdict<'c> = Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + 'c>>;

/// A `before_acquire` hook pinging connections idle for `after` or longer.
fn check_idle(
    after: Duration,
) -> impl for<'c> Fn(&'c mut PgConnection, PoolConnectionMetadata) -> Verdict<'c> + Send + Sync + 'static
{
    move |connection, meta| {
        Box::pin(async move {
            if meta.idle_for >= after {
                connection.ping().await?;
            }
            Ok(true)
        })
    }
}

fn env_number(variable: &'static str) -> Result<Option<u64>, ConfigError> {
    match std::env::var(variable) {
        Err(_) => Ok(None),
        Ok(value) => value
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::InvalidNumber { variable, value }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(SchemaName::new("bank_2").is_ok());
        for bad in ["", "2bank", "a\"b", "a;drop", "bank-x", &"x".repeat(64)] {
            assert!(SchemaName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_hides_the_password_only() {
        assert_eq!(
            redact("postgres://u:p%40ss@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("postgresql://h/db?user=u&password=s3cr3t&sslmode=require#frag"),
            "postgresql://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://u:a@h/db?SSLPassword=b&application_name=x%40y"),
            "postgres://u:***@h/db?SSLPassword=***&application_name=x%40y"
        );
        assert!(!redact("postgres://u:s3cr3t@[::1/db").contains("s3cr3t"));
    }

    #[test]
    fn every_schema_has_a_channel_postgres_accepts() {
        let short = SchemaName::new("bank").unwrap();
        assert_eq!(
            short.channel(),
            "eventcore_bank",
            "short names keep their channel"
        );
        let long_a = SchemaName::new(&"a".repeat(63)).unwrap();
        let long_b = SchemaName::new(&format!("{}b", "a".repeat(62))).unwrap();
        assert!(long_a.channel().len() <= 63);
        assert_ne!(long_a.channel(), long_b.channel());
        assert_eq!(long_a.channel(), long_a.channel());
    }
}
