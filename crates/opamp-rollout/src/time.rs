//! A serialisable point in time for the engine.
//!
//! The engine never reads the clock: callers pass `now`. Persisted rollouts must compare deadlines
//! across restarts, so time is wall-clock milliseconds since the Unix epoch rather than
//! [`std::time::Instant`], which means nothing in another process.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch itself; handy as the start of a simulated clock.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from milliseconds since the Unix epoch.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Converts a [`SystemTime`]; times before the epoch clamp to the epoch and times past
    /// `u64::MAX` milliseconds clamp to the maximum.
    #[must_use]
    pub fn from_system_time(time: SystemTime) -> Self {
        let millis = time.duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
        Timestamp(millis)
    }

    /// The same instant as a [`SystemTime`].
    #[must_use]
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// This time plus `duration`, saturating instead of overflowing so that a huge configured
    /// timeout means "never" rather than a panic.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// This time seen from `now`, in the largest whole unit: `12s ago`, `5m ago`, `3h ago`,
    /// `3d ago`, `in 40s`; `never` for the epoch (the "not yet" value of stored times).
    ///
    /// ```
    /// use opamp_rollout::time::Timestamp;
    ///
    /// let now = Timestamp::from_millis(100_000);
    /// assert_eq!(Timestamp::from_millis(88_000).relative_to(now), "12s ago");
    /// assert_eq!(Timestamp::from_millis(140_000).relative_to(now), "in 40s");
    /// ```
    #[must_use]
    pub fn relative_to(self, now: Timestamp) -> String {
        if self == Timestamp::EPOCH {
            return "never".to_owned();
        }
        let (seconds, future) = if self.0 > now.0 {
            ((self.0 - now.0) / 1000, true)
        } else {
            ((now.0 - self.0) / 1000, false)
        };
        let amount = match seconds {
            0..60 => format!("{seconds}s"),
            60..3600 => format!("{}m", seconds / 60),
            3600..172_800 => format!("{}h", seconds / 3600),
            _ => format!("{}d", seconds / 86_400),
        };
        if future {
            format!("in {amount}")
        } else {
            format!("{amount} ago")
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Timestamp::from_system_time(time)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_pick_the_largest_whole_unit() {
        let now = Timestamp::from_millis(1_000_000_000);
        let at = |millis: u64| Timestamp::from_millis(millis).relative_to(now);
        assert_eq!(at(1_000_000_000 - 12_000), "12s ago");
        assert_eq!(at(1_000_000_000 - 5 * 60_000 - 1), "5m ago");
        assert_eq!(at(1_000_000_000 - 3 * 3_600_000), "3h ago");
        assert_eq!(at(1_000_000_000 - 3 * 86_400_000), "3d ago");
        assert_eq!(at(1_000_000_000 + 40_000), "in 40s");
        assert_eq!(at(0), "never");
    }

    #[test]
    fn system_time_round_trips_at_millisecond_precision() {
        let time = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(Timestamp::from(time).to_system_time(), time);
        assert_eq!(Timestamp::from(time).as_millis(), 1_764_000_000_123);
    }

    #[test]
    fn adding_a_huge_duration_saturates() {
        let t = Timestamp::from_millis(5);
        assert_eq!(t.saturating_add(Duration::MAX).as_millis(), u64::MAX);
        assert_eq!(
            Timestamp::from_millis(3).saturating_since(t),
            Duration::ZERO
        );
    }
}
