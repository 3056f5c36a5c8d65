//! `switchyard relay ...`: set up and run the cloud relay, and administer
//! its built-in identity provider and access tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use super::{CliError, outln};
use crate::relay::db::Database;
use crate::relay::device_flow::DeviceFlowConfig;
use crate::relay::http::HttpLimits;
use crate::relay::state::RelayKeys;
use crate::relay::{Relay, RelayConfig, state};
use crate::secret::SecretSource;
use crate::wire::pin::Fingerprint;

#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The relay's state directory (CA, keys, database).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_RELAY_STATE",
        value_name = "DIR"
    )]
    pub state: Option<PathBuf>,
    /// The shared PostgreSQL database of a relay tier
    /// (`postgres://USER:PASSWORD@HOST/DB`, or a Unix socket directory as
    /// `postgres:///DB?host=/run/postgresql`); without it, the SQLite file
    /// in the state directory. Prefer the environment variable: a
    /// password on the command line is visible to other local users.
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_RELAY_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: RelayCommand,
}

#[derive(Debug, Subcommand)]
// Parsed once per process: the size of `Run` costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum RelayCommand {
    /// Create the state directory: CA, TLS certificate, signing key, database.
    Init {
        /// Host names and addresses the relay's certificate is valid for.
        #[arg(long = "hostname", value_name = "NAME",
              default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hostnames: Vec<String>,
    },
    /// Run the relay.
    Run(RunArgs),
    /// Users of the built-in identity provider.
    #[command(subcommand)]
    User(UserCommand),
    /// Long-lived access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled services: owners, transfers, the enrollment audit trail.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Certificates the relay's CA issued (client and service).
    #[command(subcommand)]
    Cert(CertCommand),
    /// The nodes of a relay tier (`--database`): alive or not, load, and
    /// the services connected to each.
    Nodes,
}

/// Administrator commands on enrolled services. A serial belongs to the
/// user who first enrolled it; only that user may mint a one-time password
/// for it again, and only an administrator (whoever runs these commands on
/// the state directory) may give it to someone else.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List enrolled services with their owners.
    List,
    /// Give a serial to another user: from now on only that user may
    /// enroll it (the running service keeps its certificate). Recorded in
    /// the audit trail.
    Transfer {
        /// The service's serial (`relay service list`).
        serial: String,
        /// The new owner (a relay user).
        #[arg(long, value_name = "EMAIL")]
        to: String,
    },
    /// The audit trail of enrollments and transfers, oldest first.
    Audit {
        /// Only this serial's records.
        #[arg(long)]
        serial: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// List issued certificates (fingerprint, kind, subject, revoked).
    List,
    /// Revoke a certificate by fingerprint: logins with it are refused and
    /// a running relay closes the connections using it within 2 s.
    Revoke {
        /// The certificate's SHA-256 fingerprint (`relay cert list`).
        fingerprint: String,
    },
}

/// `--packet-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct PacketListen(pub Option<SocketAddr>);

fn parse_packet_listen(s: &str) -> Result<PacketListen, String> {
    if s == "off" {
        return Ok(PacketListen(None));
    }
    s.parse()
        .map(|a| PacketListen(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (an address like 0.0.0.0:4434, or off)"))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// UDP address of the QUIC listener (brokers and services).
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub listen: SocketAddr,
    /// TCP address of the HTTPS listener (sign-in page, OAuth endpoints).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub http_listen: SocketAddr,
    /// Also accept brokers and services over TLS/TCP (HTTP/2 streams) on
    /// the QUIC listener's address and port number, for networks that
    /// block UDP; `off` accepts QUIC only.
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = ["on", "off"])]
    pub tcp_listen: String,
    /// UDP address of the packet port, through which tunnels' end-to-end
    /// encrypted datagrams are forwarded without being decrypted; `off`
    /// carries them inside relayed streams instead (slower).
    #[arg(long, default_value = "127.0.0.1:4434", value_name = "ADDR|off", value_parser = parse_packet_listen)]
    pub packet_listen: PacketListen,
    /// Host name callers use in URLs (default: the HTTPS listener's address).
    #[arg(long, value_name = "HOST")]
    pub public_host: Option<String>,
    /// Seconds a device-login client must wait between polls.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub poll_interval: u64,
    /// Lifetime of SSO access tokens (e.g. 1h, 15m).
    #[arg(long, default_value = "1h", value_parser = super::positive_duration)]
    pub access_token_lifetime: Duration,
    /// Lifetime of enrollment one-time passwords.
    #[arg(long, default_value = "15m", value_parser = super::positive_duration)]
    pub otp_lifetime: Duration,
    /// HTTPS connections served at once; more are closed as they arrive.
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// Time an HTTPS client has for its TLS handshake and for each
    /// request's headers before its connection is closed.
    #[arg(long, default_value = "10s", value_parser = super::positive_duration)]
    pub http_header_timeout: Duration,
    /// HTTPS connections served at once from one address (an IPv6 /64).
    #[arg(long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections_per_address: u32,
    /// Time a whole HTTPS request (headers in, body included) may take
    /// before the client gets 408 and is cut off.
    #[arg(long, default_value = "15s", value_parser = super::positive_duration)]
    pub http_request_timeout: Duration,
    /// Device logins one address may start per minute.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub grant_starts_per_minute: u32,
    /// Device logins waiting for approval at once, from everyone.
    #[arg(long, default_value_t = 10_000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_grants: u32,
    /// In a tier: the address other nodes reach this node's QUIC listener
    /// at (default: the listener's address; give it when listening on
    /// 0.0.0.0).
    #[arg(long, value_name = "ADDR")]
    pub node_address: Option<SocketAddr>,
    /// Write `{"url": ..., "quic": ..., "ca": ...}` here once listening.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        /// The user's e-mail address: their identity at logins.
        email: String,
        /// File holding the password (else a prompt).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List users.
    List,
    /// Disable a user: sign-ins, tokens and certificates stop working.
    Disable {
        /// The user's e-mail address.
        email: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The user's e-mail address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an access token for a user; prints it once.
    Issue {
        /// The user's e-mail address.
        email: String,
        /// e.g. 7d, 12h.
        #[arg(long, default_value = "7d", value_parser = super::positive_duration)]
        lifetime: Duration,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token's id (printed when it was issued; `relay token list`).
        id: String,
    },
    /// List access tokens (ids, never the tokens).
    List,
}

fn state_dir(args: &RelayArgs) -> Result<&Path, CliError> {
    args.state
        .as_deref()
        .ok_or_else(|| CliError::Usage("name the relay's state directory with --state DIR".into()))
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

/// The state directory's keys and the database (`--database`, else its
/// SQLite file).
async fn open(dir: &Path, database: Option<&str>) -> Result<(RelayKeys, Database), CliError> {
    let keys = state::load_keys(dir).map_err(usage)?;
    let db = Database::open(dir, database).await.map_err(usage)?;
    Ok((keys, db))
}

pub async fn run(args: RelayArgs, shutdown: CancellationToken) -> Result<ExitCode, CliError> {
    let dir = state_dir(&args)?.to_path_buf();
    let database = args.database.as_deref();
    match args.command {
        RelayCommand::Init { hostnames } => {
            state::init(&dir, &hostnames).map_err(usage)?;
            outln!(
                "relay state created in {}; give brokers and services {}",
                dir.display(),
                dir.join("ca.pem").display()
            );
        }
        RelayCommand::Run(run) => return run_relay(&dir, database, run, shutdown).await,
        RelayCommand::User(cmd) => {
            let (_, store) = open(&dir, database).await?;
            match cmd {
                UserCommand::Add {
                    email,
                    password_file,
                } => {
                    let password = SecretSource {
                        what: "password",
                        file_flag: "--password-file",
                        file: password_file.as_deref(),
                        credential: None,
                        confirm: true,
                    }
                    .read()?;
                    store.add_user(&email, &password).await.map_err(usage)?;
                    outln!("added {email}");
                }
                UserCommand::List => {
                    outln!("{:<40} ENABLED", "EMAIL");
                    for user in store.users().await.map_err(usage)? {
                        outln!(
                            "{:<40} {}",
                            user.email,
                            if user.enabled { "yes" } else { "no" }
                        );
                    }
                }
                UserCommand::Disable { email } => {
                    store.set_user_enabled(&email, false).await.map_err(usage)?;
                    outln!("disabled {email}; a running relay closes their connections within 2 s");
                }
                UserCommand::Enable { email } => {
                    store.set_user_enabled(&email, true).await.map_err(usage)?;
                    outln!("enabled {email}");
                }
            }
        }
        RelayCommand::Token(cmd) => {
            let (keys, store) = open(&dir, database).await?;
            match cmd {
                TokenCommand::Issue { email, lifetime } => {
                    let exp = crate::relay::unix_now() + lifetime.as_secs();
                    let (claims, token) = keys
                        .issue_api_token(&store, &email, exp)
                        .await
                        .map_err(usage)?;
                    eprintln!("token {} (expires at unix time {})", claims.jti, claims.exp);
                    outln!("{token}");
                }
                TokenCommand::Revoke { id } => {
                    store.revoke_token(&id).await.map_err(usage)?;
                    outln!("revoked {id}; a running relay closes its connections within 2 s");
                }
                TokenCommand::List => {
                    outln!("{:<24} {:<32} {:<12} REVOKED", "ID", "EMAIL", "EXPIRES");
                    for t in store.api_tokens().await.map_err(usage)? {
                        outln!(
                            "{:<24} {:<32} {:<12} {}",
                            t.id,
                            t.email,
                            t.expires_at,
                            if t.revoked { "yes" } else { "no" }
                        );
                    }
                }
            }
        }
        RelayCommand::Service(cmd) => {
            let (_, store) = open(&dir, database).await?;
            service_command(&store, cmd).await?;
        }
        RelayCommand::Cert(cmd) => {
            let (_, store) = open(&dir, database).await?;
            cert_command(&store, cmd).await?;
        }
        RelayCommand::Nodes => {
            if database.is_none() {
                return Err(CliError::Usage(
                    "`relay nodes` lists a tier's nodes: name its database with --database URL"
                        .into(),
                ));
            }
            let (_, store) = open(&dir, database).await?;
            outln!(
                "{:<18} {:<24} {:<6} {:>8} {:>11} {:>7} {:>13} {:>12} SERVICES",
                "NODE",
                "QUIC",
                "ALIVE",
                "SERVICES",
                "CONNECTIONS",
                "TUNNELS",
                "TUNNELS-TOTAL",
                "TUNNEL-BYTES"
            );
            for n in store.nodes().await.map_err(usage)? {
                let alive = if n.alive {
                    "yes".to_string()
                } else {
                    format!("no ({}s)", n.silent_secs)
                };
                outln!(
                    "{:<18} {:<24} {:<6} {:>8} {:>11} {:>7} {:>13} {:>12} {}",
                    n.id,
                    n.quic,
                    alive,
                    n.load.services,
                    n.load.connections,
                    n.load.tunnels,
                    n.load.tunnels_total,
                    n.load.tunnel_bytes,
                    n.serials.join(",")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn service_command(store: &Database, cmd: ServiceCommand) -> Result<(), CliError> {
    match cmd {
        ServiceCommand::List => {
            outln!("{:<24} {:<32} FINGERPRINT", "SERIAL", "OWNER");
            for s in store.services().await.map_err(usage)? {
                outln!(
                    "{:<24} {:<32} {}",
                    s.serial,
                    s.owner.as_deref().unwrap_or("(none)"),
                    Fingerprint(s.fingerprint)
                );
            }
        }
        ServiceCommand::Transfer { serial, to } => {
            let previous = store.transfer_service(&serial, &to).await.map_err(usage)?;
            let previous = previous.as_deref().unwrap_or("(none)");
            tracing::info!(%serial, %previous, owner = %to, "service transferred by an administrator (audit)");
            outln!("{serial} now belongs to {to} (was {previous})");
        }
        ServiceCommand::Audit { serial } => {
            outln!(
                "{:<12} {:<24} {:<9} {:<24} {:<24} PREVIOUS",
                "AT",
                "SERIAL",
                "ACTION",
                "ACTOR",
                "OWNER"
            );
            for a in store
                .enrollment_audit(serial.as_deref())
                .await
                .map_err(usage)?
            {
                outln!(
                    "{:<12} {:<24} {:<9} {:<24} {:<24} {}",
                    a.at,
                    a.serial,
                    a.action,
                    a.actor,
                    a.owner,
                    a.previous_owner.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

async fn cert_command(store: &Database, cmd: CertCommand) -> Result<(), CliError> {
    match cmd {
        CertCommand::List => {
            outln!(
                "{:<95} {:<8} {:<32} REVOKED",
                "FINGERPRINT",
                "KIND",
                "SUBJECT"
            );
            for c in store.certs().await.map_err(usage)? {
                outln!(
                    "{:<95} {:<8} {:<32} {}",
                    Fingerprint(c.fingerprint),
                    c.kind,
                    c.subject,
                    if c.revoked { "yes" } else { "no" }
                );
            }
        }
        CertCommand::Revoke { fingerprint } => {
            let parsed = Fingerprint::parse(&fingerprint).ok_or_else(|| {
                CliError::Usage(format!(
                    "{fingerprint:?} is not a SHA-256 fingerprint (as `switchyard relay cert list` shows)"
                ))
            })?;
            store.revoke_cert(&parsed.0).await.map_err(usage)?;
            outln!("revoked {parsed}; a running relay closes its connections within 2 s");
        }
    }
    Ok(())
}

async fn run_relay(
    dir: &Path,
    database: Option<&str>,
    args: RunArgs,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let (keys, db) = open(dir, database).await?;
    let config = RelayConfig {
        listen: args.listen,
        tcp: args.tcp_listen == "on",
        http_listen: args.http_listen,
        packet_listen: args.packet_listen.0,
        public_host: args.public_host,
        device_flow: DeviceFlowConfig {
            interval: Duration::from_secs(args.poll_interval.max(1)),
            max_pending: args.max_pending_grants as usize,
            ..Default::default()
        },
        access_ttl: args.access_token_lifetime,
        otp_ttl: args.otp_lifetime,
        http_limits: HttpLimits {
            max_connections: args.http_max_connections as usize,
            header_timeout: args.http_header_timeout,
            max_connections_per_address: args.http_max_connections_per_address as usize,
            request_timeout: args.http_request_timeout,
            grant_starts_per_minute: args.grant_starts_per_minute,
            ..Default::default()
        },
        node_address: args.node_address,
        ..Default::default()
    };
    let relay = Relay::start_on(keys, db, config).await.map_err(usage)?;
    let ready = serde_json::json!({
        "url": relay.url(),
        "quic": relay.quic_addr().to_string(),
        "packets": relay.packet_addr().map(|a| a.to_string()),
        "ca": dir.join("ca.pem"),
    });
    match &args.ready_file {
        Some(path) => crate::fsutil::write_atomically(path, format!("{ready}\n").as_bytes())
            .map_err(CliError::io(format!("cannot write {}", path.display())))?,
        None => println!("{ready}"),
    }
    crate::daemon::ready(&format!("relay at {}", relay.url()));
    let _watchdog = crate::daemon::Watchdog::start_if_enabled();
    shutdown.cancelled().await;
    crate::daemon::stopping();
    relay.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
