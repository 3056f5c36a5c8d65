//! The login a simulated device asks for on Telnet, where the transport
//! does not authenticate: `Username:` (echoed), `Password:` (not echoed),
//! checked in constant time; a wrong pair prints `% Login invalid` and asks
//! again, three tries, then the connection closes (as IOS's `login local`
//! does). Pure: bytes in, [`LoginEvent`]s out; the Telnet listener does
//! the I/O.

use super::server::{SimCredentials, constant_time_eq};

/// What the login wants written or done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginEvent {
    /// Bytes for the terminal (echo, messages, prompts).
    Write(Vec<u8>),
    /// The credentials were right: the shell starts; the bytes after the
    /// password's line end are the shell's input.
    LoggedIn(Vec<u8>),
    /// Too many wrong tries: close the connection.
    Close,
}

#[derive(Debug)]
enum Asking {
    User,
    Password { user: String },
}

/// One Telnet session's login (see the module docs).
#[derive(Debug)]
pub struct Login {
    asking: Asking,
    line: Vec<u8>,
    tries: u8,
    after_cr: bool,
}

const USER_PROMPT: &[u8] = b"Username: ";
const PASSWORD_PROMPT: &[u8] = b"Password: ";
/// Longest user name or password line kept.
const MAX_LINE: usize = 256;
/// Wrong logins before the connection closes.
const TRIES: u8 = 3;

impl Default for Login {
    fn default() -> Self {
        Self::new()
    }
}

impl Login {
    pub fn new() -> Self {
        Self {
            asking: Asking::User,
            line: Vec::new(),
            tries: 0,
            after_cr: false,
        }
    }

    /// The first prompt (after `banner`, when there is one).
    pub fn start(banner: Option<&str>) -> Vec<u8> {
        let mut out = b"\r\n".to_vec();
        if let Some(banner) = banner {
            out.extend_from_slice(banner.replace('\n', "\r\n").as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        }
        out.extend_from_slice(b"User Access Verification\r\n\r\n");
        out.extend_from_slice(USER_PROMPT);
        out
    }

    /// Feeds input bytes.
    pub fn feed(&mut self, input: &[u8], credentials: &SimCredentials) -> Vec<LoginEvent> {
        let mut events = Vec::new();
        let mut echo = Vec::new();
        for (i, &byte) in input.iter().enumerate() {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match byte {
                b'\n' | 0 if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    echo.extend_from_slice(b"\r\n");
                    let line =
                        String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
                    match std::mem::replace(&mut self.asking, Asking::User) {
                        Asking::User => {
                            self.asking = Asking::Password { user: line };
                            echo.extend_from_slice(PASSWORD_PROMPT);
                        }
                        Asking::Password { user } => {
                            let user_ok = user == credentials.username;
                            let pass_ok = constant_time_eq(
                                line.as_bytes(),
                                credentials.password.expose().as_bytes(),
                            );
                            if user_ok && pass_ok {
                                events.push(LoginEvent::Write(std::mem::take(&mut echo)));
                                // A line end split CR | LF stays out of the shell.
                                let mut rest = &input[i + 1..];
                                if byte == b'\r' && matches!(rest.first(), Some(b'\n' | 0)) {
                                    rest = &rest[1..];
                                }
                                events.push(LoginEvent::LoggedIn(rest.to_vec()));
                                return events;
                            }
                            self.tries += 1;
                            echo.extend_from_slice(b"% Login invalid\r\n\r\n");
                            if self.tries >= TRIES {
                                events.push(LoginEvent::Write(echo));
                                events.push(LoginEvent::Close);
                                return events;
                            }
                            echo.extend_from_slice(USER_PROMPT);
                        }
                    }
                }
                b if b >= 0x20 && b != 0x7f && self.line.len() < MAX_LINE => {
                    self.line.push(b);
                    if matches!(self.asking, Asking::User) {
                        echo.push(b);
                    }
                }
                _ => {}
            }
        }
        if !echo.is_empty() {
            events.push(LoginEvent::Write(echo));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(events: &[LoginEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                LoginEvent::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn right_login_hands_the_rest_to_the_shell() {
        let creds = SimCredentials::default();
        let mut l = Login::new();
        assert!(String::from_utf8_lossy(&Login::start(Some("hi"))).ends_with("Username: "));
        let ev = l.feed(b"admin\r\n", &creds);
        assert_eq!(written(&ev), "admin\r\nPassword: ");
        let ev = l.feed(b"admin\r\nshow clock\r\n", &creds);
        assert_eq!(written(&ev), "\r\n", "the password is not echoed");
        assert_eq!(
            ev.last(),
            Some(&LoginEvent::LoggedIn(b"show clock\r\n".to_vec()))
        );
    }

    #[test]
    fn wrong_logins_ask_again_then_close() {
        let creds = SimCredentials::default();
        let mut l = Login::new();
        let ev = l.feed(b"admin\rbad\r", &creds);
        assert!(
            written(&ev).ends_with("% Login invalid\r\n\r\nUsername: "),
            "{ev:?}"
        );
        l.feed(b"admin\r\nbad\r\n", &creds);
        let ev = l.feed(b"admin\r\nbad\r\n", &creds);
        assert_eq!(ev.last(), Some(&LoginEvent::Close));
    }
}
