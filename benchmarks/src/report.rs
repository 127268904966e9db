//! What a run measured, and how it prints.

use std::{fmt, time::Duration};

use hdrhistogram::Histogram;

use crate::counting::StoreCounts;

/// Command latencies, recorded in microseconds (1 µs to 60 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    #[allow(clippy::expect_used, reason = "constant bounds, valid for every run")]
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("1 µs..60 s at 3 digits is valid"))
    }
}

impl Latencies {
    /// Records one command's latency (saturating at the histogram's top).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Adds another task's latencies.
    pub fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The latency at `quantile` (0.0..=1.0).
    pub fn quantile(&self, quantile: f64) -> Duration {
        Duration::from_micros(self.0.value_at_quantile(quantile))
    }
}

/// The figures of one timed run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What ran: e.g. `executor` or `raw sql`.
    pub runner: String,
    /// Commands that succeeded.
    pub commands: u64,
    /// Commands that failed after their retries.
    pub failed: u64,
    /// Events written by the successful commands.
    pub events: u64,
    /// Attempts beyond the first, summed over successful commands.
    pub retries: u64,
    /// How long the run took.
    pub elapsed: Duration,
    /// Latency of each successful command, retries included.
    pub latencies: Latencies,
    /// What the store answered (executor runs), or the raw baseline's own counts.
    pub store: StoreCounts,
    /// Database round trips per successful command, where counted.
    pub round_trips: Option<f64>,
    /// CPU time this process spent during the run.
    pub client_cpu: Option<Duration>,
    /// CPU time the PostgreSQL backends serving it spent, where readable.
    pub server_cpu: Option<Duration>,
}

impl RunReport {
    /// Successful commands per second.
    pub fn commands_per_second(&self) -> f64 {
        per_second(self.commands, self.elapsed)
    }

    /// Events written per second.
    pub fn events_per_second(&self) -> f64 {
        per_second(self.events, self.elapsed)
    }

    /// CPU microseconds per successful command.
    fn per_command(&self, cpu: Option<Duration>) -> String {
        match cpu {
            Some(cpu) if self.commands > 0 => {
                format!("{:.0}", cpu.as_secs_f64() * 1e6 / self.commands as f64)
            }
            _ => "-".to_owned(),
        }
    }

    /// Retries per successful command.
    pub fn retries_per_command(&self) -> f64 {
        if self.commands == 0 {
            0.0
        } else {
            self.retries as f64 / self.commands as f64
        }
    }

    /// Adds another run of the same kind (a later round).
    pub fn absorb(&mut self, other: &Self) {
        self.commands += other.commands;
        self.failed += other.failed;
        self.events += other.events;
        self.retries += other.retries;
        self.elapsed += other.elapsed;
        self.latencies.merge(&other.latencies);
        let (a, b) = (&mut self.store, &other.store);
        a.reads += b.reads;
        a.appends += b.appends;
        a.conflicts += b.conflicts;
        a.serialization_failures += b.serialization_failures;
        a.other_errors += b.other_errors;
        a.snapshot_calls += b.snapshot_calls;
        self.round_trips = match (self.round_trips, other.round_trips) {
            (Some(x), Some(y)) => Some((x + y) / 2.0),
            (x, y) => x.or(y),
        };
        let add = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.client_cpu = add(self.client_cpu, other.client_cpu);
        self.server_cpu = add(self.server_cpu, other.server_cpu);
    }

    /// The header of [`RunReport::row`]'s table.
    pub const HEADER: &'static str = "| workload | contention | tasks | runner | cmds/s | events/s | p50 ms | p95 ms | p99 ms | retries/cmd | conflicts | ser. failures | failed | round trips/cmd | client CPU µs/cmd | server CPU µs/cmd |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

    /// One markdown table row, prefixed by the workload's own columns.
    pub fn row(&self, workload: &str, contention: &str, tasks: usize) -> String {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        format!(
            "| {workload} | {contention} | {tasks} | {} | {:.0} | {:.0} | {} | {} | {} | {:.3} | {} | {} | {} | {} | {} | {} |",
            self.runner,
            self.commands_per_second(),
            self.events_per_second(),
            ms(self.latencies.quantile(0.50)),
            ms(self.latencies.quantile(0.95)),
            ms(self.latencies.quantile(0.99)),
            self.retries_per_command(),
            self.store.conflicts,
            self.store.serialization_failures,
            self.failed,
            self.round_trips
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            self.per_command(self.client_cpu),
            self.per_command(self.server_cpu),
        )
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} commands ({:.0}/s, {:.0} events/s), p50 {:?} p95 {:?} p99 {:?}, {:.3} retries/cmd, {} conflicts, {} serialization failures, {} failed, CPU per command: client {} µs, server {} µs",
            self.runner,
            self.commands,
            self.commands_per_second(),
            self.events_per_second(),
            self.latencies.quantile(0.50),
            self.latencies.quantile(0.95),
            self.latencies.quantile(0.99),
            self.retries_per_command(),
            self.store.conflicts,
            self.store.serialization_failures,
            self.failed,
            self.per_command(self.client_cpu),
            self.per_command(self.server_cpu),
        )
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds == 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}
