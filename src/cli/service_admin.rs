//! `switchyard service ...`: inventory administration and local exec.
//!
//! Commands that change what the service protects (devices, users) need the
//! admin password; listings and `info` do not read any secret and work
//! without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use super::exec_output::{ExecCollector, ExecOptions, ExecPrinter};
use super::{CliError, outln};
use crate::config::Settings;
use crate::secret::{Secret, SecretSource};
use crate::service::drivers::platform::Platform;
use crate::service::drivers::{DeviceProfile, Drivers};
use crate::service::enroll::{EnrollOptions, enroll};
use crate::service::inventory::{
    Device, DeviceScope, DriverKind, Inventory, NewDevice, NewRemoteUser, SessionKind,
};
use crate::service::ops::ServiceOps;
use crate::service::relay_agent::RelayAgent;
use crate::service::rpc::{RpcConfig, RpcServer};
use crate::wire::messages::{Request, RequestEnvelope, Response};

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The inventory database.
    #[arg(
        long,
        global = true,
        help_heading = "Inventory options",
        env = "SWITCHYARD_DB",
        value_name = "PATH"
    )]
    pub db: Option<PathBuf>,
    /// File holding the admin password (else $CREDENTIALS_DIRECTORY/admin-password, else a
    /// prompt); commands that only list (`info`, `device list`, `user list`) need none.
    #[arg(
        long,
        global = true,
        help_heading = "Inventory options",
        value_name = "FILE"
    )]
    pub admin_password_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new inventory, sealed under an admin password.
    Init,
    /// Manage devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage remote users (who may use this service).
    #[command(subcommand)]
    User(UserCommand),
    /// Show the inventory's facts, including the TLS fingerprint callers pin.
    Info {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run commands on devices right here, through the device drivers.
    Exec(ExecOptions),
    /// Run the service: the RPC socket callers (brokers) connect to, and
    /// the relay connection when enrolled.
    Run(RunArgs),
    /// Enroll with a relay, redeeming a one-time password from
    /// `switchyard enroll service-otp --serial S`.
    Enroll(EnrollArgs),
    /// Change the admin password: every sealed secret is re-sealed under
    /// the new one in one transaction (a crash leaves the old one valid).
    AdminPassword(super::service_change::AdminPasswordArgs),
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The relay's HTTPS URL.
    #[arg(long, value_name = "URL")]
    pub relay: String,
    /// File holding the one-time password (else a prompt).
    #[arg(long, value_name = "FILE")]
    pub otp_file: Option<PathBuf>,
    /// CA certificate (PEM) to trust for the relay (default: the system's).
    #[arg(long, value_name = "FILE")]
    pub relay_ca: Option<PathBuf>,
    /// Direct RPC address (HOST:PORT) to advertise to SSO callers.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// UDP address of the RPC socket (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8181")]
    pub listen: std::net::SocketAddr,
    /// TCP address of the TLS + HTTP/2 RPC listener, for callers whose
    /// network blocks UDP (their `--rpc-url https://HOST:PORT/rpc`), or
    /// `off`. Default: `--listen`'s address on port 8081 (port 0, any free
    /// port, when `--listen`'s port is 0).
    #[arg(long, value_name = "ADDR|off")]
    pub tcp_listen: Option<String>,
    /// How the relay agent reaches its relay: `auto` races QUIC against
    /// TLS/TCP (QUIC first by 0.25 s, QUIC tried again every 30 s while on
    /// TCP: `[relay_agent]` in the config file), `quic` or `tcp` pins one.
    #[arg(long, default_value = "auto", value_name = "auto|quic|tcp", value_parser = ["auto", "quic", "tcp"])]
    pub relay_transport: String,
    /// Name the service gives itself (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Write `{"rpc_addr": ..., "tcp_addr": ..., "fingerprint": ...}` here
    /// once listening.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DriverArg {
    Ssh,
    Telnet,
    Simulator,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Add a device.
    Add {
        /// The device's name, as callers will use it.
        name: String,
        /// Host name or address (not needed for the simulator driver).
        #[arg(long)]
        host: Option<String>,
        /// The device's port. Default: 22 (ssh), 23 (telnet).
        #[arg(long)]
        port: Option<u16>,
        /// How to reach the device: a real SSH connection, Telnet (plain
        /// text, for gear without SSH), or the in-process simulator.
        #[arg(long, value_enum, default_value = "ssh")]
        driver: DriverArg,
        /// IOS-XE (or IOS), IOS-XR, NX-OS, ASA, JUNOS, EOS, LINUX or GENERIC:
        /// sets the prompt, paging, enable and error conventions, and
        /// whether commands run in a shell by default (README, "Device
        /// types").
        #[arg(long, default_value = "GENERIC")]
        device_type: String,
        /// Login name on the device.
        #[arg(long)]
        username: Option<String>,
        /// File holding the device password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Prompt for the device password.
        #[arg(long, conflicts_with = "password_file")]
        ask_password: bool,
        /// OpenSSH private key file for public-key authentication.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Free-form attribute, repeatable.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Offer this device the legacy SSH algorithms (SHA-1 key exchange,
        /// CBC ciphers, hmac-sha1, ssh-rsa host keys); `=false` refuses them
        /// even when `ssh.legacy_algorithms` is on. Default: that setting.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        legacy_algorithms: Option<bool>,
        #[command(flatten)]
        shell: DeviceShellArgs,
        /// TCP ports of the device remote users may forward to (port
        /// forwarding, the SOCKS proxy), comma-separated, or `none`.
        /// Default: the device's own SSH port (`--port`); none for a
        /// simulated device.
        #[arg(long, value_name = "PORTS")]
        forward_ports: Option<String>,
        /// Reach this device through another inventory device (an ssh
        /// device): an SSH `direct-tcpip` channel on the jump host's
        /// pooled connection, like `ssh -J`. The jump device must exist.
        #[arg(long, value_name = "DEVICE")]
        jump_host: Option<String>,
    },
    /// List devices (never shows secrets).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a device.
    Remove {
        /// The device.
        name: String,
    },
    /// Forget a device's recorded SSH host key, after checking that its new
    /// key is genuine; the next connection records the new one.
    ForgetHostKey {
        /// The device.
        name: String,
    },
    /// Change a device: only the options given change.
    Set(super::service_change::DeviceSetArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a remote user.
    Add {
        /// The user's name (with --cloud, the email the relay vouches for).
        name: String,
        /// File holding the user's password (else a prompt).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Devices the user may reach: comma-separated globs.
        #[arg(long, default_value = "*", value_name = "GLOB")]
        devices: String,
        /// Create the user disabled.
        #[arg(long)]
        disabled: bool,
        /// NAME is a cloud identity (an email the relay vouches for); it
        /// has no password here.
        #[arg(long, conflicts_with = "password_file")]
        cloud: bool,
    },
    /// List remote users.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a remote user.
    Remove {
        /// The user.
        name: String,
    },
    /// Change a remote user: password, devices, enabled.
    Set(super::service_change::UserSetArgs),
}

pub async fn run(
    args: ServiceArgs,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let db = args.db.clone().ok_or_else(|| {
        CliError::Usage("no inventory given: pass --db PATH or set SWITCHYARD_DB".into())
    })?;
    let admin = || admin_password(args.admin_password_file.as_deref(), false);
    match args.command {
        ServiceCommand::Init => {
            let password = admin_password(args.admin_password_file.as_deref(), true)?;
            let inv = Inventory::init(&db, &password)?;
            let info = inv.info()?;
            outln!("initialized inventory {}", db.display());
            outln!("TLS fingerprint (SHA-256): {}", info.tls_fingerprint);
        }
        ServiceCommand::Device(cmd) => device_command(&db, cmd, admin)?,
        ServiceCommand::User(cmd) => user_command(&db, cmd, admin)?,
        ServiceCommand::Info { json } => {
            let info = Inventory::open_unsealed(&db)?.info()?;
            if json {
                print_json(&info);
            } else {
                outln!("inventory:        {}", info.path.display());
                outln!("schema version:   {}", info.schema_version);
                outln!("devices:          {}", info.devices);
                outln!("remote users:     {}", info.remote_users);
                outln!("TLS fingerprint:  {}", info.tls_fingerprint);
            }
        }
        ServiceCommand::Exec(exec) => return local_exec(&db, exec, admin()?, settings).await,
        ServiceCommand::Enroll(enroll) => enroll_service(&db, enroll, admin()?).await?,
        ServiceCommand::Run(run) => {
            return run_service(&db, run, admin()?, settings, shutdown).await;
        }
        ServiceCommand::AdminPassword(args) => {
            super::service_change::admin_password(&db, args, admin)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn admin_password(file: Option<&Path>, confirm: bool) -> Result<Secret, CliError> {
    Ok(SecretSource {
        what: "admin password",
        file_flag: "--admin-password-file",
        file,
        credential: Some("admin-password"),
        confirm,
    }
    .read()?)
}

fn print_json<T: serde::Serialize>(value: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}

pub(super) fn parse_attrs(attrs: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    attrs
        .iter()
        .map(|a| {
            a.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CliError::Usage(format!("--attr {a:?} is not KEY=VALUE")))
        })
        .collect()
}

fn device_command(
    db: &Path,
    cmd: DeviceCommand,
    admin: impl Fn() -> Result<Secret, CliError>,
) -> Result<(), CliError> {
    match cmd {
        DeviceCommand::Add {
            name,
            host,
            port,
            driver,
            device_type,
            username,
            password_file,
            ask_password,
            key_file,
            attrs,
            legacy_algorithms,
            shell,
            forward_ports,
            jump_host,
        } => {
            check_device_type(&device_type)?;
            let (session, enable_password) = shell.read()?;
            let forward_ports = forward_ports.as_deref().map(parse_ports).transpose()?;
            let driver = match driver {
                DriverArg::Ssh => DriverKind::Ssh,
                DriverArg::Telnet => DriverKind::Telnet,
                DriverArg::Simulator => DriverKind::Simulator,
            };
            let port = port.unwrap_or(match driver {
                DriverKind::Telnet => 23,
                _ => 22,
            });
            let host = match (host, driver) {
                (Some(h), _) => h,
                (None, DriverKind::Simulator) => "simulated".to_string(),
                (None, DriverKind::Ssh | DriverKind::Telnet) => {
                    return Err(CliError::Usage(format!(
                        "a {} device needs --host",
                        driver.as_str()
                    )));
                }
            };
            let password = if password_file.is_some() || ask_password {
                Some(
                    SecretSource {
                        what: "device password",
                        file_flag: "--password-file",
                        file: password_file.as_deref(),
                        credential: None,
                        confirm: false,
                    }
                    .read()?,
                )
            } else {
                None
            };
            let private_key = key_file
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .map(Secret::new)
                        .map_err(CliError::io(format!(
                            "cannot read key file {}",
                            path.display()
                        )))
                })
                .transpose()?;
            let device = NewDevice {
                name: name.clone(),
                host,
                port,
                device_type: device_type.to_ascii_uppercase(),
                driver,
                attributes: parse_attrs(&attrs)?,
                username,
                password,
                private_key,
                legacy_algorithms,
                enable_password,
                session,
            };
            let mut inventory = Inventory::open(db, &admin()?)?;
            inventory.add_device(&device)?;
            let settings = (|| {
                if let Some(ports) = forward_ports {
                    let ports = crate::service::inventory::ForwardPorts::Listed(ports);
                    inventory.set_forward_ports(&name, &ports)?;
                }
                inventory.set_jump_host(&name, jump_host.as_deref())
            })();
            if let Err(e) = settings {
                // All or nothing: a refused setting leaves no device behind.
                let _ = inventory.remove_device(&name);
                return Err(e.into());
            }
            outln!("added device {name}");
        }
        DeviceCommand::List { json } => {
            let devices = Inventory::open_unsealed(db)?.devices()?;
            if json {
                print_json(&devices);
            } else {
                outln!(
                    "{:<20} {:<24} {:>5}  {:<10} {:<10} {:<12} {:<8} {:<6} {:<16} {:<12} ATTRIBUTES",
                    "NAME",
                    "HOST",
                    "PORT",
                    "TYPE",
                    "DRIVER",
                    "USER",
                    "SESSION",
                    "ENABLE",
                    "JUMP",
                    "FORWARD"
                );
                for d in devices {
                    outln!(
                        "{:<20} {:<24} {:>5}  {:<10} {:<10} {:<12} {:<8} {:<6} {:<16} {:<12} {}",
                        d.name,
                        d.host,
                        d.port,
                        d.device_type,
                        d.driver.as_str(),
                        d.username.as_deref().unwrap_or("-"),
                        session_text(&d),
                        if d.has_enable_password { "set" } else { "-" },
                        d.jump_host.as_deref().unwrap_or("-"),
                        forward_ports_text(&d.forward_ports),
                        super::remote::attributes_text(&d.attributes)
                    );
                }
            }
        }
        DeviceCommand::Remove { name } => {
            Inventory::open(db, &admin()?)?.remove_device(&name)?;
            outln!("removed device {name}");
        }
        DeviceCommand::ForgetHostKey { name } => {
            Inventory::open(db, &admin()?)?.forget_host_key(&name)?;
            outln!("forgot the host key of {name}; the next connection records a new one");
        }
        DeviceCommand::Set(args) => super::service_change::device_set(db, args, admin)?,
    }
    Ok(())
}

fn user_command(
    db: &Path,
    cmd: UserCommand,
    admin: impl Fn() -> Result<Secret, CliError>,
) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            name,
            password_file,
            devices,
            disabled,
            cloud,
        } => {
            let mut inv = Inventory::open(db, &admin()?)?;
            let password = if cloud {
                None
            } else {
                Some(
                    SecretSource {
                        what: "user password",
                        file_flag: "--password-file",
                        file: password_file.as_deref(),
                        credential: None,
                        confirm: true,
                    }
                    .read()?,
                )
            };
            inv.add_user(&NewRemoteUser {
                name: name.clone(),
                password,
                devices: DeviceScope::parse(&devices)?,
                enabled: !disabled,
                cloud,
            })?;
            outln!("added remote user {name}");
        }
        UserCommand::List { json } => {
            let users = Inventory::open_unsealed(db)?.users()?;
            if json {
                print_json(&users);
            } else {
                outln!("{:<32} {:<8} DEVICES", "NAME", "ENABLED");
                for u in users {
                    outln!(
                        "{:<32} {:<8} {}",
                        u.name,
                        if u.enabled { "yes" } else { "no" },
                        u.devices.patterns().join(",")
                    );
                }
            }
        }
        UserCommand::Remove { name } => {
            Inventory::open(db, &admin()?)?.remove_user(&name)?;
            outln!("removed remote user {name}");
        }
        UserCommand::Set(args) => super::service_change::user_set(db, args, admin)?,
    }
    Ok(())
}

/// Runs the exec through `ServiceOps`, exactly as the RPC socket would for
/// the inventory's owner, and prints the results as they arrive.
async fn local_exec(
    db: &Path,
    args: ExecOptions,
    admin: Secret,
    settings: &Settings,
) -> Result<ExitCode, CliError> {
    let timeout = args.timeout()?;
    let ops = ServiceOps::with_limits(
        "local",
        Inventory::open(db, &admin)?,
        Drivers::new(settings.ssh.clone()),
        settings.exec.clone(),
    );
    let devices = args.distinct_devices();
    let envelope = RequestEnvelope {
        deadline_ms: None,
        request: Request::Exec {
            devices: devices.clone(),
            commands: args.commands.clone(),
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
        },
    };
    let (_input, no_input) = tokio::sync::mpsc::channel(1);
    let (out, mut events) = tokio::sync::mpsc::channel(64);
    let principal = ServiceOps::owner();
    let work = ops.handle(&principal, envelope, no_input, out);
    let mut printer = ExecPrinter::new(args.json, devices.len());
    let mut collector = ExecCollector::new(devices, args.commands.clone());
    let print = async {
        while let Some(event) = events.recv().await {
            if let Response::Error(e) = &event {
                return Err(CliError::Usage(e.message.clone()));
            }
            if let Some(report) = collector.feed(event) {
                printer.print(&report);
            }
        }
        Ok(())
    };
    let ((), printed) = tokio::join!(work, print);
    printed?;
    printer.finish();
    Ok(if printer.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_service(
    db: &Path,
    args: RunArgs,
    admin: Secret,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<ExitCode, CliError> {
    let inv = Inventory::open(db, &admin)?;
    drop(admin);
    let identity = inv.tls_identity()?;
    let enrollment = inv.relay_enrollment()?;
    let fingerprint = crate::service::identity::fingerprint(&identity.cert_der);
    let name = args.name.unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "switchyard-service".into())
    });
    let ops = ServiceOps::with_limits(
        name,
        inv,
        Drivers::new(settings.ssh.clone()),
        settings.exec.clone(),
    );
    let server = RpcServer::start(
        ops,
        identity,
        RpcConfig {
            listen: args.listen,
            tcp_listen: tcp_listen(args.tcp_listen.as_deref(), args.listen)?,
            ..Default::default()
        },
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let addr = server.local_addr();
    let agent = match enrollment {
        Some(enrollment) => {
            let serial = enrollment.serial.clone();
            let mut config = settings.relay_agent;
            config.transport.mode =
                crate::transport_policy::TransportMode::parse(&args.relay_transport)
                    .unwrap_or(crate::transport_policy::TransportMode::Auto);
            let agent = RelayAgent::start_with(
                enrollment,
                server.tunnel_acceptor(),
                Default::default(),
                config,
            )
            .map_err(|e| CliError::Usage(e.to_string()))?;
            Some((serial, agent))
        }
        None => None,
    };
    let ready = serde_json::json!({
        "rpc_addr": addr.to_string(),
        "tcp_addr": server.tcp_addr().map(|a| a.to_string()),
        "fingerprint": fingerprint,
        "serial": agent.as_ref().map(|(s, _)| s.clone()),
    });
    match &args.ready_file {
        Some(path) => crate::fsutil::write_atomically(path, format!("{ready}\n").as_bytes())
            .map_err(CliError::io(format!("cannot write {}", path.display())))?,
        None => println!("{ready}"),
    }
    crate::daemon::ready(&format!("serving on {addr}"));
    let _watchdog = crate::daemon::Watchdog::start_if_enabled();
    shutdown.cancelled().await;
    crate::daemon::stopping();
    // Offline at the relay first (it refuses new tunnels at once), then
    // the calls drain (relayed ones too), then the relay connection closes.
    let departed = match agent {
        Some((_, agent)) => Some(agent.leave().await),
        None => None,
    };
    server.shutdown(settings.broker.drain_timeout).await;
    if let Some(departed) = departed {
        departed.close().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The TCP listener's address from `--tcp-listen` (see [`RunArgs`]).
fn tcp_listen(
    flag: Option<&str>,
    quic: std::net::SocketAddr,
) -> Result<Option<std::net::SocketAddr>, CliError> {
    match flag {
        Some("off") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            CliError::Usage(format!(
                "--tcp-listen {}: expected ADDRESS:PORT or off",
                crate::label::tidy_max(text, 64)
            ))
        }),
        None => {
            let port = if quic.port() == 0 {
                0
            } else {
                crate::wire::tcp::DEFAULT_PORT
            };
            Ok(Some(std::net::SocketAddr::new(quic.ip(), port)))
        }
    }
}

async fn enroll_service(db: &Path, args: EnrollArgs, admin: Secret) -> Result<(), CliError> {
    let mut inv = Inventory::open(db, &admin)?;
    drop(admin);
    let otp = SecretSource {
        what: "one-time password",
        file_flag: "--otp-file",
        file: args.otp_file.as_deref(),
        credential: None,
        confirm: false,
    }
    .read()?;
    let roots = crate::tls::root_store(args.relay_ca.as_deref())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let serial = enroll(
        &mut inv,
        EnrollOptions {
            relay_url: args.relay,
            otp,
            roots,
            advertise: args.advertise,
        },
    )
    .await
    .map_err(|e| CliError::Usage(e.to_string()))?;
    outln!("enrolled as serial {serial}; `switchyard service run` now also connects to the relay");
    Ok(())
}

/// How a device's commands run and how it reaches privileged mode: the
/// flags `device add` takes (and `device set` can reuse).
#[derive(Debug, Args)]
pub struct DeviceShellArgs {
    /// Where commands run: `exec` (one SSH exec channel each) or `shell` (a
    /// warm interactive shell, prompt-delimited: for devices that refuse
    /// exec requests). Default: the device type's.
    #[arg(long, value_enum, value_name = "KIND")]
    pub session: Option<SessionArg>,
    /// File holding the enable secret (privileged mode; sent in a shell
    /// when the device logs in unprivileged).
    #[arg(long, value_name = "FILE")]
    pub enable_password_file: Option<PathBuf>,
    /// Prompt for the enable secret.
    #[arg(long, conflicts_with = "enable_password_file")]
    pub ask_enable_password: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SessionArg {
    Exec,
    Shell,
}

impl DeviceShellArgs {
    /// The session choice and the enable secret (read from its file or a
    /// prompt), if given.
    pub fn read(&self) -> Result<(Option<SessionKind>, Option<Secret>), CliError> {
        let session = self.session.map(|s| match s {
            SessionArg::Exec => SessionKind::Exec,
            SessionArg::Shell => SessionKind::Shell,
        });
        let enable = if self.enable_password_file.is_some() || self.ask_enable_password {
            Some(
                SecretSource {
                    what: "enable secret",
                    file_flag: "--enable-password-file",
                    file: self.enable_password_file.as_deref(),
                    credential: None,
                    confirm: false,
                }
                .read()?,
            )
        } else {
            None
        };
        Ok((session, enable))
    }
}

/// Where a listed device's commands run, as the drivers will decide:
/// its own setting, else its type's default; Telnet devices always use a
/// shell; simulated devices neither (`-`).
fn session_text(d: &Device) -> &'static str {
    match d.driver {
        DriverKind::Simulator => "-",
        DriverKind::Telnet => SessionKind::Shell.as_str(),
        DriverKind::Ssh => DeviceProfile::new(&d.device_type, d.session)
            .session
            .as_str(),
    }
}

/// Refuses a device type the platform table does not know, listing those
/// it does.
fn check_device_type(device_type: &str) -> Result<(), CliError> {
    match Platform::parse(device_type) {
        Some(_) => Ok(()),
        None => Err(CliError::Usage(format!(
            "unknown device type {device_type:?}: use one of {}",
            Platform::documented_list()
        ))),
    }
}

/// `--forward-ports`: `none`, or port numbers separated by commas.
pub(super) fn parse_ports(text: &str) -> Result<Vec<u16>, CliError> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(CliError::Usage(format!(
                "--forward-ports: {p:?} is not a port (1-65535); give ports separated by \
                 commas, or `none`"
            ))),
        })
        .collect()
}

/// A device's forward ports for `device list`: `22,8080`, or `-` for none.
fn forward_ports_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "-".into();
    }
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
