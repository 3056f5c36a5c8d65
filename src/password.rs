//! Password hashes for remote users: Argon2id in PHC string form.
//!
//! The PHC string carries its own salt and cost, so stored hashes keep
//! verifying after the defaults change. Verification is constant-time.
//!
//! Every Argon2 computation a daemon makes for a caller (password checks on
//! the service and the relay, unsealing an inventory or a client key in the
//! broker) goes through [`hashing`]: off the async threads, and at most one
//! per core at a time. Each takes 19 MiB and tens of milliseconds,
//! so a burst of logins on an internet-facing port queues there instead of
//! running hundreds of hashes at once and exhausting memory.

use std::sync::LazyLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash password: {0}")]
    Hash(String),
    #[error("stored password hash is not a valid Argon2 PHC string")]
    BadHash,
}

fn hasher() -> Argon2<'static> {
    // OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// How many Argon2 computations may run at once: one per core.
pub fn hashing_slots() -> usize {
    static SLOTS: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    *SLOTS
}

/// Runs `work` (an Argon2 computation) on the blocking pool once one of
/// [`hashing_slots`] is free. Fails only if `work` panicked.
pub async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    static GATE: LazyLock<tokio::sync::Semaphore> =
        LazyLock::new(|| tokio::sync::Semaphore::new(hashing_slots()));
    // The gate is never closed, so acquiring only waits. The slot goes
    // with the work: a caller that gives up (its future dropped) does not
    // stop a hash already running, so it must not free the slot either.
    let slot = GATE.acquire().await.ok();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        work()
    })
    .await
}

/// A valid Argon2id hash of a random password: unknown users are checked
/// against it so they take as long as known ones.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c3dpdGNoeWFyZC1kdW1teQ$Q6fNq0c4w3mY6t7s1lXl0tYJ2wYVbZy4m3kH8n7yqXo";

/// Hashes a new password.
pub fn hash_password(password: &Secret) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Checks a password against a stored hash.
pub fn verify_password(stored: &str, password: &Secret) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::BadHash)?;
    Ok(hasher()
        .verify_password(password.expose().as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_runs_at_most_one_per_core_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..hashing_slots() * 3)
            .map(|_| {
                let (running, most) = (running.clone(), most.clone());
                tokio::spawn(hashing(move || {
                    most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    let hashed = hash_password(&Secret::new("pw"));
                    running.fetch_sub(1, Ordering::SeqCst);
                    hashed.is_ok()
                }))
            })
            .collect();
        for job in jobs {
            assert!(job.await.unwrap().unwrap());
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=hashing_slots()).contains(&most), "{most} at once");
    }

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let h = hash_password(&Secret::new("pw")).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, &Secret::new("pw")).unwrap());
        assert!(!verify_password(&h, &Secret::new("pw2")).unwrap());
        assert!(verify_password("garbage", &Secret::new("pw")).is_err());
    }
}
