//! The `switchyardd` binary: every command, daemons included. Sets up
//! logging, configuration, the runtime and signals; everything else lives
//! in the library. The lean `switchyard` front (`src/main.rs`) hands it the
//! commands it does not run itself.

use std::process::ExitCode;

use anyhow::Context;
use clap::FromArgMatches;
use switchyard::cli::{self, Cli, LogFormatArg};
use switchyard::logging::{self, LogFormat};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // The tree with shared options scoped to the commands that use them
    // (cli::help_scope): what `--help` shows.
    let matches = cli::help_scope::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = switchyard::config::load(cli.globals.config.as_deref())?;
    let format = match cli.globals.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Journald) => LogFormat::Journald,
        None => settings.log_format,
    };
    logging::init(format, &settings.log_filter);
    switchyard::tls::install_crypto_provider();
    let daemon = cli.command.is_daemon();
    let threads = settings.runtime_threads;

    let main = async {
        let shutdown = CancellationToken::new();
        // Daemons drain on the first signal. Every other command keeps the
        // default disposition, as in the lean front: the first Ctrl-C or
        // SIGTERM ends it at once (even while it waits in a blocking
        // password prompt), the kernel closes its broker connection, and
        // the broker cancels the calls it had started.
        let _signals = if daemon {
            Some(spawn_signal_handler(shutdown.clone())?)
        } else {
            None
        };
        Ok(cli::run(cli, settings, shutdown).await?)
    };
    if !daemon {
        // A one-shot client command: one thread starts fastest.
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(main);
    }
    // Daemons: actix actors run on the System arbiter inside the
    // multi-thread tokio runtime that also serves tonic.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads(threads)? {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    actix_rt::System::with_tokio_rt(|| runtime).block_on(main)
}

/// The daemons' worker threads: the config's `runtime.worker_threads`
/// (already checked against `MAX_WORKER_THREADS`), else tokio's
/// `$TOKIO_WORKER_THREADS`, checked here with the same bound, since tokio
/// panics on a value it cannot use and fails to start with too many.
fn worker_threads(configured: Option<usize>) -> anyhow::Result<Option<usize>> {
    use switchyard::config::MAX_WORKER_THREADS;
    if configured.is_some() {
        return Ok(configured);
    }
    let Some(raw) = std::env::var_os("TOKIO_WORKER_THREADS") else {
        return Ok(None);
    };
    match raw.to_str().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(n) if (1..=MAX_WORKER_THREADS).contains(&n) => Ok(Some(n)),
        _ => anyhow::bail!(
            "TOKIO_WORKER_THREADS={} is not a number of threads from 1 to {MAX_WORKER_THREADS}",
            raw.to_string_lossy()
        ),
    }
}

/// The first SIGINT/SIGTERM cancels `shutdown`; a second exits at once.
fn spawn_signal_handler(
    shutdown: CancellationToken,
) -> anyhow::Result<switchyard::task::AbortOnDrop<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(switchyard::task::AbortOnDrop::new(tokio::spawn(
        async move {
            let mut first = true;
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                if !first {
                    std::process::exit(130);
                }
                first = false;
                shutdown.cancel();
            }
        },
    )))
}
