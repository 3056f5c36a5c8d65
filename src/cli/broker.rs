//! `switchyard broker`: runs the daemon in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::broker::{self, BrokerConfig};
use crate::config::Settings;

/// `socket`: the one socket rule's answer (`broker::socket::resolve`).
pub async fn run(
    socket: PathBuf,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let domains = settings.domains;
    let b = settings.broker;
    let config = BrokerConfig {
        socket,
        socket_group: b.socket_group,
        registry: b.registry,
        drain_timeout: b.drain_timeout,
        domains,
    };
    broker::run(config, shutdown, |path| {
        eprintln!("switchyard broker listening on {}", path.display());
    })
    .await
    .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
