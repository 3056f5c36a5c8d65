//! Sans-IO budgets for what strangers may do to the relay's HTTPS side:
//! per-address device-grant starts, and sign-in attempts on the approval
//! page per address and per user. Every call takes `now`, so the rules are
//! tested with virtual time.
//!
//! A [`KeyedBudget`] is a token bucket per key: `capacity` tokens, one more
//! every `refill_every`. An attempt takes a token *before* the work it
//! guards (so parallel attempts are all counted) and a successful sign-in
//! gives its own token back ([`KeyedBudget::refund`]) — which never
//! clears earlier failures.
//!
//! **Invariant:** the table holds at most `max_keys` keys. When it is full,
//! keys whose bucket has refilled (nothing to remember) are dropped; if it
//! is still full, a new key is refused rather than evicting one that is
//! being limited.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The key an address is limited under: IPv4 addresses as they are, IPv6
/// addresses by their /64 (one host usually has a whole /64).
pub fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the last token was added (or the bucket made).
    refilled: Instant,
}

/// A token bucket per key.
#[derive(Debug)]
pub struct KeyedBudget<K> {
    capacity: u32,
    refill_every: Duration,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> KeyedBudget<K> {
    /// `capacity` attempts at once, one more each `refill_every`, for at
    /// most `max_keys` keys. A zero `refill_every` is treated as 1 ms.
    pub fn new(capacity: u32, refill_every: Duration, max_keys: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            refill_every: refill_every.max(Duration::from_millis(1)),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.refilled);
        let earned = (elapsed.as_nanos() / self.refill_every.as_nanos()) as u64;
        if earned == 0 {
            return;
        }
        let tokens = (bucket.tokens as u64 + earned).min(self.capacity as u64) as u32;
        bucket.tokens = tokens;
        bucket.refilled = if tokens == self.capacity {
            now
        } else {
            bucket.refilled + self.refill_every * earned as u32
        };
    }

    /// Takes one token for `key`; `false` when it has none left (or the
    /// table is full of keys that are being limited).
    pub fn try_take(&mut self, key: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(key) {
            if self.buckets.len() >= self.max_keys {
                self.forget_idle(now);
            }
            if self.buckets.len() >= self.max_keys {
                return false;
            }
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: self.capacity,
                    refilled: now,
                },
            );
        }
        let mut bucket = self.buckets[key];
        self.refill(&mut bucket, now);
        let taken = bucket.tokens > 0;
        if taken {
            bucket.tokens -= 1;
        }
        self.buckets.insert(key.clone(), bucket);
        taken
    }

    /// Gives back the token an attempt took (it turned out not to count).
    pub fn refund(&mut self, key: &K) {
        if let Some(bucket) = self.buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1).min(self.capacity);
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn forget_idle(&mut self, now: Instant) {
        let (capacity, every) = (self.capacity, self.refill_every);
        self.buckets.retain(|_, b| {
            let missing = capacity.saturating_sub(b.tokens);
            now.saturating_duration_since(b.refilled) < every * missing
        });
    }
}

/// The approval page's sign-in limiter: attempts per address and per
/// user (lower-cased email), each a [`KeyedBudget`].
#[derive(Debug)]
pub struct SignInLimiter {
    by_address: KeyedBudget<IpAddr>,
    by_user: KeyedBudget<String>,
}

/// Why a sign-in attempt was not allowed to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Address,
    User,
}

impl Default for SignInLimiter {
    /// 10 attempts per address and 5 per user at once; one more per
    /// address every 6 s and per user every 12 s (10 and 5 a minute).
    fn default() -> Self {
        Self {
            by_address: KeyedBudget::new(10, Duration::from_secs(6), 65_536),
            by_user: KeyedBudget::new(5, Duration::from_secs(12), 65_536),
        }
    }
}

impl SignInLimiter {
    /// Takes an attempt for `address` and `user` before the password is
    /// checked; refused if either is out of attempts.
    pub fn begin(&mut self, address: IpAddr, user: &str, now: Instant) -> Result<(), Limited> {
        let address = address_key(address);
        if !self.by_address.try_take(&address, now) {
            return Err(Limited::Address);
        }
        if !self.by_user.try_take(&user.to_lowercase(), now) {
            self.by_address.refund(&address);
            return Err(Limited::User);
        }
        Ok(())
    }

    /// The attempt succeeded: it does not count as a failure.
    pub fn succeeded(&mut self, address: IpAddr, user: &str) {
        self.by_address.refund(&address_key(address));
        self.by_user.refund(&user.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_refills_one_token_per_period() {
        let t0 = Instant::now();
        let mut budget = KeyedBudget::new(3, Duration::from_secs(10), 100);
        assert!((0..3).all(|_| budget.try_take(&"a", t0)));
        assert!(!budget.try_take(&"a", t0));
        // Another key has its own budget.
        assert!(budget.try_take(&"b", t0));
        assert!(!budget.try_take(&"a", t0 + Duration::from_secs(9)));
        assert!(budget.try_take(&"a", t0 + Duration::from_secs(10)));
        assert!(!budget.try_take(&"a", t0 + Duration::from_secs(11)));
        // Never more than the capacity, however long it waited.
        let later = t0 + Duration::from_secs(3600);
        assert!((0..3).all(|_| budget.try_take(&"a", later)));
        assert!(!budget.try_take(&"a", later));
    }

    #[test]
    fn a_full_table_forgets_idle_keys_but_never_a_limited_one() {
        let t0 = Instant::now();
        let mut budget = KeyedBudget::new(1, Duration::from_secs(10), 2);
        let t5 = t0 + Duration::from_secs(5);
        assert!(budget.try_take(&1, t0));
        assert!(budget.try_take(&2, t5));
        // Both are limited: a third key is refused, neither is evicted.
        assert!(!budget.try_take(&3, t5));
        assert!(!budget.try_take(&1, t5));
        // Once key 1 has refilled it is forgotten to make room; key 2,
        // still limited, is kept.
        let t10 = t0 + Duration::from_secs(10);
        assert!(budget.try_take(&3, t10));
        assert_eq!(budget.len(), 2);
        assert!(!budget.try_take(&2, t10));
    }

    #[test]
    fn sign_ins_are_limited_per_address_and_per_user_and_success_clears_nothing_else() {
        let t0 = Instant::now();
        let mut limiter = SignInLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // Five parallel guesses at one user: all counted before any result.
        for _ in 0..5 {
            limiter.begin(a, "Alice@x", t0).unwrap();
        }
        assert_eq!(limiter.begin(b, "alice@x", t0), Err(Limited::User));
        // Another user from the same address still may try.
        limiter.begin(a, "bob@x", t0).unwrap();
        limiter.succeeded(a, "bob@x");
        // The success gave back only its own attempt: a has five left.
        assert_eq!(limiter.begin(a, "alice@x", t0), Err(Limited::User));
        for n in 0..5 {
            limiter.begin(a, &format!("v{n}@x"), t0).unwrap();
        }
        assert_eq!(limiter.begin(a, "w@x", t0), Err(Limited::Address));
        // The refused attempt from b cost b nothing: ten more from b.
        for n in 0..10 {
            limiter.begin(b, &format!("u{n}@x"), t0).unwrap();
        }
        assert_eq!(limiter.begin(b, "new@x", t0), Err(Limited::Address));
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(two));
        assert_ne!(address_key(one), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
