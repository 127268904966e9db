//! How the demo shows progress: a bar on a terminal, a line every second
//! otherwise (piped into a file or a CI log, a bar prints nothing useful).

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a line is printed when stdout is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Progress of one phase: `done` out of `total` (when known).
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
    printer: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Progress {
    /// Starts showing a phase; `detail` adds to each line (retries, lag, ...).
    pub fn start(
        phase: &'static str,
        unit: &'static str,
        total: Option<u64>,
        detail: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        if std::io::stdout().is_terminal() {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(&format!(
                        "{phase}: {{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
                None => ProgressBar::new_spinner().with_message(format!("{phase}: {unit}")),
            };
            return Self {
                bar: Some(bar),
                done,
                finished,
                printer: Arc::default(),
            };
        }
        let printer = tokio::spawn(print_lines(
            phase,
            unit,
            total,
            done.clone(),
            finished.clone(),
            Box::new(detail),
        ));
        Self {
            bar: None,
            done,
            finished,
            printer: Arc::new(std::sync::Mutex::new(Some(printer))),
        }
    }

    /// One more done.
    pub fn inc(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Sets how many are done.
    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Ends the phase: clears the bar, or prints the last line.
    pub async fn finish(self) {
        self.finished.store(true, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let printer = self
            .printer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(printer) = printer {
            let _ = printer.await;
        }
    }
}

/// Prints a line every second until the phase finishes, then a last one.
async fn print_lines(
    phase: &'static str,
    unit: &'static str,
    total: Option<u64>,
    done: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
    detail: Box<dyn Fn() -> String + Send + Sync>,
) {
    let started = Instant::now();
    loop {
        let last = finished.load(Ordering::Relaxed);
        let now = done.load(Ordering::Relaxed);
        let rate = now as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let of = total.map(|t| format!("/{t}")).unwrap_or_default();
        let detail = detail();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(", {detail}")
        };
        println!("progress: {phase}: {now}{of} {unit}, {rate:.0}/s{detail}");
        if last {
            return;
        }
        let deadline = Instant::now() + LINE_EVERY;
        while Instant::now() < deadline && !finished.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
