//! Simulated devices behind real SSH servers (`switchyard sim`), and
//! optionally Telnet listeners (`sim::telnet`).
//!
//! A [`SimFleet`] owns one TCP listener per simulated device and every SSH
//! connection accepted on it. Each device's host key is derived from its
//! name, so a restarted fleet presents the same keys and inventories that
//! recorded them keep trusting it. Dropping the fleet (or `shutdown`) stops
//! every listener and disconnects every session: no task outlives it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, Disconnect, MethodKind, MethodSet};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::model::{Output, SimDevice, bulk_fill};
use super::shell::{Shell, ShellEvent, ShellOptions};
use crate::secret::Secret;

/// Login accepted by every simulated device. Demo and test use only.
#[derive(Debug, Clone)]
pub struct SimCredentials {
    pub username: String,
    pub password: Secret,
}

impl Default for SimCredentials {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: Secret::new("admin"),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SimFleetConfig {
    pub count: usize,
    pub listen: IpAddr,
    /// Device names are `<prefix>-001`, `<prefix>-002`, ...
    pub name_prefix: String,
    /// First port to bind; 0 lets the OS pick a free port for each device.
    pub base_port: u16,
    pub credentials: SimCredentials,
    /// Refuse exec requests: the devices offer only a shell (like some
    /// network gear).
    pub refuse_exec: bool,
    /// Banner, pager and enable secret of every device's shell; an enable
    /// secret also puts exec requests in user mode.
    pub shell: ShellOptions,
    /// Each device also listens for Telnet (`Username:`/`Password:` login,
    /// then the same shell; see `sim::telnet`).
    pub telnet: bool,
}

impl Default for SimFleetConfig {
    fn default() -> Self {
        Self {
            count: 1,
            listen: IpAddr::from([127, 0, 0, 1]),
            name_prefix: "sim".into(),
            base_port: 0,
            credentials: SimCredentials::default(),
            refuse_exec: false,
            shell: ShellOptions::default(),
            telnet: false,
        }
    }
}

/// One listening simulated device.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimEndpoint {
    pub name: String,
    #[serde(skip)]
    pub addr: SocketAddr,
    pub port: u16,
    /// The Telnet port, when the fleet listens for Telnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telnet_port: Option<u16>,
}

/// A running set of simulated devices.
#[derive(Debug)]
pub struct SimFleet {
    endpoints: Vec<SimEndpoint>,
    behaviour: Arc<Behaviour>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

/// The SSH host key of the simulated device `name` (stable across runs).
pub fn host_key_for(name: &str) -> PrivateKey {
    let seed: [u8; 32] = Sha256::digest(format!("switchyard-sim-host-key:{name}")).into();
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

/// The OpenSSH public form of [`host_key_for`], for known_hosts files.
pub fn public_host_key_for(name: &str) -> String {
    host_key_for(name)
        .public_key()
        .to_openssh()
        .unwrap_or_default()
}

/// The device name for index `i` (0-based) of a fleet.
pub fn device_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{:03}", i + 1)
}

impl SimFleet {
    /// Binds every device's listener, then starts serving. Returns once all
    /// of them listen.
    pub async fn start(config: SimFleetConfig) -> std::io::Result<Self> {
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut endpoints = Vec::with_capacity(config.count);
        let credentials = Arc::new(config.credentials);
        let behaviour = Arc::new(Behaviour {
            refuse_exec: config.refuse_exec,
            shell: config.shell,
            shells_opened: AtomicU64::new(0),
        });
        for i in 0..config.count {
            let name = device_name(&config.name_prefix, i);
            let port = match config.base_port {
                0 => 0,
                base => u16::try_from(usize::from(base) + i).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "base port + count exceeds 65535",
                    )
                })?,
            };
            let listener = TcpListener::bind(SocketAddr::new(config.listen, port)).await?;
            let addr = listener.local_addr()?;
            let device = Arc::new(SimDevice::new(&name));
            let ssh_config = Arc::new(ssh_config(host_key_for(&name)));
            let span = info_span!("sim_device", device = %name, %addr);
            let telnet_port = if config.telnet {
                // After the SSH ports when they are fixed: base + count + i.
                let port = match config.base_port {
                    0 => 0,
                    _ => port.checked_add(config.count as u16).ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "base port + 2 × count exceeds 65535",
                        )
                    })?,
                };
                let listener = TcpListener::bind(SocketAddr::new(config.listen, port)).await?;
                let telnet_port = listener.local_addr()?.port();
                tasks.spawn(
                    super::telnet::serve_telnet(
                        listener,
                        device.clone(),
                        credentials.clone(),
                        behaviour.clone(),
                        cancel.child_token(),
                    )
                    .instrument(span.clone()),
                );
                Some(telnet_port)
            } else {
                None
            };
            tasks.spawn(
                serve_device(
                    listener,
                    ssh_config,
                    device,
                    credentials.clone(),
                    behaviour.clone(),
                    cancel.child_token(),
                )
                .instrument(span),
            );
            endpoints.push(SimEndpoint {
                name,
                addr,
                port: addr.port(),
                telnet_port,
            });
        }
        Ok(Self {
            endpoints,
            behaviour,
            cancel,
            tasks,
        })
    }

    pub fn endpoints(&self) -> &[SimEndpoint] {
        &self.endpoints
    }

    /// Interactive shells started on any of the devices so far (tests use
    /// it to see warm shells reused).
    pub fn shells_opened(&self) -> u64 {
        self.behaviour.shells_opened.load(Ordering::Relaxed)
    }

    /// Stops listening, disconnects every session and waits for them.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn ssh_config(key: PrivateKey) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::Password);
    russh::server::Config {
        keys: vec![key],
        methods,
        // Constant-time rejection; short, since these are test devices.
        auth_rejection_time: Duration::from_millis(200),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        nodelay: true,
        ..Default::default()
    }
}

/// What every device of a fleet does beyond the plain CLI.
#[derive(Debug)]
pub(super) struct Behaviour {
    refuse_exec: bool,
    pub(super) shell: ShellOptions,
    pub(super) shells_opened: AtomicU64,
}

async fn serve_device(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
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
                    // russh applies `nodelay` only in its own accept loop;
                    // without it, small replies wait out delayed ACKs (40 ms).
                    let _ = socket.set_nodelay(true);
                    let handler = SimConnection {
                        device: device.clone(),
                        credentials: credentials.clone(),
                        behaviour: behaviour.clone(),
                        channels: JoinSet::new(),
                    };
                    let span = info_span!("sim_session", %peer);
                    sessions.spawn(
                        run_session(config.clone(), socket, handler, cancel.clone()).instrument(span),
                    );
                }
                Err(e) => {
                    // Usually EMFILE; keep serving the sessions we have.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    while sessions.join_next().await.is_some() {}
}

async fn run_session(
    config: Arc<russh::server::Config>,
    socket: TcpStream,
    handler: SimConnection,
    cancel: CancellationToken,
) {
    let running = match russh::server::run_stream(config, socket, handler).await {
        Ok(running) => running,
        Err(e) => {
            debug!(error = %e, "ssh handshake failed");
            return;
        }
    };
    let handle = running.handle();
    tokio::select! {
        result = running => {
            if let Err(e) = result {
                debug!(error = %e, "ssh session ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            let _ = handle
                .disconnect(Disconnect::ByApplication, "simulator shutting down".into(), "en".into())
                .await;
        }
    }
}

/// One SSH connection to a simulated device. Its channel tasks live in
/// `channels` and are aborted when the connection (and so this) is dropped.
struct SimConnection {
    device: Arc<SimDevice>,
    credentials: Arc<SimCredentials>,
    behaviour: Arc<Behaviour>,
    channels: JoinSet<()>,
}

impl russh::server::Handler for SimConnection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let user_ok = user == self.credentials.username;
        let pass_ok = constant_time_eq(
            password.as_bytes(),
            self.credentials.password.expose().as_bytes(),
        );
        if user_ok && pass_ok {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let device = (*self.device).clone();
        self.channels
            .spawn(serve_channel(channel, device, self.behaviour.clone()));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_w: u32,
        _pix_h: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.behaviour.refuse_exec {
            return session.channel_failure(channel);
        }
        session.channel_success(channel)
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _cols: u32,
        _rows: u32,
        _pix_w: u32,
        _pix_h: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Devices do not take environment variables.
        session.channel_failure(channel)
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Serves one session channel: an exec request or an interactive shell.
async fn serve_channel(mut channel: Channel<Msg>, device: SimDevice, behaviour: Arc<Behaviour>) {
    let mut tty = false;
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::RequestPty { .. } => tty = true,
            // Refused in `exec_request`; the channel stays for a shell.
            ChannelMsg::Exec { .. } if behaviour.refuse_exec => {}
            ChannelMsg::Exec { command, .. } => {
                let line = String::from_utf8_lossy(&command).into_owned();
                let user_mode = behaviour.shell.enable_secret.is_some();
                let status = exec_once(&channel, &device, &line, user_mode).await;
                let _ = channel.exit_status(status).await;
                let _ = channel.eof().await;
                let _ = channel.close().await;
                return;
            }
            ChannelMsg::RequestShell { .. } => {
                behaviour.shells_opened.fetch_add(1, Ordering::Relaxed);
                let shell = Shell::with_options(device, tty, behaviour.shell.clone());
                run_shell(channel, shell).await;
                return;
            }
            ChannelMsg::Eof | ChannelMsg::Close => return,
            _ => {}
        }
    }
}

async fn exec_once(channel: &Channel<Msg>, device: &SimDevice, line: &str, user_mode: bool) -> u32 {
    let mut state = super::model::CliState {
        user_mode,
        ..Default::default()
    };
    match device.run(&mut state, line) {
        Output::Text { text, exit_status } => {
            if channel.data_bytes(text.into_bytes()).await.is_err() {
                return 255;
            }
            exit_status
        }
        Output::Binary(bytes) => match channel.data_bytes(bytes).await {
            Ok(()) => 0,
            Err(_) => 255,
        },
        Output::Bulk(n) => match send_bulk(channel, n).await {
            Ok(()) => 0,
            Err(_) => 255,
        },
        Output::Exit => 0,
        // No terminal to ask on: `enable` cannot work on an exec channel.
        Output::Enable => {
            let text = "% enable needs an interactive session\n";
            let _ = channel.data_bytes(text.as_bytes().to_vec()).await;
            1
        }
        // Nobody to confirm on an exec channel: the question, and no action.
        Output::Confirm(question) => {
            let _ = channel
                .data_bytes(format!("{question}\n").into_bytes())
                .await;
            1
        }
    }
}

/// Streams `n` filler bytes in window-sized chunks; memory use is one chunk.
async fn send_bulk(channel: &Channel<Msg>, n: u64) -> Result<(), russh::Error> {
    const CHUNK: u64 = 32 * 1024;
    let mut sent = 0u64;
    while sent < n {
        let len = CHUNK.min(n - sent) as usize;
        let mut buf = vec![0u8; len];
        bulk_fill(&mut buf, sent);
        channel.data_bytes(buf).await?;
        sent += len as u64;
    }
    Ok(())
}

async fn run_shell(mut channel: Channel<Msg>, mut shell: Shell) {
    if apply(&channel, shell.start()).await.is_err() {
        return;
    }
    while let Some(msg) = channel.wait().await {
        let events = match msg {
            ChannelMsg::Data { data } => shell.feed(&data),
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => continue,
        };
        match apply(&channel, events).await {
            Ok(true) => continue,
            Ok(false) | Err(_) => break,
        }
    }
    let _ = channel.exit_status(0).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

/// Writes shell events; `Ok(false)` when the shell asked to close.
async fn apply(channel: &Channel<Msg>, events: Vec<ShellEvent>) -> Result<bool, russh::Error> {
    for event in events {
        match event {
            ShellEvent::Write(bytes) => channel.data_bytes(bytes).await?,
            ShellEvent::Bulk(n) => send_bulk(channel, n).await?,
            ShellEvent::Close => return Ok(false),
        }
    }
    Ok(true)
}
