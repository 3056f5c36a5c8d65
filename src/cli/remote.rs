//! Client commands that talk to the broker over its public gRPC API:
//! `connect`, `disconnect`, `inventory`, `exec`, `terminal`, `status`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use tokio::sync::mpsc;

use super::{CliError, outln};
use crate::api::pb;
use crate::secret::{Secret, SecretSource};

/// The commands the lean `switchyard` binary runs itself: each is a few
/// calls to the broker, so it starts without the daemons' code.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a named service kept by the broker for this user.
    #[command(subcommand)]
    Connect(ConnectCommand),
    /// Forget a named service.
    Disconnect {
        /// The named service.
        name: String,
    },
    /// List a service's devices.
    Inventory {
        /// The named service.
        name: String,
        /// One JSON array of devices instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run commands on devices of a service.
    Exec(ExecArgs),
    /// Open an interactive session with a device's shell.
    ///
    /// Escapes, typed at the start of a line (right after Enter): `~.` ends
    /// the terminal, `~?` lists the escapes, `~~` sends one `~`. Ctrl-C goes
    /// to the device; SIGTERM or SIGHUP end the terminal. If the broker
    /// goes away the terminal ends with a message saying so.
    Terminal {
        /// The named service.
        name: String,
        /// The device.
        device: String,
    },
    /// Port forwards kept by the broker.
    #[command(subcommand)]
    Forward(super::forward::ForwardCommand),
    /// SOCKS5 proxies kept by the broker (listed by `forward list`).
    #[command(subcommand)]
    SocksProxy(super::forward::SocksCommand),
    /// The SSH proxy kept by the broker (`ssh DEVICE@SERVICE@127.0.0.1`).
    #[command(subcommand)]
    SshProxy(super::ssh_proxy::SshProxyCommand),
    /// Copy a file from or to a device (SFTP, else SCP), run by the
    /// service: `cp NAME DEVICE:REMOTE LOCAL` or `cp NAME LOCAL
    /// DEVICE:REMOTE`. A download lands under its name only when complete.
    Cp(super::cp::CpArgs),
    /// Show sessions, named services, links, forwards and the SSH proxy.
    Status {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one client command against the broker at `socket`.
pub async fn run(socket: &Path, cmd: ClientCommand) -> Result<ExitCode, CliError> {
    match cmd {
        ClientCommand::Connect(cmd) => connect(socket, cmd).await,
        ClientCommand::Disconnect { name } => disconnect(socket, name).await,
        ClientCommand::Inventory { name, json } => inventory(socket, name, json).await,
        ClientCommand::Exec(args) => exec(socket, args).await,
        ClientCommand::Terminal { name, device } => terminal(socket, name, device).await,
        ClientCommand::Status { json } => status(socket, json).await,
        ClientCommand::Forward(cmd) => super::forward::run(socket, cmd).await,
        ClientCommand::SocksProxy(cmd) => super::forward::run_socks(socket, cmd).await,
        ClientCommand::SshProxy(cmd) => super::ssh_proxy::run(socket, cmd).await,
        ClientCommand::Cp(args) => super::cp::run(socket, args).await,
    }
}

#[derive(Debug, Subcommand)]
pub enum ConnectCommand {
    /// Connect straight to a service's RPC socket.
    Direct {
        /// Name for the service, used by later commands.
        name: String,
        /// The service's host name or address (QUIC).
        #[arg(long, required_unless_present = "rpc_url")]
        host: Option<String>,
        /// The service's RPC port (UDP).
        #[arg(long, default_value_t = 8181)]
        port: u16,
        /// The service's TCP RPC port on the same host, used when QUIC gets
        /// no answer (UDP blocked; the broker's `[broker] transport`).
        #[arg(long, default_value_t = crate::wire::tcp::DEFAULT_PORT, conflicts_with = "rpc_url")]
        tcp_port: u16,
        /// Over TLS/TCP instead of QUIC, to the service's TCP RPC listener:
        /// `https://HOST:8081/rpc` (for networks that block UDP).
        #[arg(long, value_name = "URL", conflicts_with = "host")]
        rpc_url: Option<String>,
        /// With --rpc-url: through this HTTP proxy, `http://[USER@]HOST:PORT`
        /// (default: the broker's `[proxy]`, else its HTTPS_PROXY).
        #[arg(long, value_name = "URL", requires = "rpc_url")]
        proxy: Option<String>,
        /// File holding the proxy user's password (else a prompt when
        /// --proxy names a user).
        #[arg(long, value_name = "FILE", requires = "proxy")]
        proxy_password_file: Option<PathBuf>,
        /// Remote user on the service.
        #[arg(long)]
        user: String,
        /// File holding the remote user's password (else a prompt; may be
        /// skipped when a live link for this user already exists).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Expected certificate fingerprint (`switchyard service info`).
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Reach a service through the relay by its serial (needs a login).
    Cloud(super::cloud::CloudConnectArgs),
    /// Reach a service directly, logging in with the cloud login (SSO).
    DirectSso {
        #[command(flatten)]
        args: super::cloud::CloudConnectArgs,
        /// The service's host (default: the address it advertises).
        #[arg(long)]
        host: Option<String>,
        /// The service's RPC port (default: the one it advertises).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run the service inside the broker over an inventory on this host.
    Integrated {
        /// Name for the service, used by later commands.
        name: String,
        /// The inventory database.
        #[arg(long, env = "SWITCHYARD_DB")]
        db: PathBuf,
        /// File holding the admin password (else a prompt).
        #[arg(long, value_name = "FILE")]
        admin_password_file: Option<PathBuf>,
    },
}

pub use super::remote_exec::{ExecArgs, exec};

pub(super) async fn broker_client(
    socket: &Path,
) -> Result<pb::broker_client::BrokerClient<tonic::transport::Channel>, CliError> {
    crate::api::client::connect(socket)
        .await
        .map_err(|_| CliError::BrokerUnreachable(crate::broker::socket::diagnose(socket)))
}

pub(super) fn named(name: &str) -> Option<pb::ServiceRef> {
    Some(pb::ServiceRef {
        name: name.to_string(),
        ..Default::default()
    })
}

pub async fn connect(socket: &Path, cmd: ConnectCommand) -> Result<ExitCode, CliError> {
    let (name, host, (port, tcp_port), rpc_url, proxy, user, password_file, fingerprint) = match cmd
    {
        ConnectCommand::Direct {
            name,
            host,
            port,
            tcp_port,
            rpc_url,
            proxy,
            proxy_password_file,
            user,
            password_file,
            fingerprint,
        } => {
            let proxy = proxy_args(proxy, proxy_password_file)?;
            (
                name,
                host,
                (port, tcp_port),
                rpc_url,
                proxy,
                user,
                password_file,
                fingerprint,
            )
        }
        ConnectCommand::Integrated {
            name,
            db,
            admin_password_file,
        } => return connect_integrated(socket, name, db, admin_password_file).await,
        ConnectCommand::Cloud(args) => {
            return super::cloud::connect_cloud(socket, args, None).await;
        }
        ConnectCommand::DirectSso { args, host, port } => {
            return super::cloud::connect_cloud(socket, args, Some((host, port))).await;
        }
    };
    let mut broker = broker_client(socket).await?;
    // With no password file and no terminal, try the live link first.
    let password = match password_file {
        Some(_) => Some(
            SecretSource {
                what: "remote user password",
                file_flag: "--password-file",
                file: password_file.as_deref(),
                credential: None,
                confirm: false,
            }
            .read()?,
        ),
        None => None,
    };
    let request = |password: String| pb::ServiceDirectRequest {
        name: name.clone(),
        username: user.clone(),
        host: host.clone().unwrap_or_default(),
        port: port.into(),
        password,
        fingerprint: fingerprint.clone().unwrap_or_default(),
        rpc_url: rpc_url.clone().unwrap_or_default(),
        tcp_port: tcp_port.into(),
        proxy_url: proxy.as_ref().map(|(u, _)| u.clone()).unwrap_or_default(),
        proxy_password: proxy
            .as_ref()
            .and_then(|(_, p)| p.as_ref())
            .map(|p| p.expose().to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    let result = match password {
        Some(p) => broker.service_direct(request(p.expose().to_string())).await,
        None => match broker.service_direct(request(String::new())).await {
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let p = SecretSource {
                    what: "remote user password",
                    file_flag: "--password-file",
                    file: None,
                    credential: None,
                    confirm: false,
                }
                .read()?;
                broker.service_direct(request(p.expose().to_string())).await
            }
            other => other,
        },
    };
    let info = result?.into_inner();
    let at = match (&rpc_url, &host) {
        (Some(url), _) => url.clone(),
        (None, host) => format!("{}:{port}", host.as_deref().unwrap_or_default()),
    };
    outln!(
        "connected {name} to {} at {at} as {user}{}",
        info.service_name,
        if info.reused {
            " (shared an existing link)"
        } else {
            ""
        }
    );
    outln!("certificate fingerprint: {}", info.fingerprint);
    Ok(ExitCode::SUCCESS)
}

/// `--proxy` and its password: a password in the URL is refused (secrets
/// never come from the command line); one is read from the file, or asked
/// for, when the URL names a user.
pub(super) fn proxy_args(
    url: Option<String>,
    password_file: Option<PathBuf>,
) -> Result<Option<(String, Option<Secret>)>, CliError> {
    let Some(url) = url else { return Ok(None) };
    // The broker parses the URL; the lean front only looks for userinfo.
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(CliError::Usage(
            "--proxy: put no password in the URL (command lines are visible to \
             other users); give it with --proxy-password-file or at the prompt"
                .into(),
        ));
    }
    let password = if userinfo.is_none_or(str::is_empty) {
        None
    } else {
        Some(
            SecretSource {
                what: "proxy password",
                file_flag: "--proxy-password-file",
                file: password_file.as_deref(),
                credential: None,
                confirm: false,
            }
            .read()?,
        )
    };
    Ok(Some((url, password)))
}

async fn connect_integrated(
    socket: &Path,
    name: String,
    db: PathBuf,
    admin_password_file: Option<PathBuf>,
) -> Result<ExitCode, CliError> {
    let password = SecretSource {
        what: "admin password",
        file_flag: "--admin-password-file",
        file: admin_password_file.as_deref(),
        credential: Some("admin-password"),
        confirm: false,
    }
    .read()?;
    // The broker opens the file itself: give it an absolute path.
    let db =
        std::path::absolute(&db).map_err(CliError::io(format!("bad path {}", db.display())))?;
    let mut broker = broker_client(socket).await?;
    let info = broker
        .service_integrated(pb::ServiceIntegratedRequest {
            name: name.clone(),
            db: db.display().to_string(),
            admin_password: password.expose().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    outln!(
        "connected {name} to {} (in the broker, over {}){}",
        info.service_name,
        db.display(),
        if info.reused { " (shared)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn disconnect(socket: &Path, name: String) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    broker
        .disconnect(pb::DisconnectRequest { name: name.clone() })
        .await?;
    outln!("disconnected {name}");
    Ok(ExitCode::SUCCESS)
}

pub async fn inventory(socket: &Path, name: String, json: bool) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    let devices = broker
        .inventory(pb::InventoryRequest {
            service: named(&name),
        })
        .await?
        .into_inner()
        .devices;
    if json {
        let list: Vec<_> = devices
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name, "host": d.host, "port": d.port,
                    "device_type": d.device_type, "attributes": d.attributes,
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    } else {
        outln!(
            "{:<24} {:<24} {:>5}  {:<10} ATTRIBUTES",
            "NAME",
            "HOST",
            "PORT",
            "TYPE"
        );
        for d in devices {
            let attributes: std::collections::BTreeMap<_, _> = d.attributes.iter().collect();
            outln!(
                "{:<24} {:<24} {:>5}  {:<10} {}",
                d.name,
                d.host,
                d.port,
                d.device_type,
                attributes_text(attributes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn status(socket: &Path, json: bool) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    let s = broker.status(pb::StatusRequest {}).await?.into_inner();
    if json {
        let value = serde_json::json!({
            "version": s.version,
            "sessions": s.sessions.iter().map(|x| serde_json::json!({
                "session_id": x.session_id, "client_name": x.client_name, "pid": x.pid,
                "services": x.services, "in_flight": x.in_flight,
            })).collect::<Vec<_>>(),
            "named_services": s.named_services.iter().map(|n| serde_json::json!({
                "name": n.name, "link_id": n.link_id, "idle_secs": n.idle_secs,
            })).collect::<Vec<_>>(),
            "links": s.links.iter().map(|l| serde_json::json!({
                "link_id": l.link_id, "target": l.target, "principal": l.principal,
                "transport": l.transport, "state": l.state, "holders": l.holders,
                "in_flight": l.in_flight, "connects": l.connects,
                "last_error": l.last_error, "fingerprint": l.fingerprint,
                "carrier": l.carrier,
            })).collect::<Vec<_>>(),
            "logins": s.logins.iter().map(|l| serde_json::json!({
                "identity": l.identity, "relay_url": l.relay_url, "method": l.method,
                "state": l.state, "expires_unix": l.expires_unix, "sessions": l.sessions,
                "connected": l.connected, "reach": l.reach, "last_error": l.last_error,
                "carrier": l.carrier,
            })).collect::<Vec<_>>(),
            "forwards": s.forwards.iter().map(super::forward::forward_json).collect::<Vec<_>>(),
            "ssh_proxy": s.ssh_proxy.as_ref().map(super::ssh_proxy::ssh_proxy_json),
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    outln!("sessions: {}", s.sessions.len());
    for x in &s.sessions {
        outln!(
            "  {}  pid {}  {}  services {}  in flight {}",
            x.session_id,
            x.pid,
            x.client_name,
            x.services,
            x.in_flight
        );
    }
    outln!("named services: {}", s.named_services.len());
    for n in &s.named_services {
        outln!("  {}  link {}  idle {} s", n.name, n.link_id, n.idle_secs);
    }
    outln!("logins: {}", s.logins.len());
    for l in &s.logins {
        let reach = match (l.state.as_str(), l.reach.as_str()) {
            ("logged in", "unverified") => {
                ", relay unverified (restored at the broker's start, not used since)".to_string()
            }
            ("logged in", "failing") => format!(", relay failing: {}", l.last_error),
            ("logged in", "reachable") => ", relay reachable".to_string(),
            _ => String::new(),
        };
        outln!(
            "  {} at {} ({}{}) {}{}  sessions {}{}",
            l.identity,
            l.relay_url,
            l.method,
            match l.carrier.as_str() {
                "" => String::new(),
                carrier => format!(", {carrier}"),
            },
            l.state,
            reach,
            l.sessions,
            match l.expires_unix {
                0 => String::new(),
                t => format!("  expires at unix time {t}"),
            }
        );
    }
    outln!("links: {}", s.links.len());
    for l in &s.links {
        outln!(
            "  {} {} as {} ({}{}) {}  holders {}  in flight {}  connects {}{}",
            l.link_id,
            l.target,
            l.principal,
            l.transport,
            match l.carrier.as_str() {
                "" => String::new(),
                carrier => format!(", {carrier}"),
            },
            l.state,
            l.holders,
            l.in_flight,
            l.connects,
            if l.last_error.is_empty() {
                String::new()
            } else {
                format!("  last error: {}", l.last_error)
            }
        );
    }
    outln!("forwards: {}", s.forwards.len());
    super::forward::print_forwards(&s.forwards);
    super::ssh_proxy::print_ssh_proxy(s.ssh_proxy.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// Signals a waiting command watches so that it can undo what it started
/// before it exits (the front otherwise keeps their default action).
pub(super) struct EndSignals(Vec<(tokio::signal::unix::Signal, &'static str)>);

impl EndSignals {
    /// SIGTERM and SIGHUP (for a terminal, where Ctrl-C is a keystroke).
    pub(super) fn terminate_or_hangup() -> Self {
        Self::watch(false)
    }

    /// SIGINT, SIGTERM and SIGHUP.
    pub(super) fn any_stop() -> Self {
        Self::watch(true)
    }

    fn watch(interrupt: bool) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let mut kinds = vec![
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ];
        if interrupt {
            kinds.push((SignalKind::interrupt(), "SIGINT"));
        }
        // A signal that cannot be watched keeps its default action.
        Self(
            kinds
                .into_iter()
                .filter_map(|(kind, name)| Some((signal(kind).ok()?, name)))
                .collect(),
        )
    }

    /// The name of the first signal to arrive.
    pub(super) async fn recv(&mut self) -> &'static str {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.0.iter_mut().map(|(signal, name)| {
            Box::pin(async move {
                signal.recv().await;
                *name
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// Restores the terminal mode when dropped.
struct RawMode(bool);

impl RawMode {
    fn enable() -> Self {
        let on = std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok();
        Self(on)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

pub async fn terminal(socket: &Path, name: String, device: String) -> Result<ExitCode, CliError> {
    use pb::terminal_request::Input;
    let mut broker = broker_client(socket).await?;
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    let (tx, rx) = mpsc::channel::<pb::TerminalRequest>(64);
    tx.send(pb::TerminalRequest {
        input: Some(Input::Open(pb::TerminalOpen {
            service: named(&name),
            device: device.clone(),
            size: Some(pb::WindowSize {
                cols: cols.into(),
                rows: rows.into(),
            }),
        })),
    })
    .await
    .map_err(|_| CliError::Usage("terminal closed".into()))?;
    let mut events = broker
        .terminal(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Keystrokes come from a blocking reader thread: stdin has no async
    // reads that can be cancelled. It ends with stdin (EOF), with `~.`, or
    // when the session ends and the channel closes. Escapes are decided
    // there (`terminal_escape`); `~.` is reported on `end_tx`.
    let reader_tx = tx.clone();
    let (end_tx, mut end_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || read_keystrokes(reader_tx, end_tx));
    drop(tx);
    let _raw = RawMode::enable();
    // In raw mode Ctrl-C is a keystroke for the device; SIGTERM and SIGHUP
    // (a closed window) end the terminal here, so the mode is restored and
    // the call dropped (the broker closes the device's shell).
    let mut ended = EndSignals::terminate_or_hangup();
    let mut screen = Screen::default();
    // The reader drops `end_tx` at stdin's end without `~.`: the device's
    // output still comes, so stop watching (a finished oneshot must not be
    // polled again).
    let mut reader_running = true;
    loop {
        let event = tokio::select! {
            event = events.message() => event,
            signal = ended.recv() => {
                screen.end_line();
                return Err(CliError::Interrupted(signal));
            }
            escape = &mut end_rx, if reader_running => {
                if escape.is_err() {
                    reader_running = false;
                    continue;
                }
                screen.end_line();
                eprint!("terminal to {device} ended (~.)\r\n");
                return Ok(ExitCode::SUCCESS);
            }
        };
        use pb::terminal_event::Event;
        match event {
            Ok(Some(pb::TerminalEvent {
                event: Some(Event::Data(bytes)),
            })) => screen.write(&bytes),
            Ok(Some(pb::TerminalEvent {
                event: Some(Event::Closed(_)),
            })) => break,
            Ok(Some(_)) => {}
            // The broker went away (or ended the call without closing the
            // shell): say so on a line of its own, after the device's output.
            Ok(None) => {
                screen.end_line();
                return Err(CliError::Usage(format!(
                    "the terminal to {device} ended: the broker ended the call"
                )));
            }
            Err(status) => {
                screen.end_line();
                return Err(CliError::Usage(format!(
                    "the terminal to {device} ended: lost the broker ({})",
                    status.message()
                )));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The terminal's stdin reader (a thread of its own): keystrokes through
/// the escape state machine to the broker; `~.` fires `end`, `~?` prints
/// the help on stderr.
fn read_keystrokes(
    to_broker: mpsc::Sender<pb::TerminalRequest>,
    end: tokio::sync::oneshot::Sender<()>,
) {
    use super::terminal_escape::{Escapes, HELP, Step};
    use pb::terminal_request::Input;
    let send = |bytes: Vec<u8>| {
        to_broker
            .blocking_send(pb::TerminalRequest {
                input: Some(Input::Data(bytes)),
            })
            .is_ok()
    };
    let mut escapes = Escapes::new();
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 1024];
    loop {
        let n = match std::io::Read::read(&mut stdin, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for step in escapes.feed(&buf[..n]) {
            match step {
                Step::Send(bytes) => {
                    if !send(bytes) {
                        return;
                    }
                }
                Step::Help => {
                    let mut err = std::io::stderr();
                    let _ = err.write_all(HELP.as_bytes());
                    let _ = err.flush();
                }
                Step::End => {
                    let _ = end.send(());
                    return;
                }
            }
        }
    }
    if let Some(held) = escapes.finish() {
        send(held);
    }
}

/// The device's output on stdout, remembering whether the cursor is at the
/// start of a line, so that a closing message gets a line of its own.
#[derive(Default)]
struct Screen {
    mid_line: bool,
}

impl Screen {
    fn write(&mut self, bytes: &[u8]) {
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(bytes);
        let _ = stdout.flush();
        if let Some(&last) = bytes.last() {
            self.mid_line = last != b'\n';
        }
    }

    /// Moves to a new line if the output left the cursor mid-line (raw
    /// mode: `\r\n`).
    fn end_line(&mut self) {
        if std::mem::take(&mut self.mid_line) {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(b"\r\n");
            let _ = stdout.flush();
        }
    }
}

/// `key=value,key=value` sorted by key, or `-` when there are none (the
/// text listings' attributes column).
pub(super) fn attributes_text<K: std::fmt::Display, V: std::fmt::Display>(
    attributes: impl IntoIterator<Item = (K, V)>,
) -> String {
    let text: Vec<String> = attributes
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if text.is_empty() {
        "-".into()
    } else {
        text.join(",")
    }
}
