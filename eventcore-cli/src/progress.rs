//! Progress of long operations: a bar on a terminal, a line a second otherwise.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports a count of events done (of a total, when known) on stderr.
pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// Progress of `what` (for example "exported"), towards `total` when known.
    pub fn new(what: &'static str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
            let template = if total.is_some() {
                "{bar:40} {pos}/{len} events {msg} ({per_sec}, eta {eta})"
            } else {
                "{spinner} {pos} events {msg} ({per_sec})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_message(what);
            bar
        });
        let now = Instant::now();
        Self {
            what,
            bar,
            started: now,
            last_line: now,
        }
    }

    /// `done` events are done so far.
    pub fn update(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.last_line.elapsed() >= Duration::from_secs(1) {
            self.last_line = Instant::now();
            eprintln!(
                "{} {done} events ({:.0}/s)",
                self.what,
                rate(done, self.started)
            );
        }
    }

    /// The operation ended with `done` events.
    pub fn finish(self, done: u64) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        eprintln!(
            "{} {done} events in {:.1} s ({:.0}/s)",
            self.what,
            self.started.elapsed().as_secs_f64(),
            rate(done, self.started)
        );
    }
}

fn rate(done: u64, started: Instant) -> f64 {
    let seconds = started.elapsed().as_secs_f64();
    if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    }
}
