//! Interactive terminal sessions on devices.
//!
//! A [`Terminal`] is a pair of bounded channels — input bytes (and window
//! resizes) to the device, output bytes from it — bridged to the device by
//! a task the `Terminal` owns. Dropping the `Terminal` ends the session;
//! the device closing its shell ends the output stream.

use tokio::sync::mpsc;

use crate::sim::SimDevice;
use crate::sim::model::bulk_fill;
use crate::sim::shell::{Shell, ShellEvent};
use crate::task::AbortOnDrop;

pub use crate::wire::messages::TerminalInput;

/// An open interactive session.
pub struct Terminal {
    pub input: mpsc::Sender<TerminalInput>,
    pub output: mpsc::Receiver<Vec<u8>>,
    _bridge: AbortOnDrop<()>,
}

/// Queue depth each way: enough to keep a fast typist and a scrolling
/// screen busy, small enough to push back on a stalled peer.
pub const TERMINAL_QUEUE: usize = 64;

impl Terminal {
    /// Ends the input (end of file): the device finishes what it was given
    /// and closes, and its output keeps flowing until then.
    pub fn close_input(&mut self) {
        let (closed, _) = mpsc::channel(1);
        self.input = closed;
    }

    /// Wraps a bridge task spawned over the other ends of the channels.
    pub fn new(
        input: mpsc::Sender<TerminalInput>,
        output: mpsc::Receiver<Vec<u8>>,
        bridge: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            input,
            output,
            _bridge: AbortOnDrop::new(bridge),
        }
    }
}

/// A terminal on the in-process simulator.
pub fn simulated(name: &str) -> Terminal {
    let (in_tx, mut in_rx) = mpsc::channel(TERMINAL_QUEUE);
    let (out_tx, out_rx) = mpsc::channel(TERMINAL_QUEUE);
    let mut shell = Shell::new(SimDevice::new(name), true);
    let bridge = tokio::spawn(async move {
        let mut events = shell.start();
        loop {
            for event in events.drain(..) {
                let ok = match event {
                    ShellEvent::Write(bytes) => out_tx.send(bytes).await.is_ok(),
                    ShellEvent::Bulk(n) => send_bulk(&out_tx, n).await,
                    ShellEvent::Close => false,
                };
                if !ok {
                    return;
                }
            }
            match in_rx.recv().await {
                Some(TerminalInput::Data(bytes)) => events = shell.feed(&bytes),
                Some(TerminalInput::Resize { .. }) => {}
                None => return,
            }
        }
    });
    Terminal::new(in_tx, out_rx, bridge)
}

async fn send_bulk(out: &mpsc::Sender<Vec<u8>>, n: u64) -> bool {
    let mut sent = 0u64;
    while sent < n {
        let len = (n - sent).min(32 * 1024) as usize;
        let mut buf = vec![0u8; len];
        bulk_fill(&mut buf, sent);
        if out.send(buf).await.is_err() {
            return false;
        }
        sent += len as u64;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn simulated_terminal_echoes_runs_and_closes() {
        let mut t = simulated("r1");
        assert_eq!(t.output.recv().await.unwrap(), b"\r\nr1#");
        t.input
            .send(TerminalInput::Data(b"show clock\r".to_vec()))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).ends_with("r1#") {
            seen.extend(t.output.recv().await.unwrap());
        }
        assert!(String::from_utf8_lossy(&seen).contains("UTC"));
        t.input
            .send(TerminalInput::Data(b"exit\r".to_vec()))
            .await
            .unwrap();
        while t.output.recv().await.is_some() {}
    }
}
