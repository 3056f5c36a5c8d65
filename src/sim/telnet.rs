//! A simulated device's Telnet listener (`switchyard sim --telnet`): the
//! same interactive shell as over SSH (banner, pager, user mode and
//! `enable`, `[confirm]`), after a `Username:`/`Password:` login
//! ([`super::login`]). The protocol (option negotiation, framing) is
//! [`TelnetProtocol`]'s; this module is the I/O.
//!
//! Owns: the listener and every session task of one device (a
//! [`JoinSet`], cancelled with the fleet). On failure: a session whose
//! socket fails ends alone; an accept error is logged and serving goes on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::login::{Login, LoginEvent};
use super::model::{SimDevice, bulk_fill};
use super::server::{Behaviour, SimCredentials};
use super::shell::{Shell, ShellEvent};
use crate::service::drivers::telnet_protocol::TelnetProtocol;

/// Serves Telnet sessions on `listener` until `cancel`.
pub(super) async fn serve_telnet(
    listener: TcpListener,
    device: Arc<SimDevice>,
    credentials: Arc<SimCredentials>,
    behaviour: Arc<Behaviour>,
    cancel: CancellationToken,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let span = info_span!("sim_telnet_session", %peer);
                    sessions.spawn(
                        session(
                            socket,
                            (*device).clone(),
                            credentials.clone(),
                            behaviour.clone(),
                        )
                        .instrument(span),
                    );
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    sessions.shutdown().await;
}

/// What the session's input goes to.
enum Stage {
    Login(Login),
    Shell(Box<Shell>),
}

async fn session(
    mut socket: TcpStream,
    device: SimDevice,
    credentials: Arc<SimCredentials>,
    behaviour: Arc<Behaviour>,
) {
    let (mut protocol, mut opening) = TelnetProtocol::server();
    opening.extend(TelnetProtocol::encode(&Login::start(
        behaviour.shell.banner.as_deref(),
    )));
    if socket.write_all(&opening).await.is_err() {
        return;
    }
    let mut stage = Stage::Login(Login::new());
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let got = protocol.receive(&buf[..n]);
        if !got.reply.is_empty() && socket.write_all(&got.reply).await.is_err() {
            return;
        }
        let mut input = got.data;
        loop {
            let events = match &mut stage {
                Stage::Login(login) => login.feed(&input, &credentials),
                Stage::Shell(shell) => {
                    let events = shell.feed(&input);
                    match write_shell(&mut socket, events).await {
                        Ok(true) => break,
                        Ok(false) | Err(_) => return,
                    }
                }
            };
            let mut next = None;
            for event in events {
                match event {
                    LoginEvent::Write(bytes) => {
                        if socket
                            .write_all(&TelnetProtocol::encode(&bytes))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    LoginEvent::LoggedIn(rest) => next = Some(rest),
                    LoginEvent::Close => return,
                }
            }
            let Some(rest) = next else { break };
            // Logged in: the shell starts, and takes what followed.
            behaviour.shells_opened.fetch_add(1, Ordering::Relaxed);
            let shell = Shell::with_options(device.clone(), true, behaviour.shell.clone());
            let start = shell.start();
            stage = Stage::Shell(Box::new(shell));
            match write_shell(&mut socket, start).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
            input = rest;
        }
    }
}

/// Writes shell events; `Ok(false)` when the shell asked to close.
async fn write_shell(socket: &mut TcpStream, events: Vec<ShellEvent>) -> std::io::Result<bool> {
    for event in events {
        match event {
            ShellEvent::Write(bytes) => socket.write_all(&TelnetProtocol::encode(&bytes)).await?,
            ShellEvent::Bulk(n) => {
                const CHUNK: u64 = 32 * 1024;
                let mut sent = 0u64;
                while sent < n {
                    let len = CHUNK.min(n - sent) as usize;
                    let mut chunk = vec![0u8; len];
                    bulk_fill(&mut chunk, sent);
                    socket.write_all(&TelnetProtocol::encode(&chunk)).await?;
                    sent += len as u64;
                }
            }
            ShellEvent::Close => return Ok(false),
        }
    }
    Ok(true)
}
