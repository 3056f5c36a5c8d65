//! The interactive shell of a simulated device: a tiny line discipline
//! (echo, backspace, Ctrl-C, Ctrl-D, CR/LF) over the CLI model, with what
//! real CLIs add on top ([`ShellOptions`]): a login banner, an IOS-style
//! pager (` --More-- ` once a page of `terminal length` lines is shown;
//! space: next page, Enter: next line, anything else: stop), user mode with
//! `enable` asking for a secret (`Password: `, three tries, then `% Bad
//! secrets`), and `[confirm]` questions that wait for a line. Pure: bytes
//! in, [`ShellEvent`]s out; the SSH server does the I/O.

use std::collections::VecDeque;

use super::model::{CliState, Output, SimDevice};
use crate::secret::Secret;

/// What a simulated device's shell adds to the plain CLI (all off by
/// default).
#[derive(Debug, Clone, Default)]
pub struct ShellOptions {
    /// Sessions start in user mode; `enable` asks for this secret.
    pub enable_secret: Option<Secret>,
    /// Printed before the first prompt.
    pub banner: Option<String>,
    /// The terminal length a session starts with (0: no pager).
    pub terminal_length: u32,
}

/// What the next input line (or key) is for.
#[derive(Debug)]
enum Mode {
    Command,
    /// Reading the enable secret (not echoed); tries so far.
    Password {
        tries: u8,
    },
    /// A `[confirm]` question waits for a line.
    Confirm,
    /// The pager waits for a key; the lines not yet shown.
    Paging(VecDeque<String>),
}

/// The pager's text and what erases it (IOS sends backspaces, spaces,
/// backspaces).
const MORE: &[u8] = b" --More-- ";
const MORE_ERASE: &[u8] =
    b"\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08          \x08\x08\x08\x08\x08\x08\x08\x08\x08\x08";

/// What the shell wants written or done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellEvent {
    /// Bytes for the terminal (echo, output, prompt).
    Write(Vec<u8>),
    /// Stream this many bytes of bulk filler.
    Bulk(u64),
    /// End the session.
    Close,
}

/// One interactive session's state.
#[derive(Debug)]
pub struct Shell {
    device: SimDevice,
    state: CliState,
    options: ShellOptions,
    mode: Mode,
    line: Vec<u8>,
    /// Terminal mode (a pty was requested): echo input and use CRLF.
    tty: bool,
    closed: bool,
    /// The previous byte was CR, so a following LF is part of the same
    /// line ending, not an empty command.
    after_cr: bool,
}

/// Longest command line accepted; longer input is dropped, like a real
/// device's line buffer.
const MAX_LINE: usize = 4096;

impl Shell {
    pub fn new(device: SimDevice, tty: bool) -> Self {
        Self::with_options(device, tty, ShellOptions::default())
    }

    /// A shell with a banner, pager or enable secret.
    pub fn with_options(device: SimDevice, tty: bool, options: ShellOptions) -> Self {
        let state = CliState {
            terminal_length: Some(options.terminal_length),
            user_mode: options.enable_secret.is_some(),
        };
        Self {
            device,
            state,
            options,
            mode: Mode::Command,
            line: Vec::new(),
            tty,
            closed: false,
            after_cr: false,
        }
    }

    /// The banner and first prompt.
    pub fn start(&self) -> Vec<ShellEvent> {
        let mut out = Vec::new();
        if let Some(banner) = &self.options.banner {
            out.extend_from_slice(self.newline());
            out.extend_from_slice(&self.convert(banner));
            out.extend_from_slice(self.newline());
        }
        out.extend_from_slice(&self.prompt_bytes(true));
        vec![ShellEvent::Write(out)]
    }

    fn newline(&self) -> &'static [u8] {
        if self.tty { b"\r\n" } else { b"\n" }
    }

    fn prompt_bytes(&self, leading_newline: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if leading_newline {
            out.extend_from_slice(self.newline());
        }
        out.extend_from_slice(self.device.prompt(&self.state).as_bytes());
        out
    }

    fn convert(&self, text: &str) -> Vec<u8> {
        if self.tty {
            text.replace('\n', "\r\n").into_bytes()
        } else {
            text.as_bytes().to_vec()
        }
    }

    /// Feeds input bytes; returns what to write or do.
    pub fn feed(&mut self, input: &[u8]) -> Vec<ShellEvent> {
        let mut events = Vec::new();
        let mut echo = Vec::new();
        for &byte in input {
            if self.closed {
                break;
            }
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            if let Mode::Paging(_) = self.mode {
                if !(byte == b'\n' && after_cr) {
                    self.after_cr = byte == b'\r';
                    flush(&mut events, &mut echo);
                    self.page_key(byte, &mut events);
                }
                continue;
            }
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    if self.tty {
                        echo.extend_from_slice(b"\r\n");
                    }
                    flush(&mut events, &mut echo);
                    self.run_line(&mut events);
                }
                0x7f | 0x08 => {
                    let erased = self.line.pop().is_some();
                    if erased && self.tty {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x03 => {
                    self.line.clear();
                    self.mode = Mode::Command;
                    if self.tty {
                        echo.extend_from_slice(b"^C");
                    }
                    echo.extend_from_slice(&self.prompt_bytes(true));
                }
                0x04 if self.line.is_empty() => {
                    flush(&mut events, &mut echo);
                    self.closed = true;
                    events.push(ShellEvent::Close);
                }
                b if b >= 0x20 && self.line.len() < MAX_LINE => {
                    self.line.push(b);
                    // A secret is never echoed.
                    if self.tty && !matches!(self.mode, Mode::Password { .. }) {
                        echo.push(b);
                    }
                }
                _ => {}
            }
        }
        flush(&mut events, &mut echo);
        events
    }

    fn run_line(&mut self, events: &mut Vec<ShellEvent>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::Command | Mode::Paging(_) => {}
            Mode::Password { tries } => return self.check_secret(&line, tries, events),
            Mode::Confirm => {
                // Any line goes on (IOS takes Enter or `y`).
                events.push(ShellEvent::Write(self.prompt_bytes(false)));
                return;
            }
        }
        match self.device.run(&mut self.state, &line) {
            Output::Text { text, .. } => self.show(&text, events),
            Output::Binary(bytes) => {
                let mut out = bytes;
                out.extend_from_slice(&self.prompt_bytes(false));
                events.push(ShellEvent::Write(out));
            }
            Output::Bulk(n) => {
                events.push(ShellEvent::Bulk(n));
                // Bulk filler ends with a line end when it is whole lines.
                let whole_lines = n % 64 == 0;
                events.push(ShellEvent::Write(self.prompt_bytes(!whole_lines)));
            }
            Output::Enable => {
                self.mode = Mode::Password { tries: 0 };
                events.push(ShellEvent::Write(b"Password: ".to_vec()));
            }
            Output::Confirm(question) => {
                self.mode = Mode::Confirm;
                events.push(ShellEvent::Write(self.convert(&question)));
            }
            Output::Exit => {
                self.closed = true;
                events.push(ShellEvent::Close);
            }
        }
    }
}

impl Shell {
    /// Shows command output, a page at a time when a terminal length is set.
    fn show(&mut self, text: &str, events: &mut Vec<ShellEvent>) {
        let page = self.state.terminal_length.unwrap_or(0) as usize;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        if page == 0 || lines.len() <= page {
            let mut out = self.convert(text);
            out.extend_from_slice(&self.prompt_bytes(false));
            events.push(ShellEvent::Write(out));
            return;
        }
        let mut out = self.convert(&lines[..page].concat());
        out.extend_from_slice(MORE);
        events.push(ShellEvent::Write(out));
        let rest = lines[page..].iter().map(|l| l.to_string()).collect();
        self.mode = Mode::Paging(rest);
    }

    /// A key while the pager waits.
    fn page_key(&mut self, key: u8, events: &mut Vec<ShellEvent>) {
        let Mode::Paging(rest) = &mut self.mode else {
            return;
        };
        let count = match key {
            b' ' => self.state.terminal_length.unwrap_or(0).max(1) as usize,
            b'\r' | b'\n' => 1,
            _ => 0,
        };
        let shown: String = rest.drain(..count.min(rest.len())).collect();
        let more = !rest.is_empty() && count > 0;
        let mut out = MORE_ERASE.to_vec();
        out.extend_from_slice(&self.convert(&shown));
        if more {
            out.extend_from_slice(MORE);
        } else {
            self.mode = Mode::Command;
            if count == 0 {
                out.extend_from_slice(self.newline());
            }
            out.extend_from_slice(&self.prompt_bytes(false));
        }
        events.push(ShellEvent::Write(out));
    }

    /// The enable secret typed after `Password: `.
    fn check_secret(&mut self, typed: &str, tries: u8, events: &mut Vec<ShellEvent>) {
        let good = self.options.enable_secret.as_ref().is_some_and(|s| {
            use subtle::ConstantTimeEq;
            let s = s.expose().as_bytes();
            s.len() == typed.len() && bool::from(s.ct_eq(typed.as_bytes()))
        });
        let mut out = Vec::new();
        if good {
            self.state.user_mode = false;
        } else if tries + 1 < 3 {
            self.mode = Mode::Password { tries: tries + 1 };
            events.push(ShellEvent::Write(b"Password: ".to_vec()));
            return;
        } else {
            out.extend_from_slice(&self.convert("% Bad secrets\n\n"));
        }
        out.extend_from_slice(&self.prompt_bytes(false));
        events.push(ShellEvent::Write(out));
    }
}

fn flush(events: &mut Vec<ShellEvent>, echo: &mut Vec<u8>) {
    if !echo.is_empty() {
        events.push(ShellEvent::Write(std::mem::take(echo)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(events: &[ShellEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                ShellEvent::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn runs_commands_with_prompt_and_exit() {
        let mut sh = Shell::new(SimDevice::new("r1"), false);
        assert!(written(&sh.start()).ends_with("r1#"));
        let out = written(&sh.feed(b"show clock\n"));
        assert!(out.contains("UTC"), "{out}");
        assert!(out.ends_with("r1#"));
        assert_eq!(sh.feed(b"exit\n"), vec![ShellEvent::Close]);
        assert!(sh.feed(b"show clock\n").is_empty());
    }

    #[test]
    fn tty_echo_backspace_crlf_and_ctrl_c() {
        let mut sh = Shell::new(SimDevice::new("r1"), true);
        let out = written(&sh.feed(b"shox\x7fw clock\r\n"));
        assert!(out.starts_with("shox\x08 \x08w clock\r\n"), "{out:?}");
        assert!(out.contains("2024\r\n"), "{out:?}");
        // CR LF is one line ending: exactly one prompt follows.
        assert_eq!(out.matches("r1#").count(), 1);
        let out = written(&sh.feed(b"garbage\x03"));
        assert!(out.ends_with("^C\r\nr1#"), "{out:?}");
        let out = written(&sh.feed(b"\r"));
        assert!(!out.contains("Invalid"), "line was cleared by ^C: {out:?}");
        assert_eq!(sh.feed(b"\x04"), vec![ShellEvent::Close]);
    }

    #[test]
    fn banner_enable_pager_and_confirm() {
        let options = ShellOptions {
            enable_secret: Some(Secret::new("s3cret")),
            banner: Some("Authorised access only".into()),
            terminal_length: 2,
        };
        let mut sh = Shell::with_options(SimDevice::new("r1"), true, options);
        let out = written(&sh.start());
        assert_eq!(out, "\r\nAuthorised access only\r\n\r\nr1>");
        assert!(written(&sh.feed(b"show running-config\r")).contains("% Invalid input"));
        assert_eq!(written(&sh.feed(b"enable\r")), "enable\r\nPassword: ");
        // Not echoed; a wrong secret asks again, the right one enables.
        assert_eq!(written(&sh.feed(b"nope\r")), "\r\nPassword: ");
        assert_eq!(written(&sh.feed(b"s3cret\r")), "\r\nr1#");
        // Four lines of output at two per page.
        let out = written(&sh.feed(b"show running-config\r"));
        assert!(
            out.starts_with("show running-config\r\nBuilding"),
            "{out:?}"
        );
        assert!(out.ends_with("\r\n --More-- "), "{out:?}");
        let out = written(&sh.feed(b" "));
        assert!(out.starts_with("\x08\x08"), "{out:?}");
        assert!(out.ends_with(" --More-- "), "{out:?}");
        let out = written(&sh.feed(b"q"));
        assert!(out.ends_with("\r\nr1#"), "{out:?}");
        let out = written(&sh.feed(b"terminal length 0\rclear counters\r"));
        assert!(out.ends_with("[confirm]"), "{out:?}");
        assert!(written(&sh.feed(b"\r")).ends_with("\r\nr1#"));
        // Three wrong secrets: refused.
        sh.feed(b"disable\renable\r");
        sh.feed(b"a\rb\r");
        assert_eq!(written(&sh.feed(b"c\r")), "\r\n% Bad secrets\r\n\r\nr1>");
    }

    #[test]
    fn bulk_in_shell_is_streamed() {
        let mut sh = Shell::new(SimDevice::new("r1"), false);
        let ev = sh.feed(b"show bulk 10\n");
        assert_eq!(ev[0], ShellEvent::Bulk(10));
    }
}
