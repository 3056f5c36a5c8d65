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
    broker::run(
        config,
        shutdown,
        |path| {
            eprintln!("switchyard broker listening on {}", path.display());
        },
        |notice| eprintln!("switchyard broker: {}", drain_message(notice)),
    )
    .await
    .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

/// What a person who stopped a broker (or the demo) is told while it
/// drains: how many calls it waits for, how long, and that a second signal
/// stops it at once.
pub(super) fn drain_message(notice: broker::DrainNotice) -> String {
    let calls = |n: u32| match n {
        1 => "1 call".to_string(),
        n => format!("{n} calls"),
    };
    match notice {
        broker::DrainNotice::Waiting { calls: n, timeout } => format!(
            "draining: waiting up to {} for {} to finish (open terminals \
             count; new calls are refused); press Ctrl-C again (or send \
             another SIGTERM) to stop at once",
            humantime::format_duration(timeout),
            calls(n)
        ),
        broker::DrainNotice::Cancelling { calls: n, timeout } => format!(
            "{} still running after {}: cancelling {}",
            calls(n),
            humantime::format_duration(timeout),
            if n == 1 { "it" } else { "them" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drain_messages_say_what_is_awaited_and_how_to_stop() {
        let m = drain_message(broker::DrainNotice::Waiting {
            calls: 2,
            timeout: Duration::from_secs(10),
        });
        assert!(m.contains("waiting up to 10s for 2 calls"), "{m}");
        assert!(m.contains("Ctrl-C again"), "{m}");
        let m = drain_message(broker::DrainNotice::Cancelling {
            calls: 1,
            timeout: Duration::from_secs(10),
        });
        assert_eq!(m, "1 call still running after 10s: cancelling it");
    }
}
