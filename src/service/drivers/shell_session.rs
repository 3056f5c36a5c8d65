//! A command-line session in an interactive shell, as a sans-IO state
//! machine: bytes from the device in, [`ShellEvent`]s out (bytes to send,
//! "ready", a command's output). No sockets, no timers: the transport glue
//! (`shell_store`) feeds it and bounds every wait with the caller's deadline.
//!
//! Life of a session: where the transport has no authentication of its own
//! (Telnet), the session first answers the device's user-name and password
//! prompts ([`shell_login`](super::shell_login), [`ShellSession::with_login`]);
//! after login the device prints banners and a prompt;
//! the session recognises the prompt ([`PlatformSpec::prompt`]), enters
//! privileged mode with `enable` when the device is unprivileged and an
//! enable secret is configured (the secret is sent at most once), sends the
//! platform's paging-off commands, learns the base prompt (the prompt
//! without its mode and terminator: `r1` of `r1#`) and is ready. Each
//! command is one line sent; its output is everything up to the next prompt
//! that starts with the base prompt. A pager (`--More--`) is answered with
//! a space; a confirmation question (`[confirm]`) is answered only with the
//! command's next line (a command may carry its answers, one per line), and
//! fails the command when there is none.
//!
//! The output is cleaned as netmiko's `send_command` does: pager texts and
//! their erasing removed, ANSI escapes stripped, line ends normalised to
//! `\n`, the echoed command line and the trailing prompt removed. Whether
//! it is a failure is decided by the platform's error lines.
//!
//! **Invariant:** at most one command is in flight; output beyond the limit
//! fails the command instead of growing the buffer.

use std::collections::VecDeque;
use std::sync::LazyLock;

use regex::bytes::Regex;
use zeroize::Zeroizing;

use super::platform::{Platform, PlatformSpec};
use super::shell_login::{Login, LoginError, LoginStep};
use crate::label::tidy_max;
use crate::secret::Secret;

/// What the session wants done, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum ShellEvent {
    /// Write these bytes to the device (may hold the enable secret; wiped
    /// on drop).
    Send(Zeroizing<Vec<u8>>),
    /// Set-up is over: commands may be run.
    Ready,
    /// The command in flight ended.
    Done(ShellOutput),
}

/// One command's cleaned output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// The output, without echo, pager, escapes or prompt; lines end in `\n`.
    pub output: Vec<u8>,
    /// The output contains one of the platform's error lines.
    pub failed: bool,
}

/// Why a session cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("the device refused the enable secret (its prompt stayed unprivileged: {prompt:?})")]
    EnableRefused { prompt: String },
    #[error(
        "the device asked {question:?} and the command carried no answer (put the answer on the \
         command's next line)"
    )]
    Unanswered { question: String },
    #[error("output exceeded the {limit}-byte limit")]
    TooMuchOutput { limit: u64 },
    /// The login at the device's own prompts failed (Telnet).
    #[error("{0}")]
    Login(#[from] LoginError),
    #[error("a command is already running in this session")]
    Busy,
    #[error("the session is not ready for commands")]
    NotReady,
}

#[derive(Debug)]
enum State {
    /// Answering the device's user-name and password prompts until its CLI
    /// prompt shows (transports without authentication of their own).
    Authenticating(Login),
    /// Waiting for the first prompt (banners may come first).
    Login,
    /// `enable` sent; `answered` once the secret went out.
    Enabling {
        answered: bool,
    },
    /// The paging-off command at this index was sent.
    PagingOff(usize),
    Ready,
    Running {
        /// The command's first line (to recognise its echo).
        command: String,
        /// Lines left to answer confirmation questions with.
        answers: VecDeque<String>,
    },
    /// An error was returned; nothing more will happen.
    Broken,
}

/// A shell session's protocol state (see the module docs).
#[derive(Debug)]
pub struct ShellSession {
    spec: &'static PlatformSpec,
    enable_password: Option<Secret>,
    state: State,
    /// Bytes received since the last step's input was sent.
    buf: Vec<u8>,
    /// Buffer length when a pager or question was last answered: nothing
    /// is answered twice.
    answered_at: usize,
    /// A pager was answered during this command (its text is removed).
    paged: bool,
    base_prompt: Option<String>,
    limit: u64,
    newline: &'static [u8],
}

/// Longest line considered as a prompt or pager text.
const MAX_PROMPT: usize = 512;

impl ShellSession {
    /// A session for a device of `platform`; `limit` caps one command's
    /// output (bytes). Lines are sent ending in `\n`.
    pub fn new(platform: Platform, enable_password: Option<Secret>, limit: u64) -> Self {
        Self {
            spec: platform.spec(),
            enable_password,
            state: State::Login,
            buf: Vec::new(),
            answered_at: 0,
            paged: false,
            base_prompt: None,
            limit,
            newline: b"\n",
        }
    }

    /// The session logs in first at the device's own prompts (Telnet):
    /// `login` answers them until the platform's CLI prompt shows.
    pub fn with_login(mut self, login: Login) -> Self {
        if matches!(self.state, State::Login) {
            self.state = State::Authenticating(login);
        }
        self
    }

    /// Lines are sent ending in `newline` (Telnet's end of line is CR LF,
    /// RFC 854 "The NVT printer and keyboard").
    pub fn with_newline(mut self, newline: &'static [u8]) -> Self {
        self.newline = newline;
        self
    }

    /// Whether set-up is over and no command runs.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    /// The prompt's fixed part, once learned (`r1` of `r1#`).
    pub fn base_prompt(&self) -> Option<&str> {
        self.base_prompt.as_deref()
    }

    /// The last, incomplete line received (escapes removed, tidied, at most
    /// 128 characters): what a device that never showed a prompt showed.
    pub fn last_line(&self) -> Option<String> {
        last_line(&self.buf).map(|l| tidy_max(&l, 128))
    }

    /// Starts a command: returns the bytes to send. `command`'s first line
    /// is the command; any further lines answer, in order, the confirmation
    /// questions it raises.
    pub fn run(&mut self, command: &str) -> Result<Zeroizing<Vec<u8>>, ShellError> {
        match self.state {
            State::Ready => {}
            State::Running { .. } => return Err(ShellError::Busy),
            _ => return Err(ShellError::NotReady),
        }
        // `split`, not `lines`: a trailing newline is an empty answer (Enter).
        let mut lines = command
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_string());
        let first = lines.next().unwrap_or_default();
        let answers = lines.collect();
        self.clear();
        let send = self.line(first.as_bytes());
        self.state = State::Running {
            command: first,
            answers,
        };
        Ok(send)
    }

    /// Feeds bytes from the device; returns what to do, in order.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<ShellEvent>, ShellError> {
        if matches!(self.state, State::Broken) {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(data);
        let mut events = Vec::new();
        if let Err(e) = self.step(&mut events) {
            self.state = State::Broken;
            self.buf = Vec::new();
            return Err(e);
        }
        Ok(events)
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.answered_at = 0;
        self.paged = false;
    }

    fn line(&self, text: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(text.len() + self.newline.len()));
        out.extend_from_slice(text);
        out.extend_from_slice(self.newline);
        out
    }

    fn step(&mut self, events: &mut Vec<ShellEvent>) -> Result<(), ShellError> {
        if let State::Running { command, .. } = &self.state {
            let slack = command.len() as u64 + 2 * MAX_PROMPT as u64;
            if self.buf.len() as u64 > self.limit.saturating_add(slack) {
                return Err(ShellError::TooMuchOutput { limit: self.limit });
            }
        }
        let Some(last) = last_line(&self.buf) else {
            return Ok(());
        };
        let fresh = self.buf.len() > self.answered_at;
        // A pager at the end of what arrived, not yet answered.
        if fresh && self.spec.pager.is_match(&last) {
            self.answered_at = self.buf.len();
            self.paged = true;
            events.push(ShellEvent::Send(Zeroizing::new(b" ".to_vec())));
            return Ok(());
        }
        if let State::Authenticating(login) = &mut self.state {
            if self.spec.prompt.is_match(&last) && !self.spec.enable_prompt.is_match(&last) {
                self.state = State::Login;
            } else {
                if let LoginStep::Send(answer) = login.step(&last)? {
                    let send = self.line(&answer);
                    self.clear();
                    events.push(ShellEvent::Send(send));
                }
                return Ok(());
            }
        }
        match &mut self.state {
            State::Authenticating(_) => unreachable!("handled above"),
            State::Login => {
                if self.spec.prompt.is_match(&last) {
                    self.learn(&last);
                    let unprivileged = self
                        .spec
                        .privileged
                        .as_ref()
                        .is_some_and(|p| !p.is_match(&last));
                    if unprivileged && self.enable_password.is_some() {
                        self.state = State::Enabling { answered: false };
                        self.clear();
                        events.push(ShellEvent::Send(self.line(b"enable")));
                    } else {
                        self.paging_off(0, events);
                    }
                }
            }
            State::Enabling { answered } => {
                if self.spec.enable_prompt.is_match(&last) {
                    if *answered {
                        return Err(ShellError::EnableRefused {
                            prompt: tidy_max(&last, 128),
                        });
                    }
                    *answered = true;
                    let secret = self.enable_password.as_ref().map(|s| s.expose().as_bytes());
                    let send = self.line(secret.unwrap_or_default());
                    self.clear();
                    events.push(ShellEvent::Send(send));
                } else if self.spec.prompt.is_match(&last) {
                    let privileged = self
                        .spec
                        .privileged
                        .as_ref()
                        .is_none_or(|p| p.is_match(&last));
                    if !privileged {
                        return Err(ShellError::EnableRefused {
                            prompt: tidy_max(&last, 128),
                        });
                    }
                    self.learn(&last);
                    self.paging_off(0, events);
                }
            }
            State::PagingOff(i) => {
                let next = *i + 1;
                if self.at_prompt(&last) {
                    self.learn(&last);
                    self.paging_off(next, events);
                }
            }
            State::Ready | State::Broken => {}
            State::Running { answers, .. } => {
                if fresh && self.spec.confirm.is_match(&last) {
                    let Some(answer) = answers.pop_front() else {
                        return Err(ShellError::Unanswered {
                            question: tidy_max(&last, 128),
                        });
                    };
                    // The question stays in the output, as on a terminal.
                    self.answered_at = self.buf.len();
                    events.push(ShellEvent::Send(self.line(answer.as_bytes())));
                } else if self.at_prompt(&last) {
                    let State::Running { command, .. } =
                        std::mem::replace(&mut self.state, State::Ready)
                    else {
                        unreachable!("matched above")
                    };
                    let raw = std::mem::take(&mut self.buf);
                    let output = clean(&raw, &command, self.paged);
                    let failed = self.spec.is_error(&String::from_utf8_lossy(&output));
                    events.push(ShellEvent::Done(ShellOutput { output, failed }));
                }
            }
        }
        Ok(())
    }

    /// A prompt of this device: the platform's shape, starting with the
    /// learned base prompt.
    fn at_prompt(&self, last: &str) -> bool {
        self.spec.prompt.is_match(last)
            && self
                .base_prompt
                .as_deref()
                .is_none_or(|base| last.starts_with(base))
    }

    fn learn(&mut self, prompt: &str) {
        let base = prompt
            .trim_end()
            .trim_end_matches(['>', '#', '$', '%'])
            .split('(')
            .next()
            .unwrap_or_default();
        self.base_prompt = Some(base.to_string());
    }

    fn paging_off(&mut self, index: usize, events: &mut Vec<ShellEvent>) {
        self.clear();
        match self.spec.paging_off.get(index) {
            Some(command) => {
                self.state = State::PagingOff(index);
                events.push(ShellEvent::Send(self.line(command.as_bytes())));
            }
            None => {
                self.state = State::Ready;
                events.push(ShellEvent::Ready);
            }
        }
    }
}

/// The last line of `buf` (after its last `\n`), escapes and carriage
/// returns resolved, if it is short enough to be a prompt or a pager.
pub(super) fn last_line(buf: &[u8]) -> Option<String> {
    let start = buf
        .iter()
        .rev()
        .take(MAX_PROMPT + 1)
        .position(|&b| b == b'\n')
        .map(|p| buf.len() - p)
        .or_else(|| (buf.len() <= MAX_PROMPT).then_some(0))?;
    let line = &buf[start..];
    let line = ANSI.replace_all(line, &b""[..]);
    // A carriage return inside the line moves back to its start: what
    // follows overwrites what came before (`\r` at the end changes nothing).
    let line = match line.iter().rposition(|&b| b == b'\r') {
        Some(p) if p + 1 < line.len() => &line[p + 1..],
        Some(p) => &line[..p],
        None => &line[..],
    };
    Some(String::from_utf8_lossy(line).into_owned())
}

/// ANSI/VT100 escape sequences: CSI (`ESC [ ... final`), character-set
/// selection (`ESC ( B`) and the two-byte ones (`ESC =`, `ESC 7`, ...).
static ANSI: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78DEHMc]")
        .expect("valid pattern")
});

/// Every platform's pager text, with the erasing the device sends after
/// the answer (backspaces over spaces, or a carriage return over spaces).
static PAGER_TEXT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r" ?(?:--More--(?:\(\d+%\))?|<--- More --->|---\(more(?: \d+%)?\)---) ?(?:\x08+ *\x08*|\r *\r)?",
    )
    .expect("valid pattern")
});

static LINE_ENDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\r\r\r\n|\r\r\n|\r\n|\n\r|\r").expect("valid pattern"));

/// A command's raw bytes (echo, output, trailing prompt) cleaned as the
/// module docs say.
fn clean(raw: &[u8], command: &str, paged: bool) -> Vec<u8> {
    // The trailing prompt: everything after the last line end.
    let body = match raw.iter().rposition(|&b| b == b'\n') {
        Some(p) => &raw[..=p],
        None => &raw[..0],
    };
    let body = if paged {
        PAGER_TEXT.replace_all(body, &b""[..])
    } else {
        body.into()
    };
    let body = ANSI.replace_all(&body, &b""[..]).into_owned();
    let body = match LINE_ENDS.replace_all(&body, &b"\n"[..]) {
        std::borrow::Cow::Borrowed(_) => body,
        std::borrow::Cow::Owned(o) => o,
    };
    // The echoed command: the first line, when it ends with the command.
    let command = command.trim();
    match body.iter().position(|&b| b == b'\n') {
        Some(p) if !command.is_empty() && body[..p].trim_ascii().ends_with(command.as_bytes()) => {
            body[p + 1..].to_vec()
        }
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(events: &[ShellEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                ShellEvent::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn done(events: &[ShellEvent]) -> Option<ShellOutput> {
        events.iter().find_map(|e| match e {
            ShellEvent::Done(o) => Some(o.clone()),
            _ => None,
        })
    }

    /// An IOS session through set-up: banner, paging off, ready.
    fn ready_ios(enable: Option<&str>) -> ShellSession {
        let mut s = ShellSession::new(Platform::IosXe, enable.map(Secret::new), 1 << 20);
        let ev = s.feed(b"\r\nAuthorised access only\r\n\r\nr1#").unwrap();
        assert_eq!(sent(&ev), ["terminal length 0\n"]);
        let ev = s.feed(b"terminal length 0\r\nr1#").unwrap();
        assert_eq!(sent(&ev), ["terminal width 511\n"]);
        let ev = s.feed(b"terminal width 511\r\n").unwrap();
        assert!(ev.is_empty(), "no prompt yet: {ev:?}");
        let ev = s.feed(b"r1#").unwrap();
        assert_eq!(ev, vec![ShellEvent::Ready]);
        s
    }

    #[test]
    fn setup_then_command_strips_echo_prompt_and_crlf() {
        let mut s = ready_ios(None);
        assert_eq!(s.base_prompt(), Some("r1"));
        assert_eq!(&s.run("show clock").unwrap()[..], b"show clock\n");
        assert_eq!(s.run("x"), Err(ShellError::Busy));
        // Output split anywhere, prompt last.
        assert!(s.feed(b"show cl").unwrap().is_empty());
        assert!(s.feed(b"ock\r\n*12:00:00 UTC\r\n").unwrap().is_empty());
        let out = done(&s.feed(b"r1#").unwrap()).unwrap();
        assert_eq!(out.output, b"*12:00:00 UTC\n");
        assert!(!out.failed);
        assert!(s.is_ready());
    }

    #[test]
    fn a_prompt_of_another_device_or_a_lookalike_line_is_output() {
        let mut s = ready_ios(None);
        s.run("show run").unwrap();
        let ev = s.feed(b"show run\r\nhostname r2\r\nr2#").unwrap();
        assert!(done(&ev).is_none(), "r2# is not this device's prompt");
        let out = done(&s.feed(b"\r\nend\r\nr1#").unwrap()).unwrap();
        assert_eq!(out.output, b"hostname r2\nr2#\nend\n");
    }

    #[test]
    fn errors_are_failures() {
        let mut s = ready_ios(None);
        s.run("show bogus").unwrap();
        let out = done(
            &s.feed(b"show bogus\r\n% Invalid input detected at '^' marker.\r\nr1#")
                .unwrap(),
        )
        .unwrap();
        assert!(out.failed);
    }

    #[test]
    fn pager_is_answered_and_removed() {
        let mut s = ready_ios(None);
        s.run("show run").unwrap();
        let ev = s
            .feed(b"show run\r\nline 1\r\nline 2\r\n --More-- ")
            .unwrap();
        assert_eq!(sent(&ev), [" "]);
        // Nothing new: no second answer.
        assert!(s.feed(b"").unwrap().is_empty());
        let ev = s
            .feed(b"\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08          \x08\x08\x08\x08\x08\x08\x08\x08\x08\x08line 3\r\n --More-- ")
            .unwrap();
        assert_eq!(sent(&ev), [" "]);
        let out = done(&s.feed(b"\r          \rline 4\r\nr1#").unwrap()).unwrap();
        assert_eq!(out.output, b"line 1\nline 2\nline 3\nline 4\n");
    }

    #[test]
    fn enable_sends_the_secret_once() {
        let mut s = ShellSession::new(Platform::IosXe, Some(Secret::new("s3cret")), 1 << 20);
        let ev = s.feed(b"r1>").unwrap();
        assert_eq!(sent(&ev), ["enable\n"]);
        let ev = s.feed(b"enable\r\nPassword: ").unwrap();
        assert_eq!(sent(&ev), ["s3cret\n"]);
        let ev = s.feed(b"\r\nr1#").unwrap();
        assert_eq!(sent(&ev), ["terminal length 0\n"]);

        // A wrong secret: asked again, never sent twice.
        let mut s = ShellSession::new(Platform::IosXe, Some(Secret::new("bad")), 1 << 20);
        s.feed(b"r1>").unwrap();
        s.feed(b"Password: ").unwrap();
        let err = s.feed(b"\r\nPassword: ").unwrap_err();
        assert!(matches!(err, ShellError::EnableRefused { .. }), "{err}");
        // Or refused back to the user prompt.
        let mut s = ShellSession::new(Platform::IosXe, Some(Secret::new("bad")), 1 << 20);
        s.feed(b"r1>").unwrap();
        s.feed(b"Password: ").unwrap();
        let err = s.feed(b"\r\n% Access denied\r\n\r\nr1>").unwrap_err();
        assert_eq!(
            err,
            ShellError::EnableRefused {
                prompt: "r1>".into()
            }
        );
        assert_eq!(s.run("show clock"), Err(ShellError::NotReady));
    }

    #[test]
    fn no_enable_without_a_secret() {
        let mut s = ShellSession::new(Platform::IosXe, None, 1 << 20);
        let ev = s.feed(b"r1>").unwrap();
        assert_eq!(sent(&ev), ["terminal length 0\n"]);
    }

    #[test]
    fn confirmations_take_the_commands_next_line_or_fail() {
        let mut s = ready_ios(None);
        s.run("clear counters\n").unwrap();
        let ev = s
            .feed(
                b"clear counters\r\nClear \"show interface\" counters on all interfaces [confirm]",
            )
            .unwrap();
        assert_eq!(sent(&ev), ["\n"]);
        let out = done(&s.feed(b"\r\nr1#").unwrap()).unwrap();
        assert!(
            out.output.starts_with(b"Clear \"show interface\""),
            "{:?}",
            String::from_utf8_lossy(&out.output)
        );
        s.run("reload").unwrap();
        let err = s
            .feed(b"reload\r\nProceed with reload? [confirm]")
            .unwrap_err();
        assert!(matches!(err, ShellError::Unanswered { .. }), "{err}");
    }

    #[test]
    fn ansi_escapes_and_output_limit() {
        let mut s = ShellSession::new(Platform::Linux, None, 64);
        let ev = s.feed(b"\x1b[?2004h\x1b[01;32muser@h\x1b[00m:~$ ").unwrap();
        assert_eq!(ev, vec![ShellEvent::Ready]);
        assert_eq!(s.base_prompt(), Some("user@h:~"));
        s.run("ls").unwrap();
        let out = done(
            &s.feed(b"ls\r\n\x1b[01;34mdir\x1b[0m  file\r\n\x1b[01;32muser@h\x1b[00m:~$ ")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(out.output, b"dir  file\n");
        s.run("cat big").unwrap();
        let err = s.feed(&[b'x'; 2048]).unwrap_err();
        assert_eq!(err, ShellError::TooMuchOutput { limit: 64 });
    }

    #[test]
    fn telnet_login_then_enable_with_crlf_lines() {
        let login = Login::new(Some("admin".into()), Some(Secret::new("pw")));
        let mut s = ShellSession::new(Platform::IosXe, Some(Secret::new("en")), 1 << 20)
            .with_login(login)
            .with_newline(b"\r\n");
        let ev = s
            .feed(b"\r\nAuthorised access only\r\n\r\nUsername: ")
            .unwrap();
        assert_eq!(sent(&ev), ["admin\r\n"]);
        let ev = s.feed(b"admin\r\nPassword: ").unwrap();
        assert_eq!(sent(&ev), ["pw\r\n"]);
        // The CLI prompt ends the login; enable's "Password:" is enable's.
        let ev = s.feed(b"\r\nr1>").unwrap();
        assert_eq!(sent(&ev), ["enable\r\n"]);
        let ev = s.feed(b"enable\r\nPassword: ").unwrap();
        assert_eq!(sent(&ev), ["en\r\n"]);
        let ev = s.feed(b"\r\nr1#").unwrap();
        assert_eq!(sent(&ev), ["terminal length 0\r\n"]);

        // Refused: asked again, the password sent once.
        let login = Login::new(Some("admin".into()), Some(Secret::new("bad")));
        let mut s = ShellSession::new(Platform::IosXe, None, 1 << 20).with_login(login);
        s.feed(b"Username: ").unwrap();
        s.feed(b"admin\r\nPassword: ").unwrap();
        let err = s
            .feed(b"\r\n% Login invalid\r\n\r\nUsername: ")
            .unwrap_err();
        assert!(
            matches!(err, ShellError::Login(LoginError::Refused { .. })),
            "{err}"
        );
        assert_eq!(s.run("show clock"), Err(ShellError::NotReady));
    }
}
