//! Logging in at a terminal's own prompts, as a sans-IO step: Telnet
//! devices ask for a user name and password in the byte stream (RFC 854
//! has no authentication of its own), where SSH authenticates before the
//! shell starts.
//!
//! [`Login::step`] looks at the last line the device sent: a user-name
//! prompt (`Username:`, `login:`, `User Name:`) gets the stored user name,
//! a password prompt (`Password:`, `Passcode:`) the stored password, each
//! at most once. A login prompt after the password went out means the
//! device refused the credentials ([`LoginError::Refused`]); nothing is
//! ever sent twice. A device without authentication shows its CLI prompt
//! at once and the step is never asked to answer anything. Whether the
//! login is over is for the caller to judge (the platform's CLI prompt:
//! see `shell_session`).

use std::sync::LazyLock;

use regex::Regex;
use zeroize::Zeroizing;

use crate::label::tidy_max;
use crate::secret::Secret;

/// A user-name prompt at the end of a line (Cisco `Username:`, Linux
/// `host login:`, `User Name:`, `User:`).
static USER_PROMPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(?:user ?name|login|user)\s*:\s*$").expect("valid pattern"));

/// A password prompt at the end of a line.
static PASSWORD_PROMPT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)pass(?:word|code)\s*:\s*$").expect("valid pattern"));

/// What to do after a line from the device.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginStep {
    /// Nothing to answer.
    Wait,
    /// Send this answer (without the line end; may hold the password,
    /// wiped on drop).
    Send(Zeroizing<Vec<u8>>),
}

/// Why a login cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the device refused the user name or password (it asked again: {prompt:?})")]
    Refused {
        /// The prompt it asked again with (tidied, at most 128 chars).
        prompt: String,
    },
    #[error("the device asked {prompt:?} and no {missing} is configured")]
    Missing {
        prompt: String,
        /// "user name" or "password".
        missing: &'static str,
    },
}

/// A login in progress (see the module docs).
#[derive(Debug)]
pub struct Login {
    username: Option<String>,
    password: Option<Secret>,
    user_sent: bool,
    password_sent: bool,
}

impl Login {
    /// A login with the device's stored user name and password.
    pub fn new(username: Option<String>, password: Option<Secret>) -> Self {
        Self {
            username,
            password,
            user_sent: false,
            password_sent: false,
        }
    }

    /// Whether the password has been sent (the device's next prompt tells
    /// whether it was accepted).
    pub fn password_sent(&self) -> bool {
        self.password_sent
    }

    /// Judges `last_line` (the device's last, incomplete line, escapes
    /// removed). Call it once per new line end seen; the caller clears its
    /// buffer after sending an answer, so an answered prompt is not seen
    /// again.
    pub fn step(&mut self, last_line: &str) -> Result<LoginStep, LoginError> {
        let prompt = || tidy_max(last_line.trim(), 128);
        if PASSWORD_PROMPT.is_match(last_line) {
            if self.password_sent {
                return Err(LoginError::Refused { prompt: prompt() });
            }
            let Some(password) = &self.password else {
                return Err(LoginError::Missing {
                    prompt: prompt(),
                    missing: "password",
                });
            };
            self.password_sent = true;
            return Ok(LoginStep::Send(Zeroizing::new(
                password.expose().as_bytes().to_vec(),
            )));
        }
        if USER_PROMPT.is_match(last_line) {
            if self.user_sent {
                return Err(LoginError::Refused { prompt: prompt() });
            }
            let Some(username) = &self.username else {
                return Err(LoginError::Missing {
                    prompt: prompt(),
                    missing: "user name",
                });
            };
            self.user_sent = true;
            return Ok(LoginStep::Send(Zeroizing::new(
                username.as_bytes().to_vec(),
            )));
        }
        Ok(LoginStep::Wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Login {
        Login::new(Some("admin".into()), Some(Secret::new("pw")))
    }

    fn send(step: LoginStep) -> String {
        match step {
            LoginStep::Send(b) => String::from_utf8_lossy(&b).into_owned(),
            LoginStep::Wait => panic!("expected an answer"),
        }
    }

    #[test]
    fn answers_each_prompt_once() {
        let mut l = login();
        assert_eq!(l.step("Authorised access only").unwrap(), LoginStep::Wait);
        assert_eq!(send(l.step("Username: ").unwrap()), "admin");
        assert!(!l.password_sent());
        assert_eq!(send(l.step("Password: ").unwrap()), "pw");
        assert!(l.password_sent());
        assert_eq!(l.step("r1>").unwrap(), LoginStep::Wait);

        let mut l = login();
        assert_eq!(send(l.step("vm login: ").unwrap()), "admin");
        assert_eq!(send(l.step("Password:").unwrap()), "pw");
    }

    #[test]
    fn asked_again_is_refused_never_sent_twice() {
        let mut l = login();
        send(l.step("Username: ").unwrap());
        send(l.step("Password: ").unwrap());
        let err = l.step("Username: ").unwrap_err();
        assert_eq!(
            err,
            LoginError::Refused {
                prompt: "Username:".into()
            }
        );
        let mut l = login();
        send(l.step("Password: ").unwrap());
        assert!(matches!(
            l.step("Password: "),
            Err(LoginError::Refused { .. })
        ));
    }

    #[test]
    fn missing_credentials_are_named() {
        let mut l = Login::new(None, None);
        let err = l.step("login: ").unwrap_err();
        assert!(err.to_string().contains("no user name"), "{err}");
        let err = l.step("Password: ").unwrap_err();
        assert!(err.to_string().contains("no password"), "{err}");
    }
}
