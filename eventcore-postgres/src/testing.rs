//! Test servers: isolated stores for tests, on whatever PostgreSQL the
//! machine offers (feature `testing`).
//!
//! [`test_database_url`] picks the server once per process:
//! 1. `DATABASE_URL`, when set, used as it is;
//! 2. otherwise a server on `127.0.0.1:5432` (user `postgres`, no password),
//!    in whose database `eventcore_test` (created when missing) tests work;
//! 3. otherwise a [`ThrowawayCluster`] started from the installed PostgreSQL
//!    binaries and stopped when the process exits.
//!
//! `EVENTCORE_TEST_SERVER=throwaway` skips the first two. When none of them
//! works the error says what to install or set; tests never skip silently.
//!
//! Every [`fresh_store`] lives in a schema of its own, so tests run in
//! parallel and never see each other's data.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = eventcore_postgres::testing::fresh_store().await?;
//! // ... run the test against `store` ...
//! # Ok(())
//! # }
//! ```

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};
use tokio::{process::Command, sync::OnceCell};

use crate::{ConnectError, InitializeError, PostgresConfig, PostgresEventStore};

const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
const TEST_DATABASE: &str = "eventcore_test";
const SCHEMA_PREFIX: &str = "eventcore_t_";
/// Test schemas older than this are dropped when a process first asks for a database.
const STALE_AFTER: Duration = Duration::from_secs(3600);
const INSTALL_HINT: &str = "Set DATABASE_URL to a database the tests may create schemas in, \
    run a server on 127.0.0.1:5432 that user postgres may use without a password, or install \
    the PostgreSQL server binaries (Debian: `apt-get install postgresql`) so the tests can \
    start a throwaway cluster";

/// No PostgreSQL server could be found or started for the tests.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// Neither `DATABASE_URL`, nor a local server, nor a throwaway cluster worked.
    #[error("no PostgreSQL for the tests: {reason}. {INSTALL_HINT}")]
    NoServer {
        /// What was tried and why it failed.
        reason: String,
    },
    /// A PostgreSQL program failed.
    #[error("`{program}` failed: {output}")]
    Program {
        /// The program and its first arguments.
        program: String,
        /// What it printed.
        output: String,
    },
    /// A program could not be run at all.
    #[error("could not run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused a statement the test setup needs.
    #[error("test database setup failed: {source}")]
    Database {
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// The store could not connect.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The store's schema could not be created.
    #[error(transparent)]
    Initialize(#[from] InitializeError),
}

static DATABASE: OnceCell<String> = OnceCell::const_new();
static PROCESS_CLUSTER: OnceCell<ThrowawayCluster> = OnceCell::const_new();

/// The URL of the database tests create their schemas in, chosen once per process.
///
/// # Errors
/// [`TestServerError`] saying what to install or set when no server can be used.
pub async fn test_database_url() -> Result<String, TestServerError> {
    DATABASE.get_or_try_init(prepare_database).await.cloned()
}

async fn prepare_database() -> Result<String, TestServerError> {
    let forced = std::env::var("EVENTCORE_TEST_SERVER").is_ok_and(|v| v == "throwaway");
    if !forced && let Ok(url) = std::env::var("DATABASE_URL") {
        drop_stale_schemas(&url).await?;
        drop_schemas_at_exit(&url).await;
        return Ok(url);
    }
    let local = if forced {
        Err("EVENTCORE_TEST_SERVER=throwaway".to_owned())
    } else {
        probe(&format!("{LOCAL_SERVER}/postgres")).await
    };
    let server = match local {
        Ok(()) => LOCAL_SERVER.to_owned(),
        Err(local_failure) => {
            let cluster = PROCESS_CLUSTER
                .get_or_try_init(|| async {
                    let cluster = ThrowawayCluster::start().await?;
                    cluster.stop_when_process_exits()?;
                    Ok::<_, TestServerError>(cluster)
                })
                .await
                .map_err(|e| TestServerError::NoServer {
                    reason: format!(
                        "DATABASE_URL is not set, {LOCAL_SERVER} is not usable ({local_failure}), \
                         and no throwaway cluster could be started ({e})"
                    ),
                })?;
            cluster.server_url()
        }
    };
    let url = create_test_database(&server).await?;
    drop_stale_schemas(&url).await?;
    drop_schemas_at_exit(&url).await;
    Ok(url)
}

async fn probe(url: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(3), PgConnection::connect(url)).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no answer within 3 s".to_owned()),
    }
}

async fn create_test_database(server: &str) -> Result<String, TestServerError> {
    let db = |source| TestServerError::Database { source };
    let mut conn = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .map_err(db)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(TEST_DATABASE)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
    if !exists {
        // Another test process may create it at the same moment; either way it exists after.
        let _ = conn
            .execute(AssertSqlSafe(format!("CREATE DATABASE {TEST_DATABASE}")))
            .await;
    }
    let _ = conn.close().await;
    Ok(format!("{server}/{TEST_DATABASE}"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Drops test schemas left behind by earlier runs (an hour old or more).
async fn drop_stale_schemas(url: &str) -> Result<(), TestServerError> {
    let db = |source| TestServerError::Database { source };
    let mut conn = PgConnection::connect(url).await.map_err(db)?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
            .bind(format!("{SCHEMA_PREFIX}%"))
            .fetch_all(&mut conn)
            .await
            .map_err(db)?;
    let cutoff = now_secs().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created: Option<u64> = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse().ok());
        if created.is_some_and(|secs| secs < cutoff) {
            // Names come from pg_namespace and match our own pattern: no quote inside.
            let _ = conn
                .execute(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .await;
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// A schema name no other test uses: `eventcore_t_<time>_<run>_<id>`,
/// where `<run>` is this process's run id (see [`test_database_url`]:
/// the schemas of a run are dropped when its process exits).
pub fn fresh_schema_name() -> String {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let tail = unique.get(unique.len().saturating_sub(12)..).unwrap_or("");
    format!("{SCHEMA_PREFIX}{}_{}_{tail}", now_secs(), run_id())
}

/// This process's run id: random, the same for all its schemas.
fn run_id() -> &'static str {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        // The last hex digits of a v7 id are random.
        let id = uuid::Uuid::now_v7().simple().to_string();
        format!("r{}", id.get(id.len().saturating_sub(8)..).unwrap_or("0"))
    })
}

/// Drops this run's schemas from the database at `url` once this process
/// has exited, however it exits: a watcher process waits for it and runs
/// `psql` (found with the PostgreSQL binaries; without one the schemas
/// stay until a later run's hourly sweep). The URL travels in the
/// watcher's environment, never on a command line others can read.
async fn drop_schemas_at_exit(url: &str) {
    let Ok(bin_dir) = find_bin_dir().await else {
        return;
    };
    let psql = bin_dir.join("psql");
    if !psql.is_file() {
        return;
    }
    let pattern = format!("{SCHEMA_PREFIX}%_{}_%", run_id());
    // One transaction per schema: a binary with hundreds of stores has
    // more objects than one transaction can lock (max_locks_per_transaction),
    // and a single transaction would fail, dropping none, after filling the
    // server's lock table for every other session.
    let sql = format!(
        "DO $$DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace \
         WHERE nspname LIKE '{pattern}' LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); \
         COMMIT; END LOOP; END$$"
    );
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         \"$EVENTCORE_PSQL\" -X -q -d \"$EVENTCORE_CLEANUP_URL\" -c \"$EVENTCORE_CLEANUP_SQL\" \
         >/dev/null 2>&1",
        pid = std::process::id(),
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", &script])
        .env("EVENTCORE_PSQL", &psql)
        .env("EVENTCORE_CLEANUP_URL", url)
        .env("EVENTCORE_CLEANUP_SQL", sql)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Settings for a store in a fresh schema of the test database, not yet initialized.
///
/// # Errors
/// [`TestServerError`] when no server can be used.
pub async fn fresh_config() -> Result<PostgresConfig, TestServerError> {
    let config = PostgresConfig::new(test_database_url().await?)
        .max_connections(8)
        .poll_interval(Duration::from_millis(50));
    // Our own names are valid identifiers.
    config
        .schema(&fresh_schema_name())
        .map_err(|e| TestServerError::Connect(ConnectError::Config(e)))
}

/// An initialized store in a fresh schema of its own.
///
/// # Errors
/// [`TestServerError`] when no server can be used or the schema cannot be created.
pub async fn fresh_store() -> Result<PostgresEventStore, TestServerError> {
    store_with(fresh_config().await?).await
}

/// An initialized store with `config`.
///
/// # Errors
/// [`TestServerError`] when the store cannot connect or initialize.
pub async fn store_with(config: PostgresConfig) -> Result<PostgresEventStore, TestServerError> {
    let store = PostgresEventStore::new(config).await?;
    store.initialize().await?;
    Ok(store)
}

/// A PostgreSQL cluster of its own, in a temporary directory, listening on
/// a free loopback port; stopped and deleted when dropped.
///
/// For tests that must stop or restart the server. As root, the programs run
/// as user `postgres` (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub struct ThrowawayCluster {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    run_as: Option<String>,
}

impl ThrowawayCluster {
    /// Creates the cluster (`initdb`) and starts it.
    ///
    /// # Errors
    /// [`TestServerError`] when no PostgreSQL binaries are found or they fail.
    pub async fn start() -> Result<Self, TestServerError> {
        let bin_dir = find_bin_dir().await?;
        let run_as = if running_as_root().await {
            Some("postgres".to_owned())
        } else {
            None
        };
        let port = free_port()?;
        let data_dir =
            std::env::temp_dir().join(format!("eventcore-pg-{}", uuid::Uuid::now_v7().simple()));
        let cluster = Self {
            bin_dir,
            data_dir,
            port,
            run_as,
        };
        let data_dir = cluster.data_dir_arg();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &data_dir,
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
            )
            .await?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// Starts a streaming replica (hot standby) of this cluster: a base
    /// backup (`pg_basebackup -R -X stream`) into a directory of its own,
    /// started on a free loopback port; stopped and deleted when dropped.
    ///
    /// # Errors
    /// [`TestServerError`] when the backup or the start fails.
    pub async fn start_replica(&self) -> Result<Self, TestServerError> {
        let replica = Self {
            bin_dir: self.bin_dir.clone(),
            data_dir: std::env::temp_dir().join(format!(
                "eventcore-pg-replica-{}",
                uuid::Uuid::now_v7().simple()
            )),
            port: free_port()?,
            run_as: self.run_as.clone(),
        };
        let data_dir = replica.data_dir_arg();
        let primary_port = self.port.to_string();
        replica
            .run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary_port,
                    "-U",
                    "postgres",
                    "-D",
                    &data_dir,
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "--no-sync",
                ],
            )
            .await?;
        replica.start_server().await?;
        Ok(replica)
    }

    /// Pauses WAL replay on this replica (`pg_wal_replay_pause()`): it
    /// stops seeing the primary's commits until [`resume_replay`](Self::resume_replay).
    ///
    /// # Errors
    /// [`TestServerError`] when `psql` fails (on a primary, for one).
    pub async fn pause_replay(&self) -> Result<(), TestServerError> {
        self.psql("SELECT pg_wal_replay_pause()").await.map(drop)
    }

    /// Resumes WAL replay after [`pause_replay`](Self::pause_replay).
    ///
    /// # Errors
    /// [`TestServerError`] when `psql` fails.
    pub async fn resume_replay(&self) -> Result<(), TestServerError> {
        self.psql("SELECT pg_wal_replay_resume()").await.map(drop)
    }

    /// The server's URL without a database name (append `/dbname`).
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("{}/postgres", self.server_url())
    }

    /// Stops the server, disconnecting every client (`pg_ctl stop -m fast`).
    ///
    /// # Errors
    /// [`TestServerError`] when `pg_ctl` fails.
    pub async fn stop(&self) -> Result<(), TestServerError> {
        let data_dir = self.data_dir_arg();
        self.run("pg_ctl", &["-D", &data_dir, "-m", "fast", "-w", "stop"])
            .await
    }

    /// Kills the server the way a crash or power loss would
    /// (`pg_ctl stop -m immediate`): no shutdown checkpoint, every client
    /// cut off; the next start runs crash recovery.
    ///
    /// # Errors
    /// [`TestServerError`] when `pg_ctl` fails.
    pub async fn crash(&self) -> Result<(), TestServerError> {
        let data_dir = self.data_dir_arg();
        self.run(
            "pg_ctl",
            &["-D", &data_dir, "-m", "immediate", "-w", "stop"],
        )
        .await
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port.
    ///
    /// # Errors
    /// [`TestServerError`] when `pg_ctl` fails.
    pub async fn start_server(&self) -> Result<(), TestServerError> {
        let data_dir = self.data_dir_arg();
        let log = self.data_dir.join("server.log");
        let log = log.to_string_lossy();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='' \
             -c fsync=off -c max_connections=200",
            self.port
        );
        self.run(
            "pg_ctl",
            &["-D", &data_dir, "-l", &log, "-o", &options, "-w", "start"],
        )
        .await
    }

    /// Runs `sql` with the cluster's own `psql`, in another process, on
    /// database `postgres`: what an operator's session does. Returns what
    /// it printed.
    ///
    /// # Errors
    /// [`TestServerError`] when `psql` cannot run or the statement fails.
    pub async fn psql(&self, sql: &str) -> Result<String, TestServerError> {
        let path = self.bin_dir.join("psql");
        let output = Command::new(&path)
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| TestServerError::Spawn {
                program: path.to_string_lossy().into_owned(),
                source,
            })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(TestServerError::Program {
                program: "psql -c".to_owned(),
                output: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    fn data_dir_arg(&self) -> String {
        self.data_dir.to_string_lossy().into_owned()
    }

    /// Leaves the cluster running until this process exits, then stops and
    /// deletes it (a watcher process does it: statics are never dropped).
    fn stop_when_process_exits(&self) -> Result<(), TestServerError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = self.as_user(&format!(
            "{} -D {} -m immediate stop",
            pg_ctl.to_string_lossy(),
            self.data_dir_arg()
        ));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.data_dir_arg(),
        );
        std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| TestServerError::Spawn {
                program: "sh".to_owned(),
                source,
            })?;
        Ok(())
    }

    fn as_user(&self, command: &str) -> String {
        match &self.run_as {
            Some(user) => format!("runuser -u {user} -- {command}"),
            None => command.to_owned(),
        }
    }

    async fn run(&self, program: &str, args: &[&str]) -> Result<(), TestServerError> {
        let path = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // pg_ctl start leaves the server attached to these pipes unless they are closed.
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| TestServerError::Spawn {
                program: path.to_string_lossy().into_owned(),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(TestServerError::Program {
                program: format!("{program} {}", args.first().copied().unwrap_or_default()),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            })
        }
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&pg_ctl);
                c
            }
            None => std::process::Command::new(&pg_ctl),
        };
        let _ = command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A PgBouncer in `pool_mode = transaction` in front of a
/// [`ThrowawayCluster`], on a free loopback port; stopped and its
/// directory deleted when dropped. Needs the `pgbouncer` program (Debian:
/// `apt-get install pgbouncer`; `.ci/run` installs it); as root it runs
/// as user `postgres` (PgBouncer refuses to run as root).
///
/// It ignores the `extra_float_digits` and `options` startup parameters
/// (`ignore_startup_parameters`), as a pooler in front of sqlx clients
/// must: see [`PostgresConfig::transaction_pooler`](crate::PostgresConfig::transaction_pooler).
#[derive(Debug)]
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: std::process::Child,
}

impl PgBouncer {
    /// Starts a PgBouncer for `cluster`, `pool_size` server connections per
    /// database and user.
    ///
    /// # Errors
    /// [`TestServerError`] when `pgbouncer` is missing or does not start.
    pub async fn start(
        cluster: &ThrowawayCluster,
        pool_size: u32,
    ) -> Result<Self, TestServerError> {
        let dir = std::env::temp_dir().join(format!(
            "eventcore-pgbouncer-{}",
            uuid::Uuid::now_v7().simple()
        ));
        let io = |source| TestServerError::Spawn {
            program: format!("writing {}", dir.display()),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let port = free_port()?;
        let config = format!(
            "[databases]\n* = host=127.0.0.1 port={target}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {dir}/userlist.txt\npool_mode = transaction\n\
             max_client_conn = 1000\ndefault_pool_size = {pool_size}\nserver_round_robin = 1\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
            target = cluster.port,
            dir = dir.display(),
        );
        std::fs::write(dir.join("pgbouncer.ini"), config).map_err(io)?;
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").map_err(io)?;
        let program = pgbouncer_program().await?;
        let mut command = match &cluster.run_as {
            Some(user) => {
                let chown = std::process::Command::new("chown")
                    .args(["-R", user])
                    .arg(&dir)
                    .status()
                    .map_err(|source| TestServerError::Spawn {
                        program: "chown".to_owned(),
                        source,
                    })?;
                if !chown.success() {
                    return Err(TestServerError::Program {
                        program: "chown".to_owned(),
                        output: format!("exit {chown}"),
                    });
                }
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--", &program]);
                c
            }
            None => std::process::Command::new(&program),
        };
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| TestServerError::Spawn {
                program: format!("{program} (Debian: apt-get install pgbouncer)"),
                source,
            })?;
        let bouncer = Self { dir, port, child };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(bouncer);
            }
            if std::time::Instant::now() >= deadline {
                let log =
                    std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
                return Err(TestServerError::Program {
                    program: "pgbouncer".to_owned(),
                    output: format!("not listening on 127.0.0.1:{port} after 20 s: {log}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The URL of database `postgres` through the pooler.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// The `pgbouncer` program: `PGBOUNCER`, on `PATH`, or Debian's
/// `/usr/sbin/pgbouncer`; installed with `apt-get` when missing and this
/// process may (root, `apt-get` present), once per process.
async fn pgbouncer_program() -> Result<String, TestServerError> {
    static INSTALLED: OnceCell<Result<String, String>> = OnceCell::const_new();
    let found = INSTALLED
        .get_or_init(|| async {
            if let Ok(program) = std::env::var("PGBOUNCER") {
                return Ok(program);
            }
            let locate = || async {
                for candidate in ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"] {
                    if Path::new(candidate).is_file() {
                        return Some(candidate.to_owned());
                    }
                }
                let which = Command::new("which").arg("pgbouncer").output().await.ok()?;
                which
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&which.stdout).trim().to_owned())
            };
            if let Some(program) = locate().await {
                return Ok(program);
            }
            if !running_as_root().await {
                return Err(
                    "pgbouncer is not installed (Debian: apt-get install pgbouncer)".to_owned(),
                );
            }
            let installed = Command::new("apt-get")
                .args(["install", "-y", "-q", "pgbouncer"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| {
                    format!("pgbouncer is not installed and apt-get could not run: {e}")
                })?;
            if !installed.status.success() {
                return Err(format!(
                    "pgbouncer is not installed and `apt-get install pgbouncer` failed: {}",
                    String::from_utf8_lossy(&installed.stderr)
                ));
            }
            locate()
                .await
                .ok_or_else(|| "apt-get installed pgbouncer, but it is not found".to_owned())
        })
        .await;
    found.clone().map_err(|output| TestServerError::Program {
        program: "pgbouncer".to_owned(),
        output,
    })
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // `runuser` may stay between us and PgBouncer: stop PgBouncer itself.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory with `initdb` and `pg_ctl`: `PG_BIN_DIR`, `pg_config --bindir`,
/// or the newest `/usr/lib/postgresql/*/bin`.
async fn find_bin_dir() -> Result<PathBuf, TestServerError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output().await {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| TestServerError::NoServer {
            reason: "no initdb/pg_ctl found (looked at PG_BIN_DIR, `pg_config --bindir` and \
                     /usr/lib/postgresql/*/bin)"
                .to_owned(),
        })
}

async fn running_as_root() -> bool {
    match Command::new("id").arg("-u").output().await {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim() == "0",
        Err(_) => false,
    }
}

fn free_port() -> Result<u16, TestServerError> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|source| TestServerError::Spawn {
            program: "bind 127.0.0.1:0".to_owned(),
            source,
        })?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|source| TestServerError::Spawn {
            program: "bind 127.0.0.1:0".to_owned(),
            source,
        })
}
