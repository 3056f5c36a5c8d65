//! Changing what `service init/device add/user add` created: `service
//! device set`, `service user set`, `service admin-password`.
//!
//! `device set` reads the device's whole record, changes the fields given
//! and writes the record back (`Inventory::device_record` /
//! `replace_device`), so fields the record gains later are kept as they are.

use std::path::{Path, PathBuf};

use clap::Args;

use super::service_admin::{parse_attrs, parse_ports};
use super::{CliError, outln};
use crate::secret::{Secret, SecretSource};
use crate::service::inventory::{DeviceScope, ForwardPorts, Inventory, UserChanges};

/// `service device set NAME ...`: only the options given change.
#[derive(Debug, Args)]
pub struct DeviceSetArgs {
    /// The device.
    pub name: String,
    /// New host name or address (forgets the recorded SSH host key).
    #[arg(long)]
    pub host: Option<String>,
    /// New SSH port (forgets the recorded SSH host key).
    #[arg(long)]
    pub port: Option<u16>,
    /// New device type (IOS, IOS-XE, NX-OS, LINUX, ...).
    #[arg(long)]
    pub device_type: Option<String>,
    /// New login name on the device.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the new device password.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ask_password", "no_password"])]
    pub password_file: Option<PathBuf>,
    /// Prompt for the new device password.
    #[arg(long, conflicts_with = "no_password")]
    pub ask_password: bool,
    /// Remove the stored device password.
    #[arg(long)]
    pub no_password: bool,
    /// New OpenSSH private key file.
    #[arg(long, value_name = "FILE", conflicts_with = "no_key")]
    pub key_file: Option<PathBuf>,
    /// Remove the stored private key.
    #[arg(long)]
    pub no_key: bool,
    /// Set an attribute (added or replaced), repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE")]
    pub attrs: Vec<String>,
    /// Remove an attribute, repeatable.
    #[arg(long = "remove-attr", value_name = "KEY")]
    pub remove_attrs: Vec<String>,
    /// Offer (`true`) or refuse (`false`) legacy SSH algorithms;
    /// `default` follows `ssh.legacy_algorithms` again.
    #[arg(long, value_name = "true|false|default")]
    pub legacy_algorithms: Option<String>,
    /// TCP ports remote users may forward to (port forwarding, the SOCKS5
    /// proxy), comma-separated (replaces the list); `none` for no port;
    /// `default` for the device's own SSH port again.
    #[arg(long, value_name = "PORTS|none|default")]
    pub forward_ports: Option<String>,
    /// Reach the device through another inventory device (an ssh device,
    /// SSH `direct-tcpip`); `none` to reach it directly again.
    #[arg(long, value_name = "DEVICE|none")]
    pub jump_host: Option<String>,
}

/// `service user set NAME ...`: only the options given change.
#[derive(Debug, Args)]
pub struct UserSetArgs {
    /// The remote user.
    pub name: String,
    /// File holding the new password.
    #[arg(long, value_name = "FILE", conflicts_with = "ask_password")]
    pub password_file: Option<PathBuf>,
    /// Prompt for the new password (twice).
    #[arg(long)]
    pub ask_password: bool,
    /// Devices the user may reach: comma-separated globs (replaces the list).
    #[arg(long, value_name = "GLOB")]
    pub devices: Option<String>,
    /// Let the user log in again.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Refuse the user's logins (the record stays).
    #[arg(long)]
    pub disable: bool,
}

/// `service admin-password`: re-seals every secret under a new password.
#[derive(Debug, Args)]
pub struct AdminPasswordArgs {
    /// File holding the new admin password (else a prompt, twice).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
}

fn secret(
    what: &'static str,
    flag: &'static str,
    file: Option<&Path>,
    confirm: bool,
) -> Result<Secret, CliError> {
    Ok(SecretSource {
        what,
        file_flag: flag,
        file,
        credential: None,
        confirm,
    }
    .read()?)
}

/// Runs `service device set`.
pub fn device_set(
    db: &Path,
    args: DeviceSetArgs,
    admin: impl Fn() -> Result<Secret, CliError>,
) -> Result<(), CliError> {
    let legacy = match args.legacy_algorithms.as_deref() {
        None => None,
        Some("true") => Some(Some(true)),
        Some("false") => Some(Some(false)),
        Some("default") => Some(None),
        Some(other) => {
            return Err(CliError::Usage(format!(
                "--legacy-algorithms {other:?}: use true, false or default"
            )));
        }
    };
    let password = if args.password_file.is_some() || args.ask_password {
        Some(secret(
            "device password",
            "--password-file",
            args.password_file.as_deref(),
            false,
        )?)
    } else {
        None
    };
    let private_key = args
        .key_file
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .map(Secret::new)
                .map_err(CliError::io(format!(
                    "cannot read key file {}",
                    path.display()
                )))
        })
        .transpose()?;
    let attrs = parse_attrs(&args.attrs)?;
    let forward_ports = match args.forward_ports.as_deref().map(str::trim) {
        None => None,
        Some("default") => Some(ForwardPorts::Default),
        Some(list) => Some(ForwardPorts::Listed(parse_ports(list)?)),
    };
    let mut inv = Inventory::open(db, &admin()?)?;
    let mut record = inv.device_record(&args.name)?;
    if let Some(host) = args.host {
        record.host = host;
    }
    if let Some(port) = args.port {
        record.port = port;
    }
    if let Some(t) = args.device_type {
        record.device_type = t.to_ascii_uppercase();
    }
    if let Some(u) = args.username {
        record.username = Some(u);
    }
    if password.is_some() || args.no_password {
        record.password = password;
    }
    if private_key.is_some() || args.no_key {
        record.private_key = private_key;
    }
    for key in &args.remove_attrs {
        record.attributes.remove(key);
    }
    record.attributes.extend(attrs);
    if let Some(legacy) = legacy {
        record.legacy_algorithms = legacy;
    }
    // The jump host first: a refused one changes nothing.
    if let Some(jump) = args.jump_host.as_deref().map(str::trim) {
        let jump = Some(jump).filter(|j| *j != "none");
        inv.set_jump_host(&args.name, jump)?;
    }
    inv.replace_device(&record)?;
    if let Some(ports) = forward_ports {
        inv.set_forward_ports(&args.name, &ports)?;
    }
    outln!("changed device {}", args.name);
    Ok(())
}

/// Runs `service user set`.
pub fn user_set(
    db: &Path,
    args: UserSetArgs,
    admin: impl Fn() -> Result<Secret, CliError>,
) -> Result<(), CliError> {
    let mut inv = Inventory::open(db, &admin()?)?;
    let password = if args.password_file.is_some() || args.ask_password {
        Some(secret(
            "user password",
            "--password-file",
            args.password_file.as_deref(),
            true,
        )?)
    } else {
        None
    };
    let changes = UserChanges {
        password,
        devices: args
            .devices
            .as_deref()
            .map(DeviceScope::parse)
            .transpose()?,
        enabled: match (args.enable, args.disable) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
    };
    inv.update_user(&args.name, &changes)?;
    outln!("changed remote user {}", args.name);
    Ok(())
}

/// Runs `service admin-password`.
pub fn admin_password(
    db: &Path,
    args: AdminPasswordArgs,
    admin: impl Fn() -> Result<Secret, CliError>,
) -> Result<(), CliError> {
    let mut inv = Inventory::open(db, &admin()?)?;
    let new = secret(
        "new admin password",
        "--new-password-file",
        args.new_password_file.as_deref(),
        true,
    )?;
    inv.change_admin_password(&new)?;
    outln!(
        "changed the admin password of {}; every secret is sealed under the new one \
         (update --admin-password-file / the admin-password credential of `service run`)",
        db.display()
    );
    Ok(())
}
