//! `switchyard ssh-proxy start|stop`: the broker's local SSH server, where
//! `ssh -p PORT DEVICE@SERVICE@127.0.0.1` reaches a device through a named
//! service's shared link.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::remote::broker_client;
use super::{CliError, outln};
use crate::api::pb;

#[derive(Debug, Subcommand)]
pub enum SshProxyCommand {
    /// Start your SSH proxy in the broker and return. Log in as
    /// DEVICE@SERVICE (a device of one of your named services), e.g.
    /// `ssh -p 2222 router1@lab@127.0.0.1`; shells (with a pty) and
    /// commands (with their exit status) run on the device through the
    /// service's shared link, with the device's credentials staying on the
    /// service. Only your uid may connect, and only with a key from the
    /// authorized keys or with the password. The host key is made once and
    /// kept in the broker's state directory.
    Start {
        /// A loopback ADDRESS:PORT to listen on (port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:2222")]
        listen: String,
        /// OpenSSH authorized_keys file with the client keys to accept
        /// (default: ~/.ssh/authorized_keys, if it exists).
        #[arg(long, value_name = "FILE")]
        authorized_keys: Option<PathBuf>,
        /// File whose first line is a password to accept too.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Stop your SSH proxy (its sessions end).
    Stop,
}

/// The default authorized_keys file: `$HOME/.ssh/authorized_keys`.
fn default_authorized_keys() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".ssh").join("authorized_keys"))
}

/// Reads the client keys: the given file (which must exist), else the
/// default one if it exists.
fn read_authorized_keys(given: Option<&Path>) -> Result<String, CliError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CliError::Io {
            what: format!("cannot read authorized keys {}", path.display()),
            source,
        })
    };
    match given {
        Some(path) => read(path),
        None => match default_authorized_keys() {
            Some(path) if path.exists() => read(&path),
            _ => Ok(String::new()),
        },
    }
}

/// Runs one `ssh-proxy` command.
pub async fn run(socket: &Path, cmd: SshProxyCommand) -> Result<ExitCode, CliError> {
    match cmd {
        SshProxyCommand::Start {
            listen,
            authorized_keys,
            password_file,
        } => {
            let keys = read_authorized_keys(authorized_keys.as_deref())?;
            let password = match &password_file {
                Some(path) => Some(crate::secret::read_secret_file("SSH proxy password", path)?),
                None => None,
            };
            if keys.trim().is_empty() && password.is_none() {
                return Err(CliError::Usage(
                    "the SSH proxy needs client keys or a password: give --authorized-keys FILE \
                     (default ~/.ssh/authorized_keys, not found or empty) or --password-file FILE"
                        .into(),
                ));
            }
            let mut broker = broker_client(socket).await?;
            let p = broker
                .ssh_proxy_start(pb::SshProxyStartRequest {
                    listen,
                    authorized_keys: keys,
                    password: password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
                    // Lives until `ssh-proxy stop`, reaching named services.
                    session_id: String::new(),
                })
                .await?
                .into_inner();
            outln!("{}  host key {}", p.address, p.host_key_fingerprint);
            outln!(
                "log in with: ssh -p {} DEVICE@SERVICE@127.0.0.1",
                p.local_port
            );
        }
        SshProxyCommand::Stop => {
            let mut broker = broker_client(socket).await?;
            broker.ssh_proxy_stop(pb::SshProxyStopRequest {}).await?;
            outln!("stopped the SSH proxy");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The proxy as JSON (`status --json`).
pub fn ssh_proxy_json(p: &pb::SshProxyStatus) -> serde_json::Value {
    serde_json::json!({
        "address": p.address, "local_port": p.local_port,
        "host_key_fingerprint": p.host_key_fingerprint,
        "authorized_keys": p.authorized_keys, "password": p.password,
        "connections_open": p.connections_open, "connections_total": p.connections_total,
        "connections_failed": p.connections_failed, "last_error": p.last_error,
    })
}

/// The proxy as a text line (`status`).
pub fn print_ssh_proxy(p: Option<&pb::SshProxyStatus>) {
    let Some(p) = p else {
        outln!("ssh proxy: none");
        return;
    };
    outln!(
        "ssh proxy: {}  host key {}  {} keys{}  connections {} open, {} total, {} failed{}",
        p.address,
        p.host_key_fingerprint,
        p.authorized_keys,
        if p.password { " + password" } else { "" },
        p.connections_open,
        p.connections_total,
        p.connections_failed,
        if p.last_error.is_empty() {
            String::new()
        } else {
            format!("  last error: {}", p.last_error)
        }
    );
}
