//! When a child that exited is started again: exponential backoff, reset
//! once a run has stayed healthy for a while.

use std::time::Duration;

/// How the lab restarts a child that exits while the lab is up.
///
/// The first restart waits `initial_delay`; each further crash in a row
/// doubles the wait, up to `max_delay`. A child that crashes over and over
/// is retried at `max_delay` for as long as the lab runs: it is never given
/// up. A run that stayed healthy for `stable_after` ends the row, so the
/// next crash waits `initial_delay` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart of a row (0.5 s).
    pub initial_delay: Duration,
    /// Longest wait between restarts (30 s).
    pub max_delay: Duration,
    /// How long a restarted child must stay healthy for its next crash to
    /// count as a first one again (60 s).
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

/// The restart delays of one child.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    policy: RestartPolicy,
    /// Crashes since the last run that stayed healthy long enough.
    in_a_row: u32,
}

impl Backoff {
    pub(super) fn new(policy: RestartPolicy) -> Backoff {
        Backoff {
            policy,
            in_a_row: 0,
        }
    }

    /// The wait before the next start, after a run that was healthy for
    /// `healthy_for` (`None`: it never became healthy, or never started).
    pub(super) fn next_delay(&mut self, healthy_for: Option<Duration>) -> Duration {
        if healthy_for.is_some_and(|d| d >= self.policy.stable_after) {
            self.in_a_row = 0;
        }
        let factor = 2u32.saturating_pow(self.in_a_row);
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.policy
            .initial_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_maximum_and_stay_there() {
        let mut b = Backoff::new(RestartPolicy::default());
        let delays: Vec<u128> = (0..10).map(|_| b.next_delay(None).as_millis()).collect();
        assert_eq!(
            delays,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        // A long crash loop neither overflows nor gives up.
        for _ in 0..100 {
            assert_eq!(b.next_delay(Some(MS)), Duration::from_secs(30));
        }
    }

    #[test]
    fn a_run_healthy_long_enough_resets_the_row() {
        let policy = RestartPolicy::default();
        let mut b = Backoff::new(policy);
        assert_eq!(b.next_delay(None), 500 * MS);
        assert_eq!(b.next_delay(Some(Duration::from_secs(59))), 1000 * MS);
        assert_eq!(b.next_delay(Some(policy.stable_after)), 500 * MS);
        assert_eq!(b.next_delay(None), 1000 * MS);
    }
}
