//! `OutputSink`: where a driver puts one device's command output as it
//! arrives, on its way to the caller.
//!
//! Owns: the output of the running command not yet sent (at most
//! [`OUTPUT_CHUNK`] per stream before it goes), and the inline tails of the
//! device's finished commands (at most [`INLINE_BUDGET`] for the device).
//!
//! Takes: [`OutputSink::write`] (bytes from the device, exactly as sent),
//! [`OutputSink::flush`] (send what is held; a driver calls it before it
//! waits on the device, so output reaches the caller as it comes),
//! [`OutputSink::end_command`] (the command ended: a small remainder stays
//! to ride inline in the device's `ExecDevice`, a large one is sent).
//!
//! Back-pressure: chunks go as `Response::ExecOutput` on the request's
//! bounded channel, so a slow caller makes `write`/`flush` wait and the
//! driver stops reading the device; nothing here grows past the chunk
//! size. On failure: the caller went away ([`SinkError::CallerGone`]) or a
//! command passed the caller's cap ([`SinkError::TooMuch`]); the driver
//! stops the command either way.

use bytes::BytesMut;
use tokio::sync::mpsc;

use crate::wire::messages::Response;

/// Largest output chunk in one `ExecOutput` event; well under the frame
/// limit.
pub const OUTPUT_CHUNK: usize = 512 * 1024;

/// Output held past this size is bulk: the chunk's buffer is then
/// reserved whole rather than grown step by step (small outputs stay small).
const GROW_WHOLE: usize = 16 * 1024;

/// Output a device's finished commands may keep to ride inline in its
/// `ExecDevice` frame (small commands then cost one frame, not two).
pub const INLINE_BUDGET: usize = 512 * 1024;

/// Which of a command's output streams bytes belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    /// SSH extended data type 1 (RFC 4254 §5.2).
    Stderr,
}

/// Why output could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("the caller went away")]
    CallerGone,
    #[error("output exceeded the {limit}-byte limit")]
    TooMuch { limit: u64 },
}

/// The part of a finished command's output not yet sent: it rides inline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// One device's output path to the caller (see the module docs).
#[derive(Debug)]
pub struct OutputSink {
    out: mpsc::Sender<Response>,
    device: u32,
    command: u32,
    pending: [BytesMut; 2],
    inline_left: usize,
    /// Per-command cap (`None`: none).
    cap: Option<u64>,
    /// Bytes the running command has given so far.
    written: u64,
    /// The request's number of commands, when known: only the last one's
    /// remainder may ride inline (see [`OutputSink::with_commands`]).
    commands: Option<u32>,
}

impl OutputSink {
    /// A sink for device `device` of a request (its index), sending on
    /// `out`; each command may give at most `cap` bytes.
    pub fn new(out: mpsc::Sender<Response>, device: u32, cap: Option<u64>) -> Self {
        Self {
            out,
            device,
            command: 0,
            pending: [BytesMut::new(), BytesMut::new()],
            inline_left: INLINE_BUDGET,
            cap,
            written: 0,
            commands: None,
        }
    }

    /// The request runs `commands` commands on this device: then only the
    /// last command's remainder rides inline, the others' are sent when
    /// they end, so the caller gets the device's output in command order
    /// (an inline tail arrives after every chunk, and a caller printing
    /// chunks as they come would otherwise print an earlier command's
    /// tail after a later command's output).
    pub fn with_commands(mut self, commands: usize) -> Self {
        self.commands = Some(u32::try_from(commands).unwrap_or(u32::MAX));
        self
    }

    /// The next output belongs to command `command` (its index in the
    /// request).
    pub fn start_command(&mut self, command: u32) {
        self.command = command;
        self.written = 0;
    }

    /// Takes bytes of the running command; sends when a chunk is full
    /// (waiting for the caller to take it).
    pub async fn write(&mut self, stream: OutputStream, data: &[u8]) -> Result<(), SinkError> {
        self.written = self.written.saturating_add(data.len() as u64);
        if let Some(limit) = self.cap
            && self.written > limit
        {
            return Err(SinkError::TooMuch { limit });
        }
        let mut data = data;
        while !data.is_empty() {
            let buf = &mut self.pending[stream as usize];
            let room = OUTPUT_CHUNK - buf.len();
            if buf.len() + data.len() > buf.capacity() && buf.len() + data.len() > GROW_WHOLE {
                // Bulk output: the chunk's whole room at once (growing by
                // doubling copied each chunk about once more, 3.5% of the
                // service's CPU time in a bulk exec; perf).
                buf.reserve(room);
            }
            let (now, rest) = data.split_at(room.min(data.len()));
            buf.extend_from_slice(now);
            data = rest;
            if buf.len() >= OUTPUT_CHUNK {
                self.send(stream).await?;
            }
        }
        Ok(())
    }

    /// Sends everything held (a driver calls this before it waits on the
    /// device).
    pub async fn flush(&mut self) -> Result<(), SinkError> {
        self.send(OutputStream::Stdout).await?;
        self.send(OutputStream::Stderr).await
    }

    /// The running command ended: returns what stays to ride inline (all
    /// of the remainder when it fits the device's inline budget and no
    /// later command follows, else nothing: it is sent now).
    pub async fn end_command(&mut self) -> Result<Tail, SinkError> {
        let held = self.pending[0].len() + self.pending[1].len();
        let later = self.commands.is_some_and(|n| self.command + 1 < n);
        if held > self.inline_left || later {
            self.flush().await?;
            return Ok(Tail::default());
        }
        self.inline_left -= held;
        Ok(Tail {
            stdout: self.pending[0].split().to_vec(),
            stderr: self.pending[1].split().to_vec(),
        })
    }

    async fn send(&mut self, stream: OutputStream) -> Result<(), SinkError> {
        let buf = &mut self.pending[stream as usize];
        if buf.is_empty() {
            return Ok(());
        }
        let data = buf.split().freeze();
        self.out
            .send(Response::ExecOutput {
                device: self.device,
                command: self.command,
                stderr: stream == OutputStream::Stderr,
                data,
            })
            .await
            .map_err(|_| SinkError::CallerGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(rx: &mut mpsc::Receiver<Response>) -> Vec<(u32, bool, usize)> {
        let mut seen = Vec::new();
        while let Ok(Response::ExecOutput {
            command,
            stderr,
            data,
            ..
        }) = rx.try_recv()
        {
            seen.push((command, stderr, data.len()));
        }
        seen
    }

    #[tokio::test]
    async fn small_output_stays_inline_large_output_goes_in_chunks() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut sink = OutputSink::new(tx, 0, None);
        sink.start_command(0);
        sink.write(OutputStream::Stdout, b"hi\n").await.unwrap();
        sink.write(OutputStream::Stderr, b"err\n").await.unwrap();
        let tail = sink.end_command().await.unwrap();
        assert_eq!(tail.stdout, b"hi\n");
        assert_eq!(tail.stderr, b"err\n");
        assert!(chunks(&mut rx).is_empty());
        sink.start_command(1);
        let big = vec![7u8; OUTPUT_CHUNK + 10];
        sink.write(OutputStream::Stdout, &big).await.unwrap();
        assert_eq!(chunks(&mut rx), vec![(1, false, OUTPUT_CHUNK)]);
        sink.flush().await.unwrap();
        assert_eq!(chunks(&mut rx), vec![(1, false, 10)]);
    }

    #[tokio::test]
    async fn only_the_last_commands_remainder_rides_inline_when_the_count_is_known() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut sink = OutputSink::new(tx, 0, None).with_commands(2);
        sink.start_command(0);
        sink.write(OutputStream::Stdout, b"first\n").await.unwrap();
        assert_eq!(sink.end_command().await.unwrap(), Tail::default());
        assert_eq!(chunks(&mut rx), vec![(0, false, 6)]);
        sink.start_command(1);
        sink.write(OutputStream::Stdout, b"last\n").await.unwrap();
        assert_eq!(sink.end_command().await.unwrap().stdout, b"last\n");
        assert!(chunks(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn the_cap_counts_both_streams_and_a_gone_caller_is_an_error() {
        let (tx, rx) = mpsc::channel(1);
        let mut sink = OutputSink::new(tx, 0, Some(5));
        sink.write(OutputStream::Stdout, b"abc").await.unwrap();
        assert_eq!(
            sink.write(OutputStream::Stderr, b"def").await,
            Err(SinkError::TooMuch { limit: 5 })
        );
        drop(rx);
        assert_eq!(sink.flush().await, Err(SinkError::CallerGone));
    }
}
