//! The OAuth 2.0 device authorization grant (RFC 8628), relay side: the
//! rules of one grant as plain functions over its record, with no I/O and
//! no clock of its own (every call takes `now`, Unix milliseconds), so
//! they are tested with virtual time.
//!
//! A grant is started by a client (device code + user code), decided by a
//! person on the approval page (by user code), and redeemed once by the
//! client's polling (by device code). Polling faster than the interval
//! earns `slow_down` and a 5-second longer interval (RFC 8628 §3.5).
//!
//! The records live in the relay's store (`device_grants`, SQLite or a
//! tier's PostgreSQL), so a grant started on one node is approved and
//! redeemed through any node, and survives the node that started it.
//! The store applies these rules inside one transaction per call, holding
//! the grant's row (see `RelayStore::update_grant`, `PgStore::update_grant`).
//!
//! **Invariant:** the device code is never stored: only its SHA-256
//! ([`device_code_hash`]; it is 32 random bytes, so a slow hash buys
//! nothing). A grant is decided at most once and redeemed at most once.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Settings of the grant.
#[derive(Debug, Clone)]
pub struct DeviceFlowConfig {
    /// How long a user code stays valid.
    pub lifetime: Duration,
    /// The polling interval clients are told to keep.
    pub interval: Duration,
    /// Grants open at once (anyone may start one); more are refused until
    /// some are redeemed or expire.
    pub max_pending: usize,
}

impl Default for DeviceFlowConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(600),
            interval: Duration::from_secs(5),
            max_pending: 10_000,
        }
    }
}

/// How long an expired grant is kept (so a late poll hears
/// `expired_token`, not `invalid_grant`) before a grant start deletes it.
pub const EXPIRED_KEPT: Duration = Duration::from_secs(60);

/// Unix time in milliseconds (the grants' clock; shared by the nodes of a
/// tier, so it is wall-clock time).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a grant could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("too many device logins are waiting for approval; try again later")]
    TooManyPending,
}

/// What a client gets when it starts a grant.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// Why a poll did not return an identity (RFC 8628 §3.5 error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    AuthorizationPending,
    SlowDown,
    AccessDenied,
    ExpiredToken,
    InvalidGrant,
}

impl PollError {
    pub fn code(self) -> &'static str {
        match self {
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::AccessDenied => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::InvalidGrant => "invalid_grant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    #[error("that code is not valid; check it and try again")]
    UnknownCode,
    #[error("that code has expired; start the login again")]
    Expired,
    #[error("that code was already used")]
    AlreadyDecided,
    #[error("this login is for {0}; sign in as that user")]
    WrongUser(String),
}

/// A person's decision on a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Pending,
    /// Approved by this user (the identity the grant is redeemed as).
    Approved(String),
    Denied,
}

impl Decision {
    /// The stored form: (`pending` | `approved` | `denied`, the approver).
    pub fn to_columns(&self) -> (&'static str, Option<&str>) {
        match self {
            Self::Pending => ("pending", None),
            Self::Approved(email) => ("approved", Some(email)),
            Self::Denied => ("denied", None),
        }
    }

    /// From the stored form; an unknown state or an approval without an
    /// approver reads as denied (never as approved).
    pub fn from_columns(state: &str, email: Option<String>) -> Self {
        match (state, email) {
            ("pending", _) => Self::Pending,
            ("approved", Some(email)) => Self::Approved(email),
            _ => Self::Denied,
        }
    }
}

/// One grant as stored. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// SHA-256 of the device code (the key polls find it by).
    pub device_hash: [u8; 32],
    /// Normalized (`ABCD-EFGH`); unique among stored grants.
    pub user_code: String,
    pub login_hint: Option<String>,
    pub expires_at: u64,
    /// Milliseconds the client must wait between polls.
    pub interval: u64,
    pub last_poll: Option<u64>,
    pub decision: Decision,
}

/// What a store does with a grant's row after a rule ran on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantWrite {
    /// Nothing changed.
    Keep,
    /// Write the record back.
    Save,
    /// Delete the row (redeemed, denied and told, or expired and told).
    Delete,
}

/// Which grant a store call is about.
#[derive(Debug, Clone, Copy)]
pub enum GrantKey<'a> {
    /// A user code as typed (normalized by the store call).
    UserCode(&'a str),
    /// A device code's hash.
    Device(&'a [u8; 32]),
}

/// SHA-256 of a device code, the only form it is stored in.
pub fn device_code_hash(device_code: &str) -> [u8; 32] {
    Sha256::digest(device_code.as_bytes()).into()
}

/// Letters that cannot be confused with each other or digits, and no
/// vowels (so no words), as RFC 8628 §6.1 suggests.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn new_user_code() -> String {
    let mut code = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            code.push('-');
        }
        let index = rand::random::<usize>() % USER_CODE_ALPHABET.len();
        code.push(USER_CODE_ALPHABET[index] as char);
    }
    code
}

/// Users type codes in any case, with or without the dash.
pub fn normalize_user_code(code: &str) -> String {
    let letters: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

/// A new grant: what the client is told and what is stored (a store that
/// finds the user code taken asks for another grant).
pub fn new_grant(
    config: &DeviceFlowConfig,
    login_hint: Option<String>,
    now: u64,
) -> (NewGrant, GrantRecord) {
    let device_code = hex::encode(rand::random::<[u8; 32]>());
    let user_code = new_user_code();
    let record = GrantRecord {
        device_hash: device_code_hash(&device_code),
        user_code: user_code.clone(),
        login_hint,
        expires_at: now + config.lifetime.as_millis() as u64,
        interval: config.interval.as_millis() as u64,
        last_poll: None,
        decision: Decision::Pending,
    };
    let grant = NewGrant {
        device_code,
        user_code,
        expires_in: config.lifetime,
        interval: config.interval,
    };
    (grant, record)
}

impl GrantRecord {
    /// Whether the grant can still be decided: known, unexpired, pending.
    pub fn open(grant: Option<&Self>, now: u64) -> Result<&Self, DecideError> {
        let grant = grant.ok_or(DecideError::UnknownCode)?;
        if now >= grant.expires_at {
            return Err(DecideError::Expired);
        }
        if grant.decision != Decision::Pending {
            return Err(DecideError::AlreadyDecided);
        }
        Ok(grant)
    }

    /// A signed-in person (`email`) approves or denies the grant.
    pub fn decide(
        grant: Option<&mut Self>,
        email: &str,
        approve: bool,
        now: u64,
    ) -> (Result<(), DecideError>, GrantWrite) {
        let Some(grant) = grant else {
            return (Err(DecideError::UnknownCode), GrantWrite::Keep);
        };
        if let Err(e) = Self::open(Some(grant), now) {
            return (Err(e), GrantWrite::Keep);
        }
        if let Some(hint) = &grant.login_hint
            && !hint.eq_ignore_ascii_case(email)
        {
            return (Err(DecideError::WrongUser(hint.clone())), GrantWrite::Keep);
        }
        grant.decision = if approve {
            Decision::Approved(email.to_string())
        } else {
            Decision::Denied
        };
        (Ok(()), GrantWrite::Save)
    }

    /// The client polls; the approved identity is returned once (the
    /// grant is then deleted).
    pub fn poll(grant: Option<&mut Self>, now: u64) -> (Result<String, PollError>, GrantWrite) {
        let Some(grant) = grant else {
            return (Err(PollError::InvalidGrant), GrantWrite::Keep);
        };
        if now >= grant.expires_at {
            return (Err(PollError::ExpiredToken), GrantWrite::Delete);
        }
        let too_soon = grant
            .last_poll
            .is_some_and(|last| now.saturating_sub(last) < grant.interval);
        grant.last_poll = Some(now);
        if too_soon {
            grant.interval += 5_000;
            return (Err(PollError::SlowDown), GrantWrite::Save);
        }
        match grant.decision.clone() {
            Decision::Pending => (Err(PollError::AuthorizationPending), GrantWrite::Save),
            Decision::Denied => (Err(PollError::AccessDenied), GrantWrite::Delete),
            Decision::Approved(email) => (Ok(email), GrantWrite::Delete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    fn grant(hint: Option<&str>) -> (NewGrant, GrantRecord) {
        let config = DeviceFlowConfig {
            lifetime: Duration::from_secs(60),
            interval: Duration::from_secs(2),
            ..Default::default()
        };
        new_grant(&config, hint.map(String::from), T0)
    }

    #[test]
    fn approve_then_redeem_once_and_only_the_hash_is_kept() {
        let (new, mut g) = grant(Some("a@x"));
        assert_eq!(g.device_hash, device_code_hash(&new.device_code));
        assert_ne!(&g.device_hash[..], new.device_code.as_bytes());
        assert_eq!(
            GrantRecord::poll(Some(&mut g), T0),
            (Err(PollError::AuthorizationPending), GrantWrite::Save)
        );
        let typed = new.user_code.to_lowercase().replace('-', "");
        assert_eq!(normalize_user_code(&typed), g.user_code);
        assert_eq!(
            GrantRecord::decide(Some(&mut g), "a@x", true, T0 + 1_000),
            (Ok(()), GrantWrite::Save)
        );
        assert_eq!(
            GrantRecord::poll(Some(&mut g), T0 + 3_000),
            (Ok("a@x".into()), GrantWrite::Delete)
        );
        assert_eq!(
            GrantRecord::poll(None, T0 + 6_000),
            (Err(PollError::InvalidGrant), GrantWrite::Keep)
        );
    }

    #[test]
    fn polling_too_fast_slows_the_client_down() {
        let (_, mut g) = grant(None);
        let _ = GrantRecord::poll(Some(&mut g), T0);
        assert_eq!(
            GrantRecord::poll(Some(&mut g), T0 + 1_000).0,
            Err(PollError::SlowDown)
        );
        // The interval is now 7 s: 3 s later is still too soon.
        assert_eq!(
            GrantRecord::poll(Some(&mut g), T0 + 4_000).0,
            Err(PollError::SlowDown)
        );
        assert_eq!(
            GrantRecord::poll(Some(&mut g), T0 + 20_000).0,
            Err(PollError::AuthorizationPending)
        );
    }

    #[test]
    fn denied_expired_and_wrong_user() {
        let (_, mut g) = grant(Some("a@x"));
        assert_eq!(
            GrantRecord::decide(Some(&mut g), "b@x", true, T0),
            (Err(DecideError::WrongUser("a@x".into())), GrantWrite::Keep)
        );
        assert_eq!(
            GrantRecord::decide(Some(&mut g), "A@x", false, T0).0,
            Ok(())
        );
        assert_eq!(
            GrantRecord::decide(Some(&mut g), "a@x", true, T0),
            (Err(DecideError::AlreadyDecided), GrantWrite::Keep)
        );
        assert_eq!(
            GrantRecord::poll(Some(&mut g), T0),
            (Err(PollError::AccessDenied), GrantWrite::Delete)
        );

        let (_, mut late) = grant(None);
        let after = T0 + 61_000;
        assert_eq!(
            GrantRecord::decide(Some(&mut late), "a@x", true, after).0,
            Err(DecideError::Expired)
        );
        assert_eq!(
            GrantRecord::poll(Some(&mut late), after),
            (Err(PollError::ExpiredToken), GrantWrite::Delete)
        );
        assert_eq!(
            GrantRecord::decide(None, "a@x", true, T0).0,
            Err(DecideError::UnknownCode)
        );
    }

    #[test]
    fn decisions_round_trip_through_their_columns_and_junk_is_denied() {
        for d in [
            Decision::Pending,
            Decision::Approved("a@x".into()),
            Decision::Denied,
        ] {
            let (state, email) = d.to_columns();
            assert_eq!(Decision::from_columns(state, email.map(String::from)), d);
        }
        assert_eq!(Decision::from_columns("approved", None), Decision::Denied);
        assert_eq!(
            Decision::from_columns("bogus", Some("a@x".into())),
            Decision::Denied
        );
    }
}
