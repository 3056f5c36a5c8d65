//! One device's exec output printed as it arrives (`switchyard exec` in
//! text mode with one device): a `--- COMMAND` line before each command's
//! output, then its stdout bytes on stdout and its stderr bytes on stderr,
//! exactly as they come; the device's status block follows when it ends
//! (see [`super::exec_output::ExecPrinter`]).
//!
//! Order: the service sends a device's chunks in command order and only
//! the last command's remainder rides inline in the device's result, so
//! printing chunks as they come and the inline tails at the end keeps
//! each command's output under its own line.

use bytes::Bytes;

use super::output_writer::OutputWriter;

/// Prints one device's output live (see the module docs).
pub struct LivePrinter {
    commands: Vec<String>,
    /// Writes while the caller reads on; `None` once finished.
    out: Option<OutputWriter>,
    /// Commands whose `--- COMMAND` line is out.
    headed: usize,
    /// Whether stdout's last byte ended a line (or nothing was written).
    at_line_start: bool,
}

impl LivePrinter {
    pub fn new(commands: Vec<String>) -> Self {
        Self {
            commands,
            out: Some(OutputWriter::start()),
            headed: 0,
            at_line_start: true,
        }
    }

    /// A chunk of command `command`'s output (`stderr`: its standard
    /// error), written now (or queued while earlier chunks are written).
    pub async fn output(&mut self, command: u32, stderr: bool, data: Bytes) {
        self.head_through(command as usize).await;
        if data.is_empty() {
            return;
        }
        if !stderr {
            self.at_line_start = data.ends_with(b"\n");
        }
        self.write(stderr, data).await;
    }

    /// The device ended: prints the lines of commands that printed
    /// nothing, ends the output on a line of its own and waits until all
    /// of it is written, so the status block comes after it.
    pub async fn finish(&mut self) {
        self.head_through(self.commands.len().saturating_sub(1))
            .await;
        self.line_start().await;
        if let Some(out) = self.out.take() {
            out.finish();
        }
    }

    /// Prints the `--- COMMAND` lines up to and including `index`'s.
    async fn head_through(&mut self, index: usize) {
        while self.headed <= index && self.headed < self.commands.len() {
            self.line_start().await;
            let line = format!("--- {}\n", self.commands[self.headed]);
            self.write(false, line.into()).await;
            self.headed += 1;
        }
    }

    async fn line_start(&mut self) {
        if !self.at_line_start {
            self.write(false, Bytes::from_static(b"\n")).await;
            self.at_line_start = true;
        }
    }

    async fn write(&self, stderr: bool, data: Bytes) {
        if let Some(out) = &self.out {
            out.write(stderr, data).await;
        }
    }
}
