//! `switchyard forward start|stop|list` and `switchyard socks-proxy
//! start|stop`: port forwards and SOCKS5 proxies kept by the broker.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::remote::broker_client;
use super::{CliError, outln};
use crate::api::pb;
use crate::secret::read_secret_file;

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Forward a local port (or Unix socket) to a device's TCP port through
    /// a named service's shared link. Prints the bound address and returns;
    /// the forward lives in the broker until `forward stop` or until the
    /// named service is disconnected. Only your uid may connect to it.
    Start {
        /// The named service.
        name: String,
        /// The device.
        device: String,
        /// The device's TCP port (the service allows the device's SSH port
        /// by default, others when its `forward_ports` lists them).
        port: u16,
        /// Where to listen: a loopback ADDRESS:PORT (port 0 picks one), or
        /// unix:PATH (a 0600 socket in a directory you own).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Stop a forward (its open connections are reset).
    Stop {
        /// The forward's id (`fwd-N`), from `forward start` or `forward list`.
        id: String,
    },
    /// List your forwards with their connection and byte counts.
    List {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SocksCommand {
    /// Start a SOCKS5 proxy (CONNECT only) whose clients reach any device
    /// of a named service by name, through its shared link: the device is
    /// the host name, resolved by the service (`curl --socks5-hostname`,
    /// `socks5h://`; IP addresses are refused). The service allows the
    /// same ports as for `forward start`. Prints the proxy's id and address
    /// and returns; the proxy lives in the broker until `socks-proxy stop`
    /// or the named service is disconnected. Only your uid may connect.
    Start {
        /// The named service.
        name: String,
        /// Where to listen: a loopback ADDRESS:PORT (port 0 picks one), or
        /// unix:PATH (a 0600 socket in a directory you own).
        #[arg(long, default_value = "127.0.0.1:1080")]
        listen: String,
        /// A username clients must give (RFC 1929), with --password-file.
        #[arg(long, requires = "password_file")]
        username: Option<String>,
        /// A file whose first line is the password clients must give.
        #[arg(long, requires = "username")]
        password_file: Option<PathBuf>,
    },
    /// Stop a SOCKS5 proxy (its open connections are reset).
    Stop {
        /// The proxy's id (`socks-N`), from `socks-proxy start` or
        /// `forward list`.
        id: String,
    },
}

/// Runs one `socks-proxy` command.
pub async fn run_socks(socket: &Path, cmd: SocksCommand) -> Result<ExitCode, CliError> {
    match cmd {
        SocksCommand::Start {
            name,
            listen,
            username,
            password_file,
        } => {
            let password = match &password_file {
                Some(path) => read_secret_file("the SOCKS5 password", path)?,
                None => crate::secret::Secret::new(""),
            };
            let mut broker = broker_client(socket).await?;
            let f = broker
                .socks_proxy_start(pb::SocksProxyStartRequest {
                    service: Some(pb::ServiceRef {
                        name,
                        ..Default::default()
                    }),
                    listen,
                    username: username.unwrap_or_default(),
                    password: password.expose().to_string(),
                })
                .await?
                .into_inner();
            outln!("{}  {}", f.forward_id, f.address);
            Ok(ExitCode::SUCCESS)
        }
        SocksCommand::Stop { id } => run(socket, ForwardCommand::Stop { id }).await,
    }
}

/// Runs one `forward` command.
pub async fn run(socket: &Path, cmd: ForwardCommand) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    match cmd {
        ForwardCommand::Start {
            name,
            device,
            port,
            listen,
        } => {
            let f = broker
                .forward_start(pb::ForwardStartRequest {
                    service: Some(pb::ServiceRef {
                        name,
                        ..Default::default()
                    }),
                    device,
                    port: port.into(),
                    listen,
                })
                .await?
                .into_inner();
            outln!("{}  {}", f.forward_id, f.address);
        }
        ForwardCommand::Stop { id } => {
            broker
                .forward_stop(pb::ForwardStopRequest {
                    forward_id: id.clone(),
                })
                .await?;
            outln!("stopped {id}");
        }
        ForwardCommand::List { json } => {
            let list = broker
                .forward_list(pb::ForwardListRequest {})
                .await?
                .into_inner()
                .forwards;
            if json {
                let value: Vec<_> = list.iter().map(forward_json).collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                print_forwards(&list);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A forward as JSON (`forward list --json`, `status --json`).
pub fn forward_json(f: &pb::ForwardStatus) -> serde_json::Value {
    serde_json::json!({
        "forward_id": f.forward_id, "kind": f.kind, "username": f.username,
        "service": f.service, "device": f.device,
        "port": f.port, "address": f.address, "local_port": f.local_port,
        "connections_open": f.connections_open, "connections_total": f.connections_total,
        "connections_failed": f.connections_failed, "bytes_to_device": f.bytes_to_device,
        "bytes_from_device": f.bytes_from_device, "last_error": f.last_error,
    })
}

/// Forwards as text lines (`forward list`, `status`).
pub fn print_forwards(list: &[pb::ForwardStatus]) {
    for f in list {
        let to = if f.kind == "socks5" {
            match f.username.as_str() {
                "" => "SOCKS5".to_string(),
                user => format!("SOCKS5 (username {user})"),
            }
        } else {
            format!("{}:{}", f.device, f.port)
        };
        outln!(
            "  {}  {} -> {} {}  connections {} open, {} total, {} failed  bytes {} to device, {} from device{}",
            f.forward_id,
            f.address,
            f.service,
            to,
            f.connections_open,
            f.connections_total,
            f.connections_failed,
            f.bytes_to_device,
            f.bytes_from_device,
            if f.last_error.is_empty() {
                String::new()
            } else {
                format!("  last error: {}", f.last_error)
            }
        );
    }
}
