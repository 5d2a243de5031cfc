//! Reconnect delays: exponential backoff with "equal jitter", and the wait
//! after `GoAway` with the client's own jitter on top of the gateway's.
//!
//! Pure; the caller supplies the random number, so the function is testable
//! and never holds a random generator across an `await`.

use std::time::Duration;

/// The delay before reconnect attempt `attempt` (0 for the first):
/// `min(initial * 2^attempt, max)`, of which the upper half is random
/// (`jitter` in `[0, 1]` picks where), so that many clients dropped at once do
/// not come back at once.
pub(crate) fn backoff_delay(
    attempt: u32,
    initial: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    let capped = initial.saturating_mul(factor).min(max);
    let half = capped / 2;
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let random = Duration::try_from_secs_f64(half.as_secs_f64() * jitter).unwrap_or(half);
    (capped - half).saturating_add(random.min(half))
}

/// [`backoff_delay`] with a fresh random jitter.
pub(crate) fn jittered(attempt: u32, initial: Duration, max: Duration) -> Duration {
    backoff_delay(attempt, initial, max, rand::random::<f64>())
}

/// The least spread [`after_goaway`] adds over.
const GOAWAY_MIN_SPREAD: Duration = Duration::from_millis(250);

/// How long to wait after `GoAway` before reconnecting: the gateway's
/// `reconnect_after_ms` (`after`) plus a random extra of up to half as much
/// again (at least up to 250 ms; `jitter` in `[0, 1]` picks where). The
/// gateway already jitters per session; this spreads clients that were
/// told the same delay anyway (an older gateway, a zero jitter window).
pub(crate) fn after_goaway(after: Duration, jitter: f64) -> Duration {
    let spread = (after / 2).max(GOAWAY_MIN_SPREAD);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let extra = Duration::try_from_secs_f64(spread.as_secs_f64() * jitter).unwrap_or(spread);
    after.saturating_add(extra.min(spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        assert_eq!(backoff_delay(0, INITIAL, MAX, 1.0), INITIAL);
        assert_eq!(backoff_delay(1, INITIAL, MAX, 1.0), INITIAL * 2);
        assert_eq!(backoff_delay(3, INITIAL, MAX, 1.0), INITIAL * 8);
        assert_eq!(backoff_delay(10, INITIAL, MAX, 1.0), MAX);
        assert_eq!(backoff_delay(u32::MAX, INITIAL, MAX, 1.0), MAX);
    }

    #[test]
    fn jitter_spans_the_upper_half() {
        assert_eq!(backoff_delay(0, INITIAL, MAX, 0.0), INITIAL / 2);
        assert_eq!(backoff_delay(0, INITIAL, MAX, 0.5), INITIAL * 3 / 4);
        for attempt in 0..40 {
            let d = jittered(attempt, INITIAL, MAX);
            let cap = INITIAL.saturating_mul(1 << attempt.min(31)).min(MAX);
            assert!(
                d >= cap / 2 && d <= cap,
                "{d:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
    }

    #[test]
    fn goaway_waits_at_least_what_the_gateway_said_plus_some_jitter() {
        let after = Duration::from_secs(2);
        assert_eq!(after_goaway(after, 0.0), after);
        assert_eq!(after_goaway(after, 1.0), Duration::from_secs(3));
        assert_eq!(after_goaway(after, 0.5), Duration::from_millis(2_500));
        assert_eq!(after_goaway(Duration::ZERO, 1.0), GOAWAY_MIN_SPREAD);
        assert_eq!(after_goaway(after, f64::NAN), after);
        assert!(after_goaway(Duration::MAX, 1.0) == Duration::MAX);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        assert_eq!(backoff_delay(5, Duration::ZERO, MAX, 0.7), Duration::ZERO);
        assert!(backoff_delay(70, Duration::MAX, Duration::MAX, 1.0) <= Duration::MAX);
        assert_eq!(backoff_delay(0, INITIAL, MAX, f64::NAN), INITIAL / 2);
        assert_eq!(backoff_delay(0, INITIAL, MAX, 7.0), INITIAL);
    }
}
