//! `OutputWriter`: a thread that writes streamed exec output to this
//! process's stdout and stderr, so the CLI's one-thread runtime goes on
//! reading the next chunks from the broker while a write waits for the
//! reader of a pipe (a 512 KiB chunk into a 64 KiB pipe blocks until the
//! reader has taken most of it; done on the runtime's thread, that time
//! was lost to reading: measured with `benches/exec_vs_ssh.py`).
//!
//! Owns: the writes to stdout and stderr of the output it is given, in the
//! order given (across both streams).
//! Takes: [`OutputWriter::write`] (bytes for one stream; waits while
//! [`QUEUED`] chunks are already waiting) and [`OutputWriter::finish`]
//! (everything written, the thread ended).
//! On failure: a closed stdout ends the process with 141 (as a command
//! killed by SIGPIPE), any other write error with 1 and an error line,
//! as [`super::write_stdout_bytes`] does.

use std::io::Write;
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::mpsc;

/// Chunks waiting for the thread at most (each at most the service's
/// 512 KiB output chunk): bounds memory and keeps back-pressure.
pub const QUEUED: usize = 4;

/// See the module docs.
pub struct OutputWriter {
    tx: Option<mpsc::Sender<(bool, Bytes)>>,
    thread: Option<JoinHandle<()>>,
}

impl OutputWriter {
    /// Starts the writing thread (falls back to writing in place if no
    /// thread can be started).
    pub fn start() -> Self {
        grow_pipe();
        let (tx, mut rx) = mpsc::channel::<(bool, Bytes)>(QUEUED);
        let thread = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || {
                while let Some((stderr, data)) = rx.blocking_recv() {
                    write_now(stderr, &data);
                }
            })
            .ok();
        Self {
            tx: thread.is_some().then_some(tx),
            thread,
        }
    }

    /// Queues `data` for stderr (`stderr`) or stdout; waits while the
    /// queue is full.
    pub async fn write(&self, stderr: bool, data: Bytes) {
        if data.is_empty() {
            return;
        }
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError((stderr, data))) = tx.send((stderr, data)).await {
                    write_now(stderr, &data);
                }
            }
            None => write_now(stderr, &data),
        }
    }

    /// Waits until everything queued is written.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for OutputWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Pipe buffer asked for when stdout is a pipe: 1 MiB, the default
/// `/proc/sys/fs/pipe-max-size` (Linux's default of 64 KiB made this
/// process and its reader take turns eight times per output chunk).
const PIPE_BUFFER: i32 = 1024 * 1024;

/// Best effort: a terminal, file or socket refuses, and a smaller limit
/// leaves the pipe as it was.
fn grow_pipe() {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    let _ = nix::fcntl::fcntl(
        stdout.as_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BUFFER),
    );
}

/// Writes and flushes `data` on stderr or stdout.
fn write_now(stderr: bool, data: &[u8]) {
    if stderr {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(data).and_then(|()| err.flush());
    } else {
        super::write_stdout_bytes(data);
    }
}
