//! `switchyard sim`: start simulated devices and report where they listen.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::secret::read_secret_file;
use crate::sim::server::{SimCredentials, SimEndpoint, SimFleet, SimFleetConfig};
use crate::sim::shell::ShellOptions;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// How many devices to start.
    #[arg(long, default_value_t = 3)]
    pub count: usize,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// First port; each device takes the next one. 0 = any free port per device.
    #[arg(long, default_value_t = 0)]
    pub base_port: u16,
    /// Device names are PREFIX-001, PREFIX-002, ...
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// Login name the devices accept (demo and test use only).
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// File holding the password the devices accept (default: "admin").
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Write one JSON line per device here once all listen (default: stdout).
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// Refuse exec requests: the devices offer only an interactive shell.
    #[arg(long)]
    pub refuse_exec: bool,
    /// Shells start with a pager after this many lines (0: none).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub terminal_length: u32,
    /// File holding an enable secret: sessions start in user mode.
    #[arg(long, value_name = "FILE")]
    pub enable_password_file: Option<PathBuf>,
    /// A login banner printed before the first prompt.
    #[arg(long, value_name = "TEXT")]
    pub banner: Option<String>,
    /// Each device also listens for Telnet (Username:/Password: login with
    /// the same credentials); its port is `telnet_port` in the ready
    /// lines (with --base-port: after the SSH ports).
    #[arg(long)]
    pub telnet: bool,
}

pub async fn run(args: SimArgs, shutdown: CancellationToken) -> Result<ExitCode, CliError> {
    if args.count == 0 {
        return Err(CliError::Usage("--count must be at least 1".into()));
    }
    let mut credentials = SimCredentials {
        username: args.username,
        ..Default::default()
    };
    if let Some(path) = &args.password_file {
        credentials.password = read_secret_file("simulator password", path)?;
    }
    let fleet = SimFleet::start(SimFleetConfig {
        count: args.count,
        listen: args.listen,
        name_prefix: args.prefix,
        base_port: args.base_port,
        credentials,
        refuse_exec: args.refuse_exec,
        telnet: args.telnet,
        shell: ShellOptions {
            enable_secret: args
                .enable_password_file
                .as_deref()
                .map(|path| read_secret_file("simulator enable secret", path))
                .transpose()?,
            banner: args.banner,
            terminal_length: args.terminal_length,
        },
    })
    .await
    .map_err(CliError::io("cannot start simulated devices"))?;
    let lines = ready_lines(fleet.endpoints());
    match &args.ready_file {
        Some(path) => crate::fsutil::write_atomically(path, lines.as_bytes())
            .map_err(CliError::io(format!("cannot write {}", path.display())))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(lines.as_bytes())
                .and_then(|()| out.flush())
                .map_err(CliError::io("cannot write to stdout"))?;
        }
    }
    tracing::info!(
        devices = fleet.endpoints().len(),
        "simulated devices listening"
    );
    shutdown.cancelled().await;
    fleet.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn ready_lines(endpoints: &[SimEndpoint]) -> String {
    endpoints
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
        .collect()
}
