//! A download server that is busy (503 Service Unavailable, 429 Too Many Requests) is asked
//! again after the wait it names in `Retry-After`, rather than failing the install: a fleet
//! server caps the downloads it serves at once (`max_concurrent_downloads`) and answers the
//! rest this way, and a rollout batch of thousands of agents meets that cap by design.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;

/// Most busy answers taken for one download attempt before the status is an error.
pub(super) const MAX_ANSWERS: u32 = 64;
/// The wait when the server names none (or names it as a date).
const DEFAULT_WAIT: Duration = Duration::from_secs(2);
/// The longest wait taken, whatever the server asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Whether `status` says "busy, ask again later".
pub(super) fn is_busy(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
}

/// How long to wait before asking again after the `answer`-th busy answer `response`: its
/// `Retry-After` seconds (else [`DEFAULT_WAIT`]), at most [`MAX_WAIT`], plus up to a quarter
/// more so that agents refused together do not come back together.
pub(super) fn wait(response: &reqwest::Response, answer: u32) -> Duration {
    let asked = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, Duration::from_secs);
    spread(asked.clamp(Duration::from_millis(100), MAX_WAIT), answer)
}

/// `wait` plus a share of up to a quarter of it that differs between processes and answers.
fn spread(wait: Duration, answer: u32) -> Duration {
    let seed = u64::from(std::process::id())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(answer).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos()),
        );
    let quarter = wait / 4;
    let share = (seed % 1_000) as u32;
    wait + quarter * share / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_statuses_and_spread_waits() {
        assert!(is_busy(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_busy(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_busy(StatusCode::NOT_FOUND));
        for answer in 0..50 {
            let wait = spread(Duration::from_secs(4), answer);
            assert!(
                wait >= Duration::from_secs(4) && wait <= Duration::from_secs(5),
                "{wait:?}"
            );
        }
    }
}
