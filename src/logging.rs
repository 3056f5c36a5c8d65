//! Tracing set-up: an env filter (`RUST_LOG`), text or JSON lines on stderr,
//! or records straight to journald.
//!
//! Logs go to stderr so stdout stays free for command output (JSON, ready
//! lines). Colours only when stderr is a terminal, so journald gets plain
//! text when it collects stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
    /// Structured records straight to journald (falls back to text on
    /// stderr, with a warning, when journald is not there).
    Journald,
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG`
/// is unset. Calling it twice is harmless (the second call is ignored).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init().map_err(|e| e.to_string()),
        LogFormat::Json => builder.json().try_init().map_err(|e| e.to_string()),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journald) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                let filter = EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| EnvFilter::new(default_filter));
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journald.with_syslog_identifier("switchyard".into()))
                    .try_init()
                    .map_err(|e| e.to_string())
            }
            Err(e) => {
                eprintln!("warning: journald is not available ({e}); logging to stderr");
                builder.try_init().map_err(|e| e.to_string())
            }
        },
    };
}
