//! CPU time spent by this process and by the PostgreSQL backends serving
//! it, read from `/proc/<pid>/stat` (Linux; the server on this machine).
//!
//! Wall-clock rates on a shared 2-core machine move with whatever else
//! runs; the CPU a command costs does not, so builds compare by it. The
//! backends are found through `pg_stat_activity` by the `application_name`
//! the load generator gives its connections.

use std::{collections::HashMap, sync::OnceLock, time::Duration};

/// Clock ticks per second of `/proc`'s CPU counters (`getconf CLK_TCK`,
/// 100 on Linux almost everywhere).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &u64| *t > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time of process `pid` (`self` for this one), if
/// `/proc` shows it.
pub fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, in parentheses).
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_micros(
        ticks * 1_000_000 / ticks_per_second(),
    ))
}

/// CPU time so far of each backend of a server on this machine, by pid.
#[derive(Debug, Clone, Default)]
pub struct Backends(HashMap<i32, Duration>);

impl Backends {
    /// The backends whose `application_name` is `name`, and their CPU time.
    ///
    /// # Errors
    /// When `pg_stat_activity` cannot be read.
    pub async fn sample(pool: &sqlx::PgPool, name: &str) -> Result<Self, sqlx::Error> {
        let pids: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
                .bind(name)
                .fetch_all(pool)
                .await?;
        Ok(Self(
            pids.into_iter()
                .filter_map(|pid| process_cpu(&pid.to_string()).map(|cpu| (pid, cpu)))
                .collect(),
        ))
    }

    /// Whether any backend's CPU could be read (the server is on this machine).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CPU the backends spent since `earlier` (a backend that started
    /// since counts whole; one that ended is lost, which a pool that keeps
    /// its connections makes rare).
    pub fn since(&self, earlier: &Self) -> Duration {
        self.0
            .iter()
            .map(|(pid, now)| now.saturating_sub(earlier.0.get(pid).copied().unwrap_or_default()))
            .sum()
    }
}
