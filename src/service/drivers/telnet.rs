//! The Telnet driver: devices reachable only by Telnet (RFC 854), exec and
//! terminals. Commands always run in a warm shell (`shell_store`: the same
//! login, prompt, enable and paging logic as SSH shells); this module is
//! only the byte transport — a TCP connection speaking
//! [`telnet_protocol`](super::telnet_protocol) — and the per-device
//! connection limit.
//!
//! Owns: the [`TelnetDriver`]'s warm-shell store and one semaphore per
//! device (`ssh.max_connections_per_device` permits: a Telnet connection,
//! warm or in use, holds one). Takes: `run` and `terminal` calls from
//! [`Drivers`](super::Drivers).
//!
//! On failure: a TCP connect that fails or exceeds `ssh.connect_timeout`
//! (or the caller's deadline) is [`DriverError::Connect`] /
//! [`DriverError::ConnectTimeout`]; a device whose connections stay busy
//! past the caller's deadline is [`DriverError::Busy`]; a refused login is
//! [`DriverError::AuthenticationFailed`] (via the shell's set-up). Telnet
//! has no host key, so nothing is learned or checked: it is plain text on
//! the wire, for gear that offers nothing else.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::shell_login::{Login, LoginStep};
use super::shell_session::last_line;
use super::shell_store::{Opener, ShellStore};
use super::ssh::SshDriverConfig;
use super::telnet_protocol::TelnetProtocol;
use super::terminal::{TERMINAL_QUEUE, Terminal, TerminalInput};
use super::{DeviceRun, DeviceTarget, DriverError, OutputSink};
use crate::wire::messages::ShellReset;

/// Bytes read from the device at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The Telnet driver (see the module docs).
pub struct TelnetDriver {
    config: SshDriverConfig,
    shells: ShellStore,
    /// Connection permits per device name.
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl std::fmt::Debug for TelnetDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelnetDriver").finish_non_exhaustive()
    }
}

impl TelnetDriver {
    /// A driver using the SSH driver's tunables (`connect_timeout`,
    /// `idle_timeout`, `max_connections_per_device`, `max_output_bytes`).
    /// Needs a tokio runtime (the shell store's reaper).
    pub fn new(config: SshDriverConfig) -> Self {
        Self {
            shells: ShellStore::new(config.idle_timeout),
            config,
            limits: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn config(&self) -> &SshDriverConfig {
        &self.config
    }

    /// Runs `commands` in order in a warm shell of the device (the driver
    /// interface in [`super`]); `timeout` bounds each command, `reset`
    /// asks for fresh shells ([`ShellReset`]).
    pub async fn run(
        &self,
        target: &DeviceTarget,
        commands: &[String],
        timeout: Duration,
        reset: ShellReset,
        sink: &mut OutputSink,
    ) -> Result<DeviceRun, DriverError> {
        self.shells
            .run(Opener::Telnet(self), target, commands, timeout, reset, sink)
            .await
    }

    /// Opens a Telnet connection to the device within `deadline`, holding
    /// one of its connection permits; `cols` × `rows` is the window
    /// reported (NAWS).
    pub(super) async fn connect(
        &self,
        target: &DeviceTarget,
        deadline: tokio::time::Instant,
        cols: u16,
        rows: u16,
    ) -> Result<TelnetLink, DriverError> {
        let started = tokio::time::Instant::now();
        let limit = {
            let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
            limits
                .entry(target.name.clone())
                .or_insert_with(|| {
                    Arc::new(Semaphore::new(
                        self.config.max_connections_per_device.max(1),
                    ))
                })
                .clone()
        };
        let permit = tokio::time::timeout_at(deadline, limit.acquire_owned())
            .await
            .map_err(|_| DriverError::Busy {
                device: target.name.clone(),
                connections: self.config.max_connections_per_device,
                waited: started.elapsed(),
            })?
            .expect("the semaphore is never closed");
        let by = deadline.min(tokio::time::Instant::now() + self.config.connect_timeout);
        let addr = format!("{}:{}", target.host, target.port);
        let stream = tokio::time::timeout_at(by, TcpStream::connect(&addr))
            .await
            .map_err(|_| DriverError::ConnectTimeout {
                device: target.name.clone(),
                after: by.saturating_duration_since(started),
            })?
            .map_err(|e| DriverError::Connect {
                device: target.name.clone(),
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(TelnetLink {
            stream,
            protocol: TelnetProtocol::new(cols, rows),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            _permit: permit,
        })
    }

    /// An interactive session on the device: the stored user name and
    /// password answer its login prompts until its CLI prompt shows or the
    /// caller types (then the caller is on their own); everything the
    /// device sends goes to the caller, login prompts included.
    pub async fn terminal(
        &self,
        target: &DeviceTarget,
        cols: u16,
        rows: u16,
    ) -> Result<Terminal, DriverError> {
        let deadline = tokio::time::Instant::now() + self.config.connect_timeout;
        let link = self.connect(target, deadline, cols, rows).await?;
        let login = Login::new(
            target.credentials.username.clone(),
            target.credentials.password.clone(),
        );
        let prompt = &target.profile.platform.spec().prompt;
        let (in_tx, in_rx) = mpsc::channel(TERMINAL_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(TERMINAL_QUEUE);
        let bridge = tokio::spawn(bridge_terminal(link, login, prompt, in_rx, out_tx));
        Ok(Terminal::new(in_tx, out_rx, bridge))
    }
}

/// One Telnet connection: the socket and its protocol state. Dropping it
/// closes the connection (the device hangs its line up) and frees its
/// permit.
pub(super) struct TelnetLink {
    stream: TcpStream,
    protocol: TelnetProtocol,
    buf: Box<[u8]>,
    _permit: OwnedSemaphorePermit,
}

impl TelnetLink {
    /// Writes our data (encoded: `IAC` doubled, a bare CR padded).
    pub(super) async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(&TelnetProtocol::encode(data)).await
    }

    /// The device's next data, answering protocol requests on the way;
    /// `None` when it closed the connection.
    pub(super) async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(data) = self.take(n).await? {
                return Ok(Some(data));
            }
        }
    }

    /// Handles `n` bytes just read into the buffer: replies written, data
    /// returned (`None` when they held none).
    async fn take(&mut self, n: usize) -> io::Result<Option<Vec<u8>>> {
        let got = self.protocol.receive(&self.buf[..n]);
        if !got.reply.is_empty() {
            self.stream.write_all(&got.reply).await?;
        }
        Ok((!got.data.is_empty()).then_some(got.data))
    }
}

/// Bridges a terminal's channels to a Telnet connection (see
/// [`TelnetDriver::terminal`]). Ends when the device closes, the caller's
/// input ends or its output receiver is gone.
async fn bridge_terminal(
    mut link: TelnetLink,
    login: Login,
    prompt: &'static regex::Regex,
    mut input: mpsc::Receiver<TerminalInput>,
    output: mpsc::Sender<Vec<u8>>,
) {
    let mut login = Some(login);
    // The device's latest line, while the login is automated.
    let mut line = Vec::new();
    loop {
        tokio::select! {
            read = link.stream.read(&mut link.buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let data = match link.take(n).await {
                    Ok(Some(data)) => data,
                    Ok(None) => continue,
                    Err(_) => return,
                };
                if let Some(active) = login.as_mut() {
                    line.extend_from_slice(&data);
                    let last = last_line(&line).unwrap_or_default();
                    match active.step(&last) {
                        Ok(LoginStep::Send(mut answer)) => {
                            answer.extend_from_slice(b"\r\n");
                            line.clear();
                            if link.send(&answer).await.is_err() {
                                return;
                            }
                        }
                        // At the CLI, or refused: the caller takes over.
                        Ok(LoginStep::Wait) if prompt.is_match(&last) => login = None,
                        Ok(LoginStep::Wait) => {
                            if line.len() > 4096 {
                                line.drain(..line.len() - 1024);
                            }
                        }
                        Err(_) => login = None,
                    }
                }
                if output.send(data).await.is_err() {
                    return;
                }
            }
            message = input.recv() => match message {
                Some(TerminalInput::Data(bytes)) => {
                    login = None;
                    if link.send(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(TerminalInput::Resize { cols, rows }) => {
                    let report = link.protocol.resize(cols, rows);
                    if !report.is_empty() && link.stream.write_all(&report).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}
