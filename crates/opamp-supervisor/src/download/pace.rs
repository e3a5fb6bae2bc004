//! The clocks a download runs against: the idle timeout, the total deadline and the
//! minimum-throughput rule.
//!
//! A body that trickles (one byte every 20 s) never trips the idle timeout, so the downloader
//! also measures bytes per window and gives up when a whole window stays below the minimum, and
//! gives up on any download that outlives the total deadline.

use std::time::{Duration, Instant};

use super::DownloadLimits;

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
    /// The whole download took longer than the total deadline.
    Deadline(Duration),
    /// A whole window brought fewer bytes than the minimum throughput asks for.
    TooSlow {
        /// Bytes per second measured over the window.
        measured: u64,
        /// The minimum in force.
        minimum: u64,
    },
}

/// Tracks one download attempt against its limits.
#[derive(Debug)]
pub(super) struct Pace {
    idle: Duration,
    total: Duration,
    deadline: Instant,
    minimum: u64,
    window: Duration,
    window_start: Instant,
    window_bytes: u64,
    last_activity: Instant,
}

impl Pace {
    /// Starts all clocks at `now`.
    pub(super) fn start(limits: &DownloadLimits, now: Instant) -> Self {
        Self {
            idle: limits.idle_timeout,
            total: limits.total_timeout,
            deadline: now + limits.total_timeout,
            minimum: limits.min_bytes_per_second,
            // A zero window would measure nothing; one second is the smallest meaningful one.
            window: limits.throughput_window.max(Duration::from_secs(1)),
            window_start: now,
            window_bytes: 0,
            last_activity: now,
        }
    }

    /// How long to wait for the next chunk before [`Self::woke`] must judge.
    pub(super) fn wait(&self, now: Instant) -> Duration {
        let idle_left = (self.last_activity + self.idle).saturating_duration_since(now);
        let mut wait = idle_left.min(self.deadline.saturating_duration_since(now));
        if self.minimum > 0 {
            wait = wait.min((self.window_start + self.window).saturating_duration_since(now));
        }
        wait
    }

    /// Nothing arrived during [`Self::wait`]: which clock ran out, if any (a window that ended
    /// fast enough just starts the next one).
    pub(super) fn woke(&mut self, now: Instant) -> Result<(), Expired> {
        if now >= self.deadline {
            return Err(Expired::Deadline(self.total));
        }
        // Silence is reported as such, not as a slow window.
        if now.saturating_duration_since(self.last_activity) >= self.idle {
            return Err(Expired::Idle(self.idle));
        }
        self.judge_window(now)
    }

    /// The total deadline of this attempt.
    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The downloader waited, as the server asked, until `now`: the idle and throughput clocks
    /// start again (the total deadline does not move).
    pub(super) fn rested(&mut self, now: Instant) {
        self.last_activity = now;
        self.window_start = now;
        self.window_bytes = 0;
    }

    /// `bytes` arrived at `now`.
    pub(super) fn received(&mut self, bytes: u64, now: Instant) -> Result<(), Expired> {
        if now >= self.deadline {
            return Err(Expired::Deadline(self.total));
        }
        self.last_activity = now;
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        self.judge_window(now)
    }

    fn judge_window(&mut self, now: Instant) -> Result<(), Expired> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if self.minimum == 0 || elapsed < self.window {
            return Ok(());
        }
        let measured = (self.window_bytes as f64 / elapsed.as_secs_f64()) as u64;
        if measured < self.minimum {
            return Err(Expired::TooSlow {
                measured,
                minimum: self.minimum,
            });
        }
        self.window_start = now;
        self.window_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(minimum: u64) -> DownloadLimits {
        DownloadLimits {
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
            min_bytes_per_second: minimum,
            throughput_window: Duration::from_secs(10),
            ..DownloadLimits::default()
        }
    }

    #[test]
    fn a_trickle_fails_at_the_end_of_its_first_window() {
        let t0 = Instant::now();
        let mut pace = Pace::start(&limits(100), t0);
        assert_eq!(pace.wait(t0), Duration::from_secs(10));
        assert_eq!(pace.received(1, t0 + Duration::from_secs(5)), Ok(()));
        assert_eq!(
            pace.woke(t0 + Duration::from_secs(10)),
            Err(Expired::TooSlow {
                measured: 0,
                minimum: 100
            })
        );
    }

    #[test]
    fn a_fast_window_starts_the_next_one() {
        let t0 = Instant::now();
        let mut pace = Pace::start(&limits(100), t0);
        assert_eq!(pace.received(5_000, t0 + Duration::from_secs(10)), Ok(()));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(pace.wait(t1), Duration::from_secs(10));
    }

    #[test]
    fn the_deadline_bounds_every_wait() {
        let t0 = Instant::now();
        let mut pace = Pace::start(&limits(0), t0);
        assert_eq!(pace.received(1, t0 + Duration::from_secs(590)), Ok(()));
        assert_eq!(
            pace.wait(t0 + Duration::from_secs(590)),
            Duration::from_secs(10)
        );
        assert_eq!(
            pace.received(1, t0 + Duration::from_secs(600)),
            Err(Expired::Deadline(Duration::from_secs(600)))
        );
    }

    #[test]
    fn silence_for_the_idle_timeout_is_idle() {
        let t0 = Instant::now();
        let mut pace = Pace::start(&limits(0), t0);
        assert_eq!(
            pace.woke(t0 + Duration::from_secs(60)),
            Err(Expired::Idle(Duration::from_secs(60)))
        );
    }
}
