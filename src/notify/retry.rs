//! When the next attempt goes out: exponential back-off with jitter,
//! a server's `Retry-After`, the circuit's probe interval. Pure.

use std::time::{Duration, SystemTime};

use crate::config::WebhookConfig;

/// The wait after failed attempt number `attempt` (1-based): `initial`
/// doubled per attempt, capped at `max`, then scaled by `jitter` (0..1,
/// between half and the whole) so receivers recovering from an outage are
/// not hit by every sender at once.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = initial.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let capped = doubled.min(max);
    capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The wait before the next attempt of `hook` after `attempt` failed:
/// the server's `retry_after` if it gave one (capped at the maximum
/// interval), and no sooner than one probe interval while the circuit is open.
pub fn next_wait(
    hook: &WebhookConfig,
    attempt: u32,
    retry_after: Option<Duration>,
    circuit_open: bool,
    jitter: f64,
) -> Duration {
    let wait = match retry_after {
        Some(server) => server.min(hook.retry_max_interval),
        None => backoff(attempt, hook.retry_initial, hook.retry_max_interval, jitter),
    };
    if circuit_open {
        wait.max(hook.circuit_probe_interval)
    } else {
        wait
    }
}

/// `Retry-After`: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_retry_up_to_the_cap() {
        let (initial, max) = (Duration::from_secs(2), Duration::from_secs(600));
        let waits: Vec<u64> = (1..=10)
            .map(|a| backoff(a, initial, max, 1.0).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600]);
        assert_eq!(backoff(1000, initial, max, 1.0), max);
        // Jitter keeps at least half the wait.
        assert_eq!(backoff(1, initial, max, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn the_shipped_first_retry_is_within_five_seconds() {
        let hook: WebhookConfig = toml::from_str("name = \"a\"\nurl = \"http://x\"\n").unwrap();
        for jitter in [0.0, 0.5, 1.0] {
            assert!(next_wait(&hook, 1, None, false, jitter) <= Duration::from_secs(5));
        }
        assert_eq!(hook.retry_max_interval, Duration::from_secs(600));
        assert_eq!(hook.give_up_after, Duration::from_secs(24 * 3600));
        assert_eq!(
            next_wait(&hook, 1, None, true, 1.0),
            hook.circuit_probe_interval
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        // RFC 9110's example date is 784111777; ten seconds later:
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
