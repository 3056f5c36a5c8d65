//! The interactive shell of a simulated device: a tiny line discipline
//! (echo, backspace, Ctrl-C, Ctrl-D, CR/LF) over the CLI model. Pure: bytes
//! in, [`ShellEvent`]s out; the SSH server does the I/O.

use super::model::{CliState, Output, SimDevice};

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
        Self {
            device,
            state: CliState::default(),
            line: Vec::new(),
            tty,
            closed: false,
            after_cr: false,
        }
    }

    /// The banner and first prompt.
    pub fn start(&self) -> Vec<ShellEvent> {
        vec![ShellEvent::Write(self.prompt_bytes(true))]
    }

    fn newline(&self) -> &'static [u8] {
        if self.tty { b"\r\n" } else { b"\n" }
    }

    fn prompt_bytes(&self, leading_newline: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if leading_newline {
            out.extend_from_slice(self.newline());
        }
        out.extend_from_slice(self.device.prompt().as_bytes());
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
                    if self.tty {
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
        match self.device.run(&mut self.state, &line) {
            Output::Text { text, .. } => {
                let mut out = self.convert(&text);
                out.extend_from_slice(&self.prompt_bytes(false));
                events.push(ShellEvent::Write(out));
            }
            Output::Binary(bytes) => {
                let mut out = bytes;
                out.extend_from_slice(&self.prompt_bytes(false));
                events.push(ShellEvent::Write(out));
            }
            Output::Bulk(n) => {
                events.push(ShellEvent::Bulk(n));
                events.push(ShellEvent::Write(self.prompt_bytes(true)));
            }
            Output::Exit => {
                self.closed = true;
                events.push(ShellEvent::Close);
            }
        }
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
    fn bulk_in_shell_is_streamed() {
        let mut sh = Shell::new(SimDevice::new("r1"), false);
        let ev = sh.feed(b"show bulk 10\n");
        assert_eq!(ev[0], ShellEvent::Bulk(10));
    }
}
