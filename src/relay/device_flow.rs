//! The OAuth 2.0 device authorization grant (RFC 8628), relay side, as a
//! state machine with no I/O and no clock of its own (every call takes
//! `now`), so its rules are tested with virtual time.
//!
//! A grant is started by a client (device code + user code), decided by a
//! person on the approval page (by user code), and redeemed once by the
//! client's polling (by device code). Polling faster than the interval
//! earns `slow_down` and a 5-second longer interval (RFC 8628 §3.5).

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Pending,
    Approved(String),
    Denied,
}

#[derive(Debug)]
struct Grant {
    user_code: String,
    login_hint: Option<String>,
    expires_at: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
    decision: Decision,
}

/// Open grants.
#[derive(Debug, Default)]
pub struct DeviceGrants {
    config: DeviceFlowConfig,
    by_device_code: HashMap<String, Grant>,
    by_user_code: HashMap<String, String>,
    started: u64,
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

impl DeviceGrants {
    pub fn new(config: DeviceFlowConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Grants started since the relay started (what the "one prompt for
    /// many processes" promise is checked against).
    pub fn started(&self) -> u64 {
        self.started
    }

    /// Grants open now (expired ones are counted until the next start).
    pub fn pending(&self) -> usize {
        self.by_device_code.len()
    }

    /// Starts a grant, unless `max_pending` are open already.
    pub fn start(
        &mut self,
        login_hint: Option<String>,
        now: Instant,
    ) -> Result<NewGrant, StartError> {
        self.purge(now);
        if self.by_device_code.len() >= self.config.max_pending {
            return Err(StartError::TooManyPending);
        }
        let device_code = hex::encode(rand::random::<[u8; 32]>());
        let mut user_code = new_user_code();
        while self.by_user_code.contains_key(&user_code) {
            user_code = new_user_code();
        }
        self.by_user_code
            .insert(user_code.clone(), device_code.clone());
        self.by_device_code.insert(
            device_code.clone(),
            Grant {
                user_code: user_code.clone(),
                login_hint,
                expires_at: now + self.config.lifetime,
                interval: self.config.interval,
                last_poll: None,
                decision: Decision::Pending,
            },
        );
        self.started += 1;
        Ok(NewGrant {
            device_code,
            user_code,
            expires_in: self.config.lifetime,
            interval: self.config.interval,
        })
    }

    /// The identity the grant was started for, if it is open.
    pub fn login_hint(&self, user_code: &str, now: Instant) -> Result<Option<String>, DecideError> {
        let grant = self.open_grant(user_code, now)?;
        Ok(grant.login_hint.clone())
    }

    fn open_grant(&self, user_code: &str, now: Instant) -> Result<&Grant, DecideError> {
        let code = normalize_user_code(user_code);
        let grant = self
            .by_user_code
            .get(&code)
            .and_then(|d| self.by_device_code.get(d))
            .ok_or(DecideError::UnknownCode)?;
        if now >= grant.expires_at {
            return Err(DecideError::Expired);
        }
        if grant.decision != Decision::Pending {
            return Err(DecideError::AlreadyDecided);
        }
        Ok(grant)
    }

    /// A signed-in person approves (or denies) the grant with `user_code`.
    pub fn decide(
        &mut self,
        user_code: &str,
        email: &str,
        approve: bool,
        now: Instant,
    ) -> Result<(), DecideError> {
        let grant = self.open_grant(user_code, now)?;
        if let Some(hint) = &grant.login_hint
            && !hint.eq_ignore_ascii_case(email)
        {
            return Err(DecideError::WrongUser(hint.clone()));
        }
        let code = normalize_user_code(user_code);
        if let Some(grant) = self
            .by_user_code
            .get(&code)
            .and_then(|d| self.by_device_code.get_mut(d))
        {
            grant.decision = if approve {
                Decision::Approved(email.to_string())
            } else {
                Decision::Denied
            };
        }
        Ok(())
    }

    /// A client polls with its device code; returns the approved identity
    /// once (the grant is then gone).
    pub fn poll(&mut self, device_code: &str, now: Instant) -> Result<String, PollError> {
        let grant = self
            .by_device_code
            .get_mut(device_code)
            .ok_or(PollError::InvalidGrant)?;
        if now >= grant.expires_at {
            self.remove(device_code);
            return Err(PollError::ExpiredToken);
        }
        let too_soon = grant
            .last_poll
            .is_some_and(|last| now.saturating_duration_since(last) < grant.interval);
        grant.last_poll = Some(now);
        if too_soon {
            grant.interval += Duration::from_secs(5);
            return Err(PollError::SlowDown);
        }
        match grant.decision.clone() {
            Decision::Pending => Err(PollError::AuthorizationPending),
            Decision::Denied => {
                self.remove(device_code);
                Err(PollError::AccessDenied)
            }
            Decision::Approved(email) => {
                self.remove(device_code);
                Ok(email)
            }
        }
    }

    fn remove(&mut self, device_code: &str) {
        if let Some(grant) = self.by_device_code.remove(device_code) {
            self.by_user_code.remove(&grant.user_code);
        }
    }

    fn purge(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .by_device_code
            .iter()
            .filter(|(_, g)| now >= g.expires_at + Duration::from_secs(60))
            .map(|(d, _)| d.clone())
            .collect();
        for device_code in expired {
            self.remove(&device_code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> (DeviceGrants, Instant) {
        let config = DeviceFlowConfig {
            lifetime: Duration::from_secs(60),
            interval: Duration::from_secs(2),
            ..Default::default()
        };
        (DeviceGrants::new(config), Instant::now())
    }

    #[test]
    fn approve_then_redeem_once() {
        let (mut g, t0) = grants();
        let grant = g.start(Some("a@x".into()), t0).unwrap();
        assert_eq!(
            g.poll(&grant.device_code, t0),
            Err(PollError::AuthorizationPending)
        );
        let typed = grant.user_code.to_lowercase().replace('-', "");
        g.decide(&typed, "a@x", true, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            g.poll(&grant.device_code, t0 + Duration::from_secs(3)),
            Ok("a@x".into())
        );
        assert_eq!(
            g.poll(&grant.device_code, t0 + Duration::from_secs(6)),
            Err(PollError::InvalidGrant)
        );
        assert_eq!(g.started(), 1);
    }

    #[test]
    fn polling_too_fast_slows_the_client_down() {
        let (mut g, t0) = grants();
        let grant = g.start(None, t0).unwrap();
        let _ = g.poll(&grant.device_code, t0);
        assert_eq!(
            g.poll(&grant.device_code, t0 + Duration::from_secs(1)),
            Err(PollError::SlowDown)
        );
        // The interval is now 7 s: 3 s later is still too soon.
        assert_eq!(
            g.poll(&grant.device_code, t0 + Duration::from_secs(4)),
            Err(PollError::SlowDown)
        );
        assert_eq!(
            g.poll(&grant.device_code, t0 + Duration::from_secs(20)),
            Err(PollError::AuthorizationPending)
        );
    }

    #[test]
    fn denied_expired_and_wrong_user() {
        let (mut g, t0) = grants();
        let grant = g.start(Some("a@x".into()), t0).unwrap();
        assert_eq!(
            g.decide(&grant.user_code, "b@x", true, t0),
            Err(DecideError::WrongUser("a@x".into()))
        );
        g.decide(&grant.user_code, "A@x", false, t0).unwrap();
        assert_eq!(
            g.decide(&grant.user_code, "a@x", true, t0),
            Err(DecideError::AlreadyDecided)
        );
        assert_eq!(g.poll(&grant.device_code, t0), Err(PollError::AccessDenied));

        let late = g.start(None, t0).unwrap();
        let after = t0 + Duration::from_secs(61);
        assert_eq!(
            g.decide(&late.user_code, "a@x", true, after),
            Err(DecideError::Expired)
        );
        assert_eq!(
            g.poll(&late.device_code, after),
            Err(PollError::ExpiredToken)
        );
        assert_eq!(
            g.decide("ZZZZ-ZZZZ", "a@x", true, t0),
            Err(DecideError::UnknownCode)
        );
    }

    #[test]
    fn open_grants_are_capped_until_some_close() {
        let t0 = Instant::now();
        let mut g = DeviceGrants::new(DeviceFlowConfig {
            max_pending: 2,
            ..Default::default()
        });
        let first = g.start(None, t0).unwrap();
        g.start(None, t0).unwrap();
        assert_eq!(g.start(None, t0).unwrap_err(), StartError::TooManyPending);
        assert_eq!(g.pending(), 2);
        g.decide(&first.user_code, "a@x", false, t0).unwrap();
        assert_eq!(g.poll(&first.device_code, t0), Err(PollError::AccessDenied));
        g.start(None, t0).unwrap();
        assert_eq!(g.pending(), 2);
    }
}
