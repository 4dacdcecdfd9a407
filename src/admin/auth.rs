//! Operator API request guards that keep state or draw randomness: the
//! per-IP failed-authentication limiter and request ids. The decisions
//! themselves (roles, tokens, proxies) are pure and live in `core::auth`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED_IPS: usize = 10_000;

/// Rate-limits failed authentications per client IP so tokens cannot be
/// guessed online. Memory is bounded in IPs and in timestamps per IP.
#[derive(Debug)]
pub struct FailureLimiter {
    per_minute: u32,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// `per_minute == 0` disables limiting.
    pub fn new(per_minute: u32) -> Self {
        FailureLimiter {
            per_minute,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(retry_after)` while `ip` has `per_minute` failures in the last 60 s.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let mut recent = map
            .get(&ip)?
            .iter()
            .map(|t| now.saturating_duration_since(*t))
            .filter(|age| *age < WINDOW);
        let oldest_age = recent.next()?;
        if recent.count() + 1 < self.per_minute as usize {
            return None;
        }
        Some(WINDOW - oldest_age)
    }

    /// A presented and wrong token from `ip`: counted, or, while `ip` is
    /// over the limit, `Some(retry_after)` (answer 429; not counted again).
    /// Missing credentials and valid tokens never come here, so they are
    /// never limited.
    pub fn wrong_token(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let wait = self.blocked(ip, now);
        if wait.is_none() {
            self.record_failure(ip, now);
        }
        wait
    }

    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let cap = self.per_minute as usize;
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TRACKED_IPS && !map.contains_key(&ip) {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
            });
            // Still full under a flood of fresh IPs: evict the stalest.
            if map.len() >= MAX_TRACKED_IPS {
                let stalest = map
                    .iter()
                    .min_by_key(|(_, q)| q.back().copied())
                    .map(|(k, _)| *k);
                if let Some(k) = stalest {
                    map.remove(&k);
                }
            }
        }
        let q = map.entry(ip).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            q.pop_front();
        }
        q.push_back(now);
        while q.len() > cap {
            q.pop_front();
        }
    }
}

/// Echoes a well-formed client `X-Request-Id` for correlation; anything else
/// (log injection, oversized) is replaced by a fresh UUID.
pub fn request_id(header: Option<&str>) -> String {
    match header {
        Some(h)
            if (1..=128).contains(&h.len())
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            h.to_owned()
        }
        _ => uuid::Uuid::new_v4().hyphenated().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_secs(n)
    }

    #[test]
    fn limiter_blocks_after_limit_and_lifts() {
        let l = FailureLimiter::new(10);
        let (a, b, t0) = (ip("198.51.100.1"), ip("198.51.100.2"), Instant::now());
        for i in 0..10 {
            assert_eq!(l.blocked(a, secs(t0, i)), None);
            l.record_failure(a, secs(t0, i));
        }
        // The oldest failure (t0) leaves the window at t0 + 60 s.
        assert_eq!(l.blocked(a, secs(t0, 10)), Some(Duration::from_secs(50)));
        assert_eq!(l.blocked(a, secs(t0, 59)), Some(Duration::from_secs(1)));
        assert_eq!(l.blocked(b, secs(t0, 10)), None);
        assert_eq!(l.blocked(a, secs(t0, 60)), None);
    }

    #[test]
    fn wrong_tokens_count_until_the_limit_then_answer_retry_after() {
        let l = FailureLimiter::new(3);
        let (a, t0) = (ip("198.51.100.7"), Instant::now());
        for i in 0..3 {
            assert_eq!(l.wrong_token(a, secs(t0, i)), None, "guess {i} is counted");
        }
        assert_eq!(l.wrong_token(a, secs(t0, 3)), Some(Duration::from_secs(57)));
        // Refused guesses are not counted: the window still ends 60 s after the first.
        assert_eq!(
            l.wrong_token(a, secs(t0, 30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(l.wrong_token(a, secs(t0, 60)), None);
    }

    #[test]
    fn limiter_bounded_and_unlimited() {
        let (l, t0) = (FailureLimiter::new(3), Instant::now());
        for _ in 0..100 {
            l.record_failure(ip("::1"), t0);
        }
        assert_eq!(l.failures.lock().unwrap()[&ip("::1")].len(), 3);
        for i in 0..(MAX_TRACKED_IPS as u32 + 5) {
            l.record_failure(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.failures.lock().unwrap().len() <= MAX_TRACKED_IPS);
        l.record_failure(ip("203.0.113.9"), secs(t0, 61));
        assert_eq!(l.failures.lock().unwrap().len(), 1, "stale IPs pruned");

        let open = FailureLimiter::new(0);
        (0..100).for_each(|_| open.record_failure(ip("::1"), t0));
        assert_eq!(open.blocked(ip("::1"), t0), None);
    }

    #[test]
    fn request_id_honoured_or_generated() {
        assert_eq!(request_id(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        let (max, long) = ("a".repeat(128), "a".repeat(200));
        assert_eq!(request_id(Some(&max)), max);
        for bad in [
            None,
            Some(""),
            Some("a\nb"),
            Some("a b"),
            Some("é"),
            Some(&long),
        ] {
            let id = request_id(bad);
            assert!(
                uuid::Uuid::parse_str(&id).is_ok() && id.len() == 36,
                "{bad:?}"
            );
        }
    }
}
