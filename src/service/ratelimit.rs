//! Login-failure rate limiting, sans-IO (time is passed in).
//!
//! Each key (a source address, a user name) may fail `max_failures` times
//! within `window`; after that it is locked out for `lockout`. A success
//! clears the key. The table is bounded: when it is full, the stalest
//! entries go first.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LimiterConfig {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    pub max_entries: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
            max_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct FailureLimiter {
    config: LimiterConfig,
    entries: HashMap<String, Entry>,
}

impl FailureLimiter {
    pub fn new(config: LimiterConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
        }
    }

    /// `Err(retry_after)` while `key` is locked out.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn record_failure(&mut self, key: &str, now: Instant) {
        if self.entries.len() >= self.config.max_entries && !self.entries.contains_key(key) {
            self.evict(now);
        }
        let c = &self.config;
        let entry = self.entries.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
        });
        if now.duration_since(entry.window_start) > c.window {
            *entry = Entry {
                failures: 0,
                window_start: now,
                locked_until: None,
            };
        }
        entry.failures += 1;
        if entry.failures >= c.max_failures {
            entry.locked_until = Some(now + c.lockout);
        }
    }

    pub fn record_success(&mut self, key: &str) {
        self.entries.remove(key);
    }

    fn evict(&mut self, now: Instant) {
        let c = &self.config;
        self.entries.retain(|_, e| {
            now.duration_since(e.window_start) <= c.window
                || e.locked_until.is_some_and(|u| u > now)
        });
        if self.entries.len() >= c.max_entries
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.window_start)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> FailureLimiter {
        FailureLimiter::new(LimiterConfig {
            max_failures: 3,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(30),
            max_entries: 2,
        })
    }

    #[test]
    fn locks_out_after_max_failures_then_releases() {
        let mut l = limiter();
        let t0 = Instant::now();
        for i in 0..2 {
            l.record_failure("user:a", t0 + Duration::from_secs(i));
            assert!(l.check("user:a", t0 + Duration::from_secs(i)).is_ok());
        }
        l.record_failure("user:a", t0 + Duration::from_secs(2));
        let wait = l.check("user:a", t0 + Duration::from_secs(2)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30));
        assert!(l.check("user:b", t0).is_ok(), "other keys unaffected");
        assert!(l.check("user:a", t0 + Duration::from_secs(33)).is_ok());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up_and_success_clears() {
        let mut l = limiter();
        let t0 = Instant::now();
        l.record_failure("k", t0);
        l.record_failure("k", t0 + Duration::from_secs(1));
        l.record_failure("k", t0 + Duration::from_secs(20));
        assert!(l.check("k", t0 + Duration::from_secs(20)).is_ok());
        l.record_failure("k", t0 + Duration::from_secs(21));
        l.record_success("k");
        l.record_failure("k", t0 + Duration::from_secs(22));
        assert!(l.check("k", t0 + Duration::from_secs(22)).is_ok());
    }

    #[test]
    fn table_stays_bounded() {
        let mut l = limiter();
        let t0 = Instant::now();
        for i in 0..10 {
            l.record_failure(&format!("ip:{i}"), t0);
        }
        assert!(l.entries.len() <= 2);
    }
}
