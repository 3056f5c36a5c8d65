//! One SSH session channel of the proxy, mapped onto a link call.
//!
//! * `shell` (after an optional `pty-req`): a `Terminal` request at the
//!   pty's size (80x24 without one); the client's bytes go as terminal
//!   input, `window-change` as a resize, its EOF as the input's end; the
//!   device's output comes back as channel data. Exit status 0 when the
//!   device closes the shell.
//! * `exec COMMAND`: an `ExecWith` request for that one command with the
//!   client's input forwarded (its EOF ends the command's input); stdout
//!   as data, stderr as extended data, and the command's exit status as
//!   the channel's `exit-status`.
//!
//! * `subsystem NAME` (`sftp`, and so `scp` in its default SFTP mode;
//!   `netconf`): a `Subsystem` request on the link; the service starts the
//!   subsystem on a channel of its own connection to the device, and the
//!   client's request is answered only once the device has answered it (a
//!   refusal: the error on stderr and status 255, as below). Then the channel carries the subsystem's bytes
//!   both ways, pumped with half-close as a `direct-tcpip` channel is.
//!   `scp -O` (the legacy protocol) is an `exec` of `scp -t`/`scp -f`.
//!
//! Errors (no such service or device, link down, the service's refusal)
//! are written to the client's stderr as one line starting
//! `switchyard ssh-proxy:` and end the channel with exit status 255, as
//! `ssh` itself does for connection errors. The call is dropped (and so
//! cancelled on the service) when the client closes the channel or the
//! connection.

use std::sync::Arc;

use std::sync::atomic::AtomicU64;

use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure, ChannelWriteHalf};

use super::Shared;
use super::auth::Target;
use crate::broker::link::CallStream;
use crate::broker::routes::{OpenLink, Resolved, ServiceRef};
use crate::pump::ChunkSink;
use crate::wire::messages::{ExecFlags, Request, RequestEnvelope, Response, TerminalInput};

/// Exit status for a session that failed before or outside the device.
pub const FAILURE_STATUS: u32 = 255;

/// A terminal's size when the client asked for no pty.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// SSH's extended-data type for standard error (RFC 4254, 5.2).
const STDERR: u32 = 1;

/// Serves one session channel until its shell or command ends; `user` is
/// the login's user name (the target).
pub async fn serve(mut channel: Channel<Msg>, handle: Handle, user: String, shared: Arc<Shared>) {
    let mut size = None;
    while let Some(msg) = channel.wait().await {
        let status = match msg {
            ChannelMsg::RequestPty {
                col_width,
                row_height,
                ..
            }
            | ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            } => {
                size = Some(clamp(col_width, row_height));
                continue;
            }
            ChannelMsg::RequestShell { .. } => {
                let (cols, rows) = size.unwrap_or(DEFAULT_SIZE);
                shell(&mut channel, &user, cols, rows, &shared).await
            }
            ChannelMsg::Exec { command, .. } => {
                let command = String::from_utf8_lossy(&command).into_owned();
                exec(&mut channel, &user, command, &shared).await
            }
            ChannelMsg::RequestSubsystem { name, .. } => {
                return subsystem(channel, handle, &user, &name, &shared).await;
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            _ => continue,
        };
        let Some(status) = status else {
            return; // The client went away.
        };
        let _ = channel.exit_status(status).await;
        let _ = channel.eof().await;
        let _ = channel.close().await;
        return;
    }
}

fn clamp(cols: u32, rows: u32) -> (u16, u16) {
    let fit = |n: u32, default: u16| match u16::try_from(n) {
        Ok(0) => default,
        Ok(n) => n,
        Err(_) => u16::MAX,
    };
    (fit(cols, DEFAULT_SIZE.0), fit(rows, DEFAULT_SIZE.1))
}

/// The link of `service` as the proxy's owner sees it: a named service,
/// or (session-bound proxy) a service of that session.
fn resolve(shared: &Shared, service: &str) -> Result<Resolved, String> {
    let routes = shared.routes.borrow();
    let named = ServiceRef::Named(service.to_string());
    match (routes.resolve(&shared.owner, &named), &shared.session_id) {
        (Err(_), Some(session_id)) => routes.resolve(
            &shared.owner,
            &ServiceRef::InSession {
                session_id: session_id.clone(),
                service_id: service.to_string(),
            },
        ),
        (resolved, _) => resolved,
    }
    .map_err(|e| e.to_string())
}

/// How long a `direct-tcpip` channel waits for the service to connect it
/// (as a broker forward's connection does).
const FORWARD_TIMEOUT: std::time::Duration = crate::broker::forward::actor::OPEN_TIMEOUT;

/// SSH's reason code for a channel that could not be connected (RFC 4254,
/// 5.1: `SSH_OPEN_CONNECT_FAILED`).
const OPEN_CONNECT_FAILED: u32 = 2;

/// A `direct-tcpip` channel (`ssh -W`, `-J`, `-L` through the proxy): a
/// `Forward` to `port` of the device named `host`, on the service the
/// login names (its device part aside), subject to the service's
/// `forward_ports`. The channel is confirmed only once the service has
/// connected; a refusal is the open failure's reason. Bytes are pumped
/// with half-close until both ends finish; a broken side resets the other.
pub async fn direct_tcpip(
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    user: String,
    host: String,
    port: u32,
    shared: Arc<Shared>,
) {
    let opened = async {
        let target = Target::parse(&user)?;
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{port} is not a TCP port"))?;
        let link = resolve(&shared, &target.service)?
            .open()
            .await
            .map_err(|e| e.to_string())?;
        let remote = link
            .channel
            .open_forward(&host, port, FORWARD_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((link, remote))
    }
    .await;
    let (link, mut remote) = match opened {
        Ok(opened) => opened,
        Err(reason) => {
            shared.stats.set_last_error(&reason);
            reply
                .reject(ChannelOpenFailure::Other {
                    code: OPEN_CONNECT_FAILED,
                    reason,
                })
                .await;
            return;
        }
    };
    reply.accept().await;
    let (mut read, mut write) = channel.split();
    let mut read = read.make_reader();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    tokio::select! {
        pumped = remote.splice_channel(&mut read, &mut write, &up, &down) => {
            if let Err(e) = pumped {
                shared.stats.set_last_error(&format!("a forwarded channel broke: {e}"));
            }
        }
        _ = link.cancel.cancelled() => remote.reset(),
    }
    let _ = write.close().await;
}

/// How long a `subsystem` request waits for the service to start it on the
/// device (a new connection to the device included).
const SUBSYSTEM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A `subsystem NAME` request (`sftp`, `scp`'s SFTP mode, `netconf`): the
/// subsystem started on the login's device through the link, then its
/// bytes pumped with half-close until both ends finish. The request is
/// answered through `handle` only once the device has answered it; a
/// refusal (no such subsystem, an unknown device, the link down) is
/// answered with success and then one stderr line (`switchyard ssh-proxy:
/// ...`), exit status 255 and the channel's close, so the client shows the
/// reason (OpenSSH exits on a failed subsystem request before writing the
/// stderr that preceded it). The
/// channel's exit status is 0 when both directions ended cleanly, else
/// 255 (the device's own status does not travel on the raw stream).
async fn subsystem(channel: Channel<Msg>, handle: Handle, user: &str, name: &str, shared: &Shared) {
    let id = channel.id();
    let opened = async {
        let target = Target::parse(user)?;
        let link = resolve(shared, &target.service)?
            .open()
            .await
            .map_err(|e| e.to_string())?;
        let remote = link
            .channel
            .open_subsystem(&target.device, name, SUBSYSTEM_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((link, remote))
    }
    .await;
    let (link, mut remote) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // Accepted, then ended with the reason and status 255: OpenSSH
            // exits at once on a refused subsystem, before it has written
            // the stderr that came with the refusal, but drains it on a
            // channel's close.
            let _ = handle.channel_success(id).await;
            fail(&channel, shared, &e, false).await;
            let _ = channel.exit_status(FAILURE_STATUS).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
            return;
        }
    };
    if handle.channel_success(id).await.is_err() {
        return;
    }
    let (mut read, mut write) = channel.split();
    let mut read = read.make_reader();
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let status = tokio::select! {
        pumped = remote.splice_channel(&mut read, &mut write, &up, &down) => match pumped {
            Ok(()) => 0,
            Err(e) => {
                shared.stats.set_last_error(&format!("a {name} subsystem channel broke: {e}"));
                FAILURE_STATUS
            }
        },
        _ = link.cancel.cancelled() => {
            remote.reset();
            FAILURE_STATUS
        }
    };
    // The device's own exit status does not travel on a raw stream; both
    // directions ending cleanly is success (`scp` checks it).
    let _ = handle.exit_status_request(id, status).await;
    let _ = write.close().await;
}

/// The proxy's side of a relayed channel (`direct-tcpip`, a subsystem)
/// takes the device's bytes as owned chunks: `data_bytes` slices each
/// into SSH packets within the client's window and maximum packet size
/// (RFC 4254, 5.2), with no copy (russh's `AsyncWrite` copies every
/// packet); it returns once they are queued, so a client that stops
/// reading holds the link stream back.
impl ChunkSink for ChannelWriteHalf<Msg> {
    async fn send(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        self.data_bytes(chunk)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        self.eof()
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))
    }
}

/// Opens `request` for the login's target on its service's link.
async fn open(
    shared: &Shared,
    user: &str,
    request: impl FnOnce(String) -> Request,
) -> Result<(OpenLink, CallStream), String> {
    let target = Target::parse(user)?;
    let link = resolve(shared, &target.service)?
        .open()
        .await
        .map_err(|e| e.to_string())?;
    let envelope = RequestEnvelope {
        deadline_ms: None,
        request: request(target.device),
    };
    let call = link
        .channel
        .call(envelope)
        .await
        .map_err(|e| e.to_string())?;
    Ok((link, call))
}

/// Writes an error line to the client's stderr (ended by CR LF on a
/// terminal, `tty`) and keeps it as the proxy's last error; returns the
/// failure status.
async fn fail(channel: &Channel<Msg>, shared: &Shared, error: &str, tty: bool) -> Option<u32> {
    let end = if tty { "\r\n" } else { "\n" };
    let line = format!("switchyard ssh-proxy: {error}{end}");
    let _ = channel.extended_data_bytes(STDERR, line.into_bytes()).await;
    shared.stats.set_last_error(error);
    Some(FAILURE_STATUS)
}

/// An interactive shell; the exit status, or `None` if the client left.
async fn shell(
    channel: &mut Channel<Msg>,
    user: &str,
    cols: u16,
    rows: u16,
    shared: &Shared,
) -> Option<u32> {
    let (link, mut call) = match open(shared, user, |device| Request::Terminal {
        device,
        cols,
        rows,
    })
    .await
    {
        Ok(opened) => opened,
        Err(e) => return fail(channel, shared, &e, true).await,
    };
    let mut input_open = true;
    loop {
        tokio::select! {
            _ = link.cancel.cancelled() => {
                return fail(channel, shared, "the service's session ended", true).await;
            }
            msg = channel.wait(), if input_open => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if call.send_input(TerminalInput::Data(data.to_vec())).await.is_err() {
                        input_open = false;
                    }
                }
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    let (cols, rows) = clamp(col_width, row_height);
                    let _ = call.send_input(TerminalInput::Resize { cols, rows }).await;
                }
                Some(ChannelMsg::Eof) => {
                    call.finish_input();
                    input_open = false;
                }
                Some(ChannelMsg::Close) | None => return None,
                Some(_) => {}
            },
            next = call.next() => match next {
                None | Some(Ok(Response::TerminalClosed)) => return Some(0),
                Some(Ok(Response::TerminalOutput(bytes))) => {
                    if channel.data_bytes(bytes).await.is_err() {
                        return None;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return fail(channel, shared, &e.to_string(), true).await,
            },
        }
    }
}

/// One command; its exit status, or `None` if the client left.
async fn exec(
    channel: &mut Channel<Msg>,
    user: &str,
    command: String,
    shared: &Shared,
) -> Option<u32> {
    let (link, mut call) = match open(shared, user, |device| Request::ExecWith {
        devices: vec![device],
        commands: vec![command],
        timeout_ms: None,
        flags: ExecFlags {
            max_output_bytes: None,
            stdin: true,
        },
    })
    .await
    {
        Ok(opened) => opened,
        Err(e) => return fail(channel, shared, &e, false).await,
    };
    let mut input_open = true;
    let mut status = None;
    loop {
        tokio::select! {
            _ = link.cancel.cancelled() => {
                return fail(channel, shared, "the service's session ended", false).await;
            }
            msg = channel.wait(), if input_open => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if call.send_input(TerminalInput::Data(data.to_vec())).await.is_err() {
                        // The command takes no more input (it ended).
                        input_open = false;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    call.finish_input();
                    input_open = false;
                }
                Some(ChannelMsg::Close) | None => return None,
                Some(_) => {}
            },
            next = call.next() => match next {
                None => return Some(status.unwrap_or(FAILURE_STATUS)),
                Some(Ok(Response::ExecOutput { stderr, data, .. })) => {
                    if write(channel, stderr, data).await.is_err() {
                        return None;
                    }
                }
                Some(Ok(Response::ExecDevice { commands, error, .. })) => {
                    if let Some(e) = error {
                        status = fail(channel, shared, &e.to_string(), false).await;
                        continue;
                    }
                    for done in commands {
                        if write(channel, false, done.output.into()).await.is_err()
                            || write(channel, true, done.stderr.into()).await.is_err()
                        {
                            return None;
                        }
                        status = match done.error {
                            None => Some(done.exit_status.unwrap_or(0)),
                            Some(e) => fail(channel, shared, &e, false).await,
                        };
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return fail(channel, shared, &e.to_string(), false).await,
            },
        }
    }
}

/// Sends output to the client (empty chunks are skipped).
async fn write(
    channel: &Channel<Msg>,
    stderr: bool,
    data: bytes::Bytes,
) -> Result<(), russh::Error> {
    if data.is_empty() {
        return Ok(());
    }
    if stderr {
        channel.extended_data_bytes(STDERR, data).await
    } else {
        channel.data_bytes(data).await
    }
}
