//! The terminal's ssh-style escapes, as a sans-IO state machine: bytes typed
//! in, bytes for the device and local actions out.
//!
//! An escape is `~` typed at the start of a line (first keystroke, or right
//! after Enter: `\r` or `\n`) followed by:
//!
//! | keys | effect |
//! | --- | --- |
//! | `~.` | end the terminal |
//! | `~?` | show the escapes (nothing is sent) |
//! | `~~` | send one `~` |
//!
//! A `~` followed by anything else sends both, as OpenSSH does. A `~` at the
//! end of one read waits for the next one to decide.

/// What the keystrokes of one read come to, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes for the device.
    Send(Vec<u8>),
    /// Show [`HELP`] locally.
    Help,
    /// End the terminal (`~.`); later keystrokes of the read are dropped.
    End,
}

/// The help `~?` shows, with raw-mode line ends.
pub const HELP: &str = "\r\nSupported escape sequences (at the start of a line):\r\n  \
     ~.  end the terminal\r\n  \
     ~?  this help\r\n  \
     ~~  send one ~\r\n";

/// The escape state across reads.
#[derive(Debug, Clone)]
pub struct Escapes {
    at_line_start: bool,
    tilde_pending: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Self::new()
    }
}

impl Escapes {
    /// A terminal that has just opened: its first keystroke starts a line.
    pub fn new() -> Self {
        Self {
            at_line_start: true,
            tilde_pending: false,
        }
    }

    /// Turns one read's keystrokes into steps.
    pub fn feed(&mut self, input: &[u8]) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut send = Vec::with_capacity(input.len());
        for &byte in input {
            if self.tilde_pending {
                self.tilde_pending = false;
                match byte {
                    b'.' => {
                        flush(&mut send, &mut steps);
                        steps.push(Step::End);
                        return steps;
                    }
                    b'?' => {
                        flush(&mut send, &mut steps);
                        steps.push(Step::Help);
                        // Still at the start of a line: `~.` may follow.
                        continue;
                    }
                    b'~' => {
                        send.push(b'~');
                        self.at_line_start = false;
                        continue;
                    }
                    _ => send.push(b'~'),
                }
            } else if byte == b'~' && self.at_line_start {
                self.tilde_pending = true;
                continue;
            }
            send.push(byte);
            self.at_line_start = byte == b'\r' || byte == b'\n';
        }
        flush(&mut send, &mut steps);
        steps
    }

    /// What is still held when input ends: a lone `~`, sent as typed.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        std::mem::take(&mut self.tilde_pending).then(|| b"~".to_vec())
    }
}

fn flush(send: &mut Vec<u8>, steps: &mut Vec<Step>) {
    if !send.is_empty() {
        steps.push(Step::Send(std::mem::take(send)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(steps: &[Step]) -> Vec<u8> {
        steps
            .iter()
            .flat_map(|s| match s {
                Step::Send(b) => b.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn tilde_dot_at_the_start_ends() {
        let mut e = Escapes::new();
        assert_eq!(e.feed(b"~.ignored"), vec![Step::End]);
        let mut e = Escapes::new();
        assert_eq!(
            e.feed(b"ls\r~.x"),
            vec![Step::Send(b"ls\r".to_vec()), Step::End]
        );
        let mut e = Escapes::new();
        assert_eq!(
            e.feed(b"a\n~."),
            vec![Step::Send(b"a\n".to_vec()), Step::End]
        );
    }

    #[test]
    fn tilde_in_the_middle_of_a_line_is_plain() {
        let mut e = Escapes::new();
        let steps = e.feed(b"cd ~.\r");
        assert_eq!(steps, vec![Step::Send(b"cd ~.\r".to_vec())]);
    }

    #[test]
    fn double_tilde_sends_one_and_leaves_the_line_start() {
        let mut e = Escapes::new();
        let steps = e.feed(b"~~.");
        assert_eq!(sent(&steps), b"~.");
        assert!(!steps.contains(&Step::End));
    }

    #[test]
    fn help_sends_nothing_and_keeps_the_line_start() {
        let mut e = Escapes::new();
        assert_eq!(e.feed(b"~?"), vec![Step::Help]);
        assert_eq!(e.feed(b"~."), vec![Step::End]);
    }

    #[test]
    fn other_keys_after_a_tilde_send_both() {
        let mut e = Escapes::new();
        let steps = e.feed(b"~x~y");
        // `~x` leaves the line start, so the second `~` is plain.
        assert_eq!(sent(&steps), b"~x~y");
        let mut e = Escapes::new();
        assert_eq!(sent(&e.feed(b"~\r~q")), b"~\r~q");
    }

    #[test]
    fn an_escape_split_across_reads_still_counts() {
        let mut e = Escapes::new();
        assert_eq!(e.feed(b"show\r~"), vec![Step::Send(b"show\r".to_vec())]);
        assert_eq!(e.feed(b"."), vec![Step::End]);
        let mut e = Escapes::new();
        assert_eq!(e.feed(b"~"), vec![]);
        assert_eq!(e.finish(), Some(b"~".to_vec()));
        assert_eq!(e.finish(), None);
    }
}
