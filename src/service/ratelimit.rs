//! Password-login failure limiting, sans-IO (time is passed in).
//!
//! # What is limited, keyed by what
//!
//! Only **password** logins are limited: a password can be guessed, and
//! each guess costs the service an Argon2id hash. Each attempt is counted
//! against two keys: the claimed user name (`user:NAME`) and where the
//! caller comes from — its IP address for a direct connection
//! (`ip:ADDR`), or, for a connection inside a relayed tunnel (which all
//! come from the same relay address), the identity the relay
//! authenticated for that tunnel (`relayed:IDENTITY`). So one party's
//! failures lock out its own source and the names it tried, never
//! another source.
//!
//! **Relay assertions are not limited at all.** An assertion is an
//! Ed25519-signed statement by the relay: it cannot be guessed, checking
//! one costs a signature verification (microseconds, no Argon2), and an
//! unverifiable one names nobody who could be held to it (its `sub` is
//! just what the sender wrote). Counting such failures against any key an
//! attacker can reach — the relay's address, a subject it typed — would
//! only hand strangers a lever to lock real cloud callers out. A verified
//! assertion for an identity that is not a remote user is refused as
//! such; repeating it gains nothing. Floods of assertions are bounded by
//! the RPC socket's cap on unauthenticated connections and its login
//! deadline, like any other pre-login traffic.
//!
//! # Rules
//!
//! Each key may fail `max_failures` times within `window`; the failure
//! that reaches the limit locks the key for `lockout`.
//!
//! * An attempt is **reserved before the password is hashed**
//!   ([`FailureLimiter::reserve`]) and counts as a possible failure while
//!   it runs: a key admits a new attempt only while its failures plus the
//!   attempts in flight are below the limit. Further attempts wait
//!   ([`Refusal::Busy`]) until one finishes, so parallel guesses are
//!   counted exactly like sequential ones. An attempt whose outcome is
//!   never reported (the caller went away mid-hash) counts as a failure.
//! * A success clears only the **user** key it proved
//!   ([`FailureLimiter::succeeded`]); the source's failures stay until
//!   their window ends, so one valid account cannot wipe out the count of
//!   guesses made from the same address against others.
//! * The table is bounded (`max_entries`). To make room, entries whose
//!   window and lockout are over go first, then the oldest entries that
//!   are neither locked nor have an attempt in flight. A **locked entry is
//!   never evicted**; when every entry is locked or in flight, a new key is
//!   refused ([`Refusal::Full`]) — the service fails closed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Limits of the login-failure limiter.
#[derive(Debug, Clone)]
pub struct LimiterConfig {
    /// Failures within `window` that lock a key.
    pub max_failures: u32,
    /// How long failures count.
    pub window: Duration,
    /// How long a key stays locked once it reached `max_failures`.
    pub lockout: Duration,
    /// Keys tracked at once.
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

/// Why an attempt may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A key is locked out for this long yet.
    #[error("too many failed logins; try again in {} s", .0.as_secs().max(1))]
    Locked(Duration),
    /// A key is at its limit counting the attempts still running; try
    /// again when one of them finished.
    #[error("too many logins in progress for this user or address")]
    Busy,
    /// The table is full of locked or in-flight entries.
    #[error("the service's login limiter is full; try again later")]
    Full,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    /// Attempts reserved and not yet finished.
    pending: u32,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            window_start: now,
            locked_until: None,
            pending: 0,
        }
    }

    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Starts a new window once the old one (and any lockout) is over.
    fn refresh(&mut self, config: &LimiterConfig, now: Instant) {
        if self.locked(now).is_none() && now.duration_since(self.window_start) > config.window {
            self.failures = 0;
            self.window_start = now;
            self.locked_until = None;
        }
    }

    /// Nothing left to remember.
    fn idle(&self, config: &LimiterConfig, now: Instant) -> bool {
        self.pending == 0
            && self.locked(now).is_none()
            && (self.failures == 0 || now.duration_since(self.window_start) > config.window)
    }
}

/// A reserved login attempt on some keys; hand it back with
/// [`FailureLimiter::succeeded`] or [`FailureLimiter::failed`].
#[derive(Debug)]
#[must_use = "an attempt must be reported as succeeded or failed"]
pub struct Attempt {
    keys: Vec<String>,
}

/// The login-failure table.
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

    /// Reserves an attempt counted against every key in `keys` (before the
    /// password is checked). Refused while a key is locked, at its limit
    /// counting attempts in flight (`Busy`), or when there is no room for
    /// a new key (`Full`).
    pub fn reserve(&mut self, keys: &[&str], now: Instant) -> Result<Attempt, Refusal> {
        let config = &self.config;
        let mut busy = false;
        for key in keys {
            if let Some(entry) = self.entries.get_mut(*key) {
                entry.refresh(config, now);
                if let Some(wait) = entry.locked(now) {
                    return Err(Refusal::Locked(wait));
                }
                busy |= entry.failures + entry.pending >= config.max_failures;
            }
        }
        if busy {
            return Err(Refusal::Busy);
        }
        let new = keys
            .iter()
            .filter(|k| !self.entries.contains_key(**k))
            .count();
        self.make_room(new, keys, now)?;
        for key in keys {
            self.entries
                .entry(key.to_string())
                .or_insert_with(|| Entry::new(now))
                .pending += 1;
        }
        Ok(Attempt {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        })
    }

    /// The attempt proved `proved` (its user key): that key's failures are
    /// forgotten; the other keys keep theirs.
    pub fn succeeded(&mut self, attempt: Attempt, proved: &str, now: Instant) {
        for key in &attempt.keys {
            if let Some(entry) = self.entries.get_mut(key) {
                entry.pending = entry.pending.saturating_sub(1);
                if key == proved {
                    entry.failures = 0;
                    entry.locked_until = None;
                }
            }
        }
        self.forget_idle(&attempt.keys, now);
    }

    /// The attempt ended without a verdict on the caller (the service
    /// failed): nothing is recorded.
    pub fn released(&mut self, attempt: Attempt, now: Instant) {
        for key in &attempt.keys {
            if let Some(entry) = self.entries.get_mut(key) {
                entry.pending = entry.pending.saturating_sub(1);
            }
        }
        self.forget_idle(&attempt.keys, now);
    }

    /// The attempt failed: one failure on each of its keys.
    pub fn failed(&mut self, attempt: Attempt, now: Instant) {
        let config = &self.config;
        for key in &attempt.keys {
            if let Some(entry) = self.entries.get_mut(key) {
                entry.pending = entry.pending.saturating_sub(1);
                entry.refresh(config, now);
                entry.failures += 1;
                if entry.failures >= config.max_failures {
                    entry.locked_until = Some(now + config.lockout);
                }
            }
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn forget_idle(&mut self, keys: &[String], now: Instant) {
        for key in keys {
            if self
                .entries
                .get(key)
                .is_some_and(|e| e.idle(&self.config, now))
            {
                self.entries.remove(key);
            }
        }
    }

    /// Frees room for `new` keys without touching `keep`: stale entries
    /// first, then the oldest unlocked ones with nothing in flight.
    fn make_room(&mut self, new: usize, keep: &[&str], now: Instant) -> Result<(), Refusal> {
        let max = self.config.max_entries;
        if self.entries.len() + new <= max {
            return Ok(());
        }
        let config = &self.config;
        self.entries.retain(|_, e| !e.idle(config, now));
        while self.entries.len() + new > max {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, e)| {
                    e.pending == 0 && e.locked(now).is_none() && !keep.contains(&k.as_str())
                })
                .min_by_key(|(_, e)| e.window_start)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => return Err(Refusal::Full),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max_entries: usize) -> FailureLimiter {
        FailureLimiter::new(LimiterConfig {
            max_failures: 3,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(30),
            max_entries,
        })
    }

    fn fail(l: &mut FailureLimiter, keys: &[&str], now: Instant) {
        let attempt = l.reserve(keys, now).expect("attempt admitted");
        l.failed(attempt, now);
    }

    #[test]
    fn locks_out_after_max_failures_then_releases() {
        let mut l = limiter(100);
        let t0 = Instant::now();
        for i in 0..3 {
            fail(&mut l, &["user:a"], t0 + Duration::from_secs(i));
        }
        let at = t0 + Duration::from_secs(2);
        assert_eq!(
            l.reserve(&["user:a"], at).unwrap_err(),
            Refusal::Locked(Duration::from_secs(30))
        );
        assert!(l.reserve(&["user:b"], at).is_ok(), "other keys unaffected");
        let later = t0 + Duration::from_secs(33);
        assert!(l.reserve(&["user:a"], later).is_ok());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut l = limiter(100);
        let t0 = Instant::now();
        fail(&mut l, &["k"], t0);
        fail(&mut l, &["k"], t0 + Duration::from_secs(1));
        fail(&mut l, &["k"], t0 + Duration::from_secs(20));
        assert!(l.reserve(&["k"], t0 + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn parallel_attempts_are_counted_before_their_outcome() {
        let mut l = limiter(100);
        let t0 = Instant::now();
        // Three attempts start before any has failed: the fourth must wait.
        let running: Vec<_> = (0..3)
            .map(|_| l.reserve(&["ip:x", "user:a"], t0).unwrap())
            .collect();
        assert_eq!(
            l.reserve(&["ip:x", "user:a"], t0).unwrap_err(),
            Refusal::Busy
        );
        assert_eq!(
            l.reserve(&["ip:y", "user:a"], t0).unwrap_err(),
            Refusal::Busy,
            "the user key alone is at its limit"
        );
        for attempt in running {
            l.failed(attempt, t0);
        }
        assert!(matches!(
            l.reserve(&["ip:x", "user:a"], t0),
            Err(Refusal::Locked(_))
        ));
    }

    #[test]
    fn a_waiting_attempt_proceeds_when_a_running_one_succeeds() {
        let mut l = limiter(100);
        let t0 = Instant::now();
        let running: Vec<_> = (0..3)
            .map(|_| l.reserve(&["ip:x", "user:a"], t0).unwrap())
            .collect();
        assert_eq!(
            l.reserve(&["ip:x", "user:a"], t0).unwrap_err(),
            Refusal::Busy
        );
        for attempt in running {
            l.succeeded(attempt, "user:a", t0);
        }
        assert!(l.reserve(&["ip:x", "user:a"], t0).is_ok());
    }

    #[test]
    fn success_clears_only_the_proved_user_key() {
        let mut l = limiter(100);
        let t0 = Instant::now();
        // A guess at bob and a typo of alice's from one address, then
        // alice logs in from it.
        fail(&mut l, &["ip:x", "user:bob"], t0);
        fail(&mut l, &["ip:x", "user:alice"], t0);
        let ok = l.reserve(&["ip:x", "user:alice"], t0).unwrap();
        l.succeeded(ok, "user:alice", t0);
        // The address still carries both failures: one more locks it.
        fail(&mut l, &["ip:x", "user:carol"], t0);
        assert!(matches!(
            l.reserve(&["ip:x", "user:dave"], t0),
            Err(Refusal::Locked(_))
        ));
        // Alice's own count was cleared.
        assert!(!l.entries.contains_key("user:alice"));
    }

    #[test]
    fn a_full_table_never_evicts_locked_entries() {
        let mut l = limiter(2);
        let t0 = Instant::now();
        for _ in 0..3 {
            fail(&mut l, &["user:victim"], t0);
        }
        // Room for one more key: the attacker's keys evict each other,
        // never the locked one.
        for i in 0..10 {
            fail(&mut l, &[&format!("user:{i}")], t0);
            assert!(l.len() <= 2);
            assert!(
                matches!(l.reserve(&["user:victim"], t0), Err(Refusal::Locked(_))),
                "lockout survived key {i}"
            );
        }
        // Only locked entries left: a new key is refused, not admitted.
        for _ in 0..3 {
            fail(&mut l, &["user:last"], t0);
        }
        assert!(matches!(
            l.reserve(&["user:last"], t0),
            Err(Refusal::Locked(_))
        ));
        assert_eq!(l.reserve(&["user:new"], t0).unwrap_err(), Refusal::Full);
        // Once the lockouts are over, there is room again.
        let later = t0 + Duration::from_secs(60);
        assert!(l.reserve(&["user:new"], later).is_ok());
    }

    #[test]
    fn entries_with_attempts_in_flight_are_not_evicted() {
        let mut l = limiter(2);
        let t0 = Instant::now();
        let a = l.reserve(&["user:a"], t0).unwrap();
        let b = l.reserve(&["user:b"], t0).unwrap();
        assert_eq!(l.reserve(&["user:c"], t0).unwrap_err(), Refusal::Full);
        l.failed(a, t0);
        l.failed(b, t0);
        assert!(
            l.reserve(&["user:c"], t0).is_ok(),
            "unlocked entries give way"
        );
    }
}
