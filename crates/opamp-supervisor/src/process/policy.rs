//! Restart back-off: how long to wait before restarting a crashed collector.

use std::time::Duration;

use crate::config::RestartBackoff;

/// Exponential back-off between restarts, bounded in delay and in number of restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubles with each further crash in a row.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Crashes in a row after which no restart is attempted; 0 disables restarts.
    pub max_restarts: u32,
    /// A process that ran at least this long resets the crash count.
    pub reset_after: Duration,
}

impl RestartPolicy {
    /// Never restart: an exit is reported and the manager stays stopped.
    pub fn disabled() -> Self {
        RestartPolicy {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            max_restarts: 0,
            reset_after: Duration::MAX,
        }
    }

    /// Delay before restart number `crashes_in_a_row` (1 for the first crash), or `None` when
    /// the crash budget is spent.
    pub fn delay(&self, crashes_in_a_row: u32) -> Option<Duration> {
        if crashes_in_a_row == 0 || crashes_in_a_row > self.max_restarts {
            return None;
        }
        let factor = 1u32.checked_shl(crashes_in_a_row - 1).unwrap_or(u32::MAX);
        Some(self.initial.saturating_mul(factor).min(self.max))
    }
}

impl From<&RestartBackoff> for RestartPolicy {
    fn from(config: &RestartBackoff) -> Self {
        RestartPolicy {
            initial: config.initial,
            max: config.max,
            max_restarts: config.max_restarts,
            reset_after: config.reset_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_until_the_cap_then_gives_up() {
        let p = RestartPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            max_restarts: 5,
            reset_after: Duration::from_secs(60),
        };
        let delays: Vec<_> = (1..=6).map(|n| p.delay(n)).collect();
        let ms = |v: u64| Some(Duration::from_millis(v));
        assert_eq!(
            delays,
            vec![ms(100), ms(200), ms(400), ms(500), ms(500), None]
        );
        assert_eq!(RestartPolicy::disabled().delay(1), None);
    }

    proptest! {
        #[test]
        fn delays_are_monotonic_and_bounded(
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            max_restarts in 0u32..200,
        ) {
            let p = RestartPolicy {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(initial_ms + extra_ms),
                max_restarts,
                reset_after: Duration::from_secs(1),
            };
            let mut previous = Duration::ZERO;
            for n in 1..=max_restarts {
                let d = p.delay(n).unwrap();
                prop_assert!(d >= previous && d <= p.max && d >= p.initial);
                previous = d;
            }
            prop_assert_eq!(p.delay(max_restarts + 1), None);
        }
    }
}
