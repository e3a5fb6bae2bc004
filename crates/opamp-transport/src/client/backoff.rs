//! Reconnect delays: exponential back-off with jitter, and the server's own `Retry-After`.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Exponential back-off between reconnect attempts.
///
/// The n-th consecutive failure waits a random time in `[base/2, base]` where
/// `base = min(initial * 2^(n-1), max)`: the random half spreads a fleet that lost its server
/// at the same moment, so the agents do not all come back in the same second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// Base wait after the first failure. Default 1 s.
    pub initial: Duration,
    /// Largest base wait. Default 60 s.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Back-off between `initial` and `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait before the next attempt after `failures` consecutive failures (at least 1).
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1 << doublings).min(self.max);
        let half = base / 2;
        let spread = u64::try_from((base - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rng.gen_range(0..=spread))
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP date (relative to `now`).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_within_jitter_bounds_and_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for failures in 1..40u32 {
            let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(30))
                .min(Duration::from_secs(60));
            for _ in 0..50 {
                let delay = backoff.delay(failures, &mut rng);
                assert!(
                    delay >= base / 2 && delay <= base,
                    "failures={failures} delay={delay:?}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_agents() {
        let backoff = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<_> =
            (0..100).map(|_| backoff.delay(5, &mut rng)).collect();
        assert!(delays.len() > 50, "only {} distinct delays", delays.len());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    proptest::proptest! {
        #[test]
        fn delay_stays_in_the_jitter_band(
            failures in 0u32..100,
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..600_000,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let (initial, max) = (Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms));
            let backoff = Backoff::new(initial, max);
            let delay = backoff.delay(failures, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let base = initial.saturating_mul(1 << failures.saturating_sub(1).min(30)).min(max);
            proptest::prop_assert!(delay <= base && delay >= base / 2, "{:?} not in [{:?}, {:?}]", delay, base / 2, base);
        }

        #[test]
        fn retry_after_never_panics(value in ".{0,40}") {
            let _ = parse_retry_after(&value, SystemTime::now());
        }

        #[test]
        fn retry_after_seconds_round_trip(seconds in 0u64..10_000_000) {
            proptest::prop_assert_eq!(parse_retry_after(&seconds.to_string(), SystemTime::now()), Some(Duration::from_secs(seconds)));
        }
    }
}
