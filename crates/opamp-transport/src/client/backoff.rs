//! Reconnect delays: the session's back-off ([`Backoff`]), and the server's own `Retry-After`.

use std::time::{Duration, SystemTime};

/// Exponential back-off with seeded jitter between reconnect attempts and failed
/// requests: the session core's [`opamp_session::RetryPolicy`], so an agent has exactly one
/// back-off (the session counts failures, draws the jitter and holds sending).
pub type Backoff = opamp_session::RetryPolicy;

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
        fn jittered_delay_stays_in_the_band(
            failures in 0u32..100,
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..600_000,
            unit in 0.0f64..=1.0,
        ) {
            let (initial, max) = (Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms));
            let backoff = Backoff::new(initial, max);
            let delay = backoff.jittered_delay(failures, unit);
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
