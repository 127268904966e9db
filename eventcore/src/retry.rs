//! How the executor retries version conflicts: exponential backoff with jitter.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// When and how often a command is tried again after a version conflict or a
/// transient store failure. Business errors are never retried.
///
/// Delays grow exponentially from `base_delay`, doubling per retry up to
/// `max_delay`; with jitter (the default) each delay is stretched by a random
/// amount of up to 100%, so commands that collided do not collide again in
/// lockstep. Retrying stops after `max_attempts` attempts, or when the next
/// delay would take the execution past `time_budget`.
///
/// Defaults: 10 attempts, 2 ms base delay, 250 ms max delay, jitter on, 10 s budget.
///
/// ```
/// use std::time::Duration;
/// use eventcore::RetryPolicy;
///
/// let patient = RetryPolicy::default()
///     .with_max_attempts(20)
///     .with_max_delay(Duration::from_secs(1));
/// assert_eq!(patient.max_attempts(), 20);
/// assert_eq!(RetryPolicy::no_retries().max_attempts(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    time_budget: Option<Duration>,
    jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(250),
            time_budget: Some(Duration::from_secs(10)),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry: conflicts are returned to the caller at once.
    pub fn no_retries() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// Sets how many attempts an execution makes in all (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the delay before the first retry.
    #[must_use]
    pub fn with_base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Sets the longest delay between two attempts (before jitter).
    #[must_use]
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets the time after which no further retry starts; `None` for no limit.
    #[must_use]
    pub fn with_time_budget(mut self, budget: Option<Duration>) -> Self {
        self.time_budget = budget;
        self
    }

    /// Turns jitter on or off; off makes delays exactly exponential (useful in tests).
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Delay before the first retry.
    pub fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// Longest delay between attempts, before jitter.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Time after which no retry starts.
    pub fn time_budget(&self) -> Option<Duration> {
        self.time_budget
    }

    /// Whether delays are randomized.
    pub fn jitter(&self) -> bool {
        self.jitter
    }

    /// The delays before each retry, in order; ends when attempts run out.
    pub(crate) fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(retries);
        let builder = if self.jitter {
            builder.with_jitter()
        } else {
            builder
        };
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_and_stop_with_the_attempts() {
        let policy = RetryPolicy::default()
            .with_max_attempts(6)
            .with_base_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(50))
            .with_jitter(false);
        // backon multiplies with an f32 factor, so compare to the nearest millisecond.
        let delays: Vec<f64> = policy
            .delays()
            .map(|d| (d.as_secs_f64() * 1000.0).round())
            .collect();
        assert_eq!(delays, vec![10.0, 20.0, 40.0, 50.0, 50.0]);
    }

    #[test]
    fn jitter_stays_within_one_extra_delay() {
        let policy = RetryPolicy::default()
            .with_max_attempts(4)
            .with_base_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_secs(1));
        for (delay, base) in policy.delays().zip([10, 20, 40]) {
            let ms = delay.as_secs_f64() * 1000.0;
            assert!(
                ms >= f64::from(base) && ms <= f64::from(2 * base),
                "{ms} vs {base}"
            );
        }
    }

    #[test]
    fn no_retries_means_no_delays() {
        assert_eq!(RetryPolicy::no_retries().delays().count(), 0);
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
    }
}
