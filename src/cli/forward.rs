//! `switchyard forward start|stop|list`: port forwards kept by the broker.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::remote::broker_client;
use super::{CliError, outln};
use crate::api::pb;

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
        "forward_id": f.forward_id, "service": f.service, "device": f.device,
        "port": f.port, "address": f.address, "local_port": f.local_port,
        "connections_open": f.connections_open, "connections_total": f.connections_total,
        "connections_failed": f.connections_failed, "bytes_to_device": f.bytes_to_device,
        "bytes_from_device": f.bytes_from_device, "last_error": f.last_error,
    })
}

/// Forwards as text lines (`forward list`, `status`).
pub fn print_forwards(list: &[pb::ForwardStatus]) {
    for f in list {
        outln!(
            "  {}  {} -> {} {}:{}  connections {} open, {} total, {} failed  bytes {} to device, {} from device{}",
            f.forward_id,
            f.address,
            f.service,
            f.device,
            f.port,
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
