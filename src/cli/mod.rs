//! Command-line front end: argument definitions and dispatch.
//!
//! Each subcommand lives in its own file. Commands return [`CliError`]s with
//! a message a person can act on; `main` prints it on one line.

pub mod broker;
pub mod cloud;
pub mod cp;
pub mod demo;
mod docs;
mod exec_live;
mod exec_output;
pub mod forward;
pub mod handoff;
pub mod help_scope;
pub mod known_services;
mod output_writer;
pub mod relay;
pub mod remote;
mod remote_exec;
pub mod service_admin;
mod service_change;
pub mod sim;
pub mod ssh_proxy;
pub mod terminal_escape;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::secret::SecretError;
use crate::service::drivers::DriverError;
use crate::service::inventory::InventoryError;

/// `--version`: the package version, the commit it was built from
/// (`-modified` when the checkout had changes; `unknown` from a tarball
/// without `$SWITCHYARD_COMMIT`) and the build date (UTC; from
/// `$SOURCE_DATE_EPOCH` when set).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SWITCHYARD_COMMIT"),
    ", built ",
    env!("SWITCHYARD_BUILD_DATE"),
    ")"
);

/// switchyard: one broker per host for remote access to network devices.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub globals: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The lean front's view of the command line: the global options and the
/// client commands only, a small tree to build on every run. Anything it
/// cannot parse (help, version, daemon commands, mistakes) goes to
/// `switchyardd`, which parses the whole of [`Cli`].
#[derive(Debug, Parser)]
#[command(name = "switchyard")]
pub struct FrontCli {
    #[command(flatten)]
    pub globals: GlobalArgs,
    #[command(subcommand)]
    pub command: remote::ClientCommand,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: $XDG_CONFIG_HOME/switchyard/config.toml if present).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "SWITCHYARD_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Log line format on stderr (overrides the config file).
    #[arg(long, global = true, help_heading = "Global options", value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Serve Prometheus metrics at http://ADDR/metrics (daemons only).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "ADDR"
    )]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The broker's socket [default: $SWITCHYARD_SOCKET, else the config's
    /// broker.socket, else $XDG_RUNTIME_DIR/switchyard/broker.sock; without
    /// $XDG_RUNTIME_DIR, /run/switchyard/broker.sock for root and
    /// $TMPDIR/switchyard-UID/broker.sock (TMPDIR: /tmp) for other users].
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "PATH"
    )]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
    Journald,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The service that sits next to the devices: inventory, users, run.
    Service(service_admin::ServiceArgs),
    /// The cloud relay: set-up, users, tokens, run.
    Relay(relay::RelayArgs),
    /// Start simulated devices, each an SSH server speaking a small network-OS CLI.
    Sim(sim::SimArgs),
    /// Start a throw-away demo set-up and print commands to try.
    Demo(demo::DemoArgs),
    /// Run the broker daemon: one per host, shared by every local caller.
    Broker,
    /// Everyday client commands; the lean `switchyard` binary runs these
    /// itself.
    #[command(flatten)]
    Client(remote::ClientCommand),
    /// Log in to a relay (the cloud); the broker keeps the login for this user.
    #[command(subcommand)]
    Login(cloud::LoginCommand),
    /// End cloud logins of this user.
    Logout {
        /// Only this identity.
        identity: Option<String>,
        #[command(flatten)]
        relay: cloud::RelayArgs,
    },
    /// Enroll with the relay: a client certificate, or a service's one-time password.
    #[command(subcommand)]
    Enroll(cloud::EnrollCommand),
    /// Access tokens for the logged-in identity.
    #[command(subcommand)]
    Token(cloud::TokenCommand),
    /// Service certificates the broker learned on first use (direct
    /// connections): list them, or forget one that changed.
    #[command(subcommand)]
    KnownServices(known_services::KnownServicesCommand),
    /// Print shell completions on stdout, e.g. `switchyard completions bash
    /// > /usr/share/bash-completion/completions/switchyard`.
    Completions {
        /// bash, zsh or fish.
        shell: docs::CompletionShell,
    },
    /// Write the man pages (switchyard.1 and one per subcommand, e.g.
    /// switchyard-broker.1) into DIR, e.g. /usr/share/man/man1.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

impl Command {
    /// Long-running commands (servers) get the multi-thread runtime and the
    /// actor system; one-shot client commands a single thread.
    pub fn is_daemon(&self) -> bool {
        matches!(
            self,
            Self::Broker
                | Self::Relay(relay::RelayArgs {
                    command: relay::RelayCommand::Run(_),
                    ..
                })
                | Self::Sim(_)
                | Self::Demo(_)
                | Self::Service(service_admin::ServiceArgs {
                    command: service_admin::ServiceCommand::Run(_)
                        | service_admin::ServiceCommand::Exec(_),
                    ..
                })
        )
    }
}

/// `println!` for command output: a reader that went away (`| head`) ends
/// the command quietly, as it ends `cat`, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for command output; see [`outln!`].
#[allow(unused_macros)]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_stdout(format_args!($($arg)*)) };
}

#[allow(unused_imports)]
pub(crate) use out;
pub(crate) use outln;

/// Writes command output to stdout. A closed pipe exits with the status a
/// shell reports for a command ended by SIGPIPE (128 + 13); any other
/// failure to write exits with an error line.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Writes command output bytes to stdout exactly (a closed pipe ends the
/// command as [`write_stdout`] does).
///
/// The bytes go straight to file descriptor 1 (after flushing what the
/// standard library's line buffer holds, under its lock, so order is
/// kept): through `Stdout`'s `LineWriter` every chunk was scanned for its
/// last newline (`memrchr`), 18% of the CLI's CPU time in a bulk
/// `exec --raw` (perf, `benches/exec_vs_ssh.py`).
pub(crate) fn write_stdout_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.flush().and_then(|()| write_fd_all(&stdout, bytes)) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Writes all of `bytes` to `fd` itself (no user-space buffer), retrying
/// when a signal interrupts the call.
fn write_fd_all(fd: &impl std::os::fd::AsFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Errors a command reports to the person who ran it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("{0}")]
    Usage(String),
    /// The broker's socket could not be reached; says what is wrong with
    /// the path.
    #[error(transparent)]
    BrokerUnreachable(#[from] crate::broker::socket::ConnectProblem),
    /// The broker's answer, or what the gRPC client made of a lost
    /// connection (its causes included: tonic's own message for a broker
    /// that went away mid-call is only "transport error").
    #[error("{}", remote_text(.0))]
    Remote(tonic::Status),
    /// A signal ended a command that was waiting; what it had started at
    /// the broker was cancelled with its call.
    #[error("stopped by {0}; what the command had started at the broker was cancelled")]
    Interrupted(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        Self::Remote(status)
    }
}

/// A status's message, followed by each cause under it that adds
/// something (e.g. "transport error: ...: lost the broker at PATH: ...").
fn remote_text(status: &tonic::Status) -> String {
    crate::error_chain::with_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    )
}

impl CliError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Runs a parsed command. `shutdown` fires on SIGINT/SIGTERM.
pub async fn run(
    cli: Cli,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let socket = crate::broker::socket::resolve(
        cli.globals.socket.as_deref(),
        settings.broker.socket.as_deref(),
    );
    let _metrics = match cli.globals.metrics_listen {
        Some(addr) if cli.command.is_daemon() => {
            let server = crate::metrics::serve(addr)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            eprintln!("switchyard metrics on http://{}/metrics", server.addr);
            Some(server)
        }
        _ => None,
    };
    match cli.command {
        Command::Service(args) => service_admin::run(args, &settings, shutdown).await,
        Command::Relay(args) => relay::run(args, shutdown).await,
        Command::Sim(args) => sim::run(args, shutdown).await,
        Command::Demo(args) => demo::run(args, cli.globals.socket, settings, shutdown).await,
        Command::Broker => broker::run(socket, settings, shutdown).await,
        Command::Client(cmd) => remote::run(&socket, cmd).await,
        Command::Login(cmd) => cloud::login(&socket, cmd).await,
        Command::Logout { identity, relay } => cloud::logout(&socket, identity, relay).await,
        Command::Enroll(cmd) => cloud::enroll(&socket, cmd).await,
        Command::Token(cmd) => cloud::token(&socket, cmd).await,
        Command::KnownServices(cmd) => known_services::run(&socket, cmd).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man_pages(&dir),
    }
}

/// A duration argument (`10s`, `1h`, `7d`) that must be more than zero: a
/// zero lifetime or timeout would make every use fail at once.
pub(crate) fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::positive_duration;
    use std::time::Duration;

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(positive_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(positive_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(
            positive_duration("0s").unwrap_err(),
            "must be more than zero"
        );
        assert!(positive_duration("soon").is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport failure as tonic wraps it: a bland top-level message
    /// with the reason underneath.
    #[derive(Debug)]
    struct Transport(std::io::Error);

    impl std::fmt::Display for Transport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }

    impl std::error::Error for Transport {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_lost_broker_is_named_in_the_error_text() {
        let reason =
            std::io::Error::other("lost the broker at /run/sy.sock: it closed the connection");
        let status = tonic::Status::from_error(Box::new(Transport(reason)));
        let text = CliError::from(status).to_string();
        assert!(text.starts_with("transport error: "), "{text}");
        assert!(text.contains("lost the broker at /run/sy.sock"), "{text}");
        // A broker's own answer is shown as it is.
        let plain = CliError::from(tonic::Status::not_found("no device \"x\""));
        assert_eq!(plain.to_string(), "no device \"x\"");
    }
}
