//! Device records: where a device is, how to reach it, and its sealed
//! credentials.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Inventory, InventoryError, now_secs};
use crate::secret::Secret;

/// How the service talks to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// A real SSH client; works for real devices and `switchyard sim` ones.
    Ssh,
    /// Telnet (RFC 854), for devices that offer nothing else: login at the
    /// device's prompts, commands in a warm shell.
    Telnet,
    /// The simulated network-OS CLI run in-process, with no network at all.
    Simulator,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ssh => "ssh",
            Self::Telnet => "telnet",
            Self::Simulator => "simulator",
        }
    }
}

impl std::str::FromStr for DriverKind {
    type Err = InventoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ssh" => Ok(Self::Ssh),
            "telnet" => Ok(Self::Telnet),
            "simulator" => Ok(Self::Simulator),
            other => Err(InventoryError::Invalid(format!(
                "unknown driver {other:?}: use \"ssh\", \"telnet\" or \"simulator\""
            ))),
        }
    }
}

/// Where a device runs commands: one exec channel per command (the device
/// reports an exit status), or one line at a time in a warm interactive
/// shell whose prompt marks the end of each command (devices that refuse
/// exec requests; see `drivers::shell_session`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    #[default]
    Exec,
    Shell,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Shell => "shell",
        }
    }
}

impl std::str::FromStr for SessionKind {
    type Err = InventoryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exec" => Ok(Self::Exec),
            "shell" => Ok(Self::Shell),
            other => Err(InventoryError::Invalid(format!(
                "unknown session {other:?}: use \"exec\" or \"shell\""
            ))),
        }
    }
}

impl rusqlite::types::FromSql for SessionKind {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e: InventoryError| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

/// A device as listed: everything but its secrets.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub device_type: String,
    pub driver: DriverKind,
    pub attributes: BTreeMap<String, String>,
    pub username: Option<String>,
    pub has_password: bool,
    pub has_private_key: bool,
    /// The SSH host key recorded at first contact (OpenSSH format).
    pub host_key: Option<String>,
    /// Whether the device is offered legacy SSH algorithms; `None` follows
    /// the service's `ssh.legacy_algorithms`.
    pub legacy_algorithms: Option<bool>,
    /// Whether an enable secret is stored.
    pub has_enable_password: bool,
    /// Where commands run; `None` follows the device type's default.
    pub session: Option<SessionKind>,
    /// The inventory device this one is reached through (SSH
    /// `direct-tcpip`); `None`: reached directly. Set with
    /// [`Inventory::set_jump_host`].
    pub jump_host: Option<String>,
    /// The TCP ports remote users may forward to, in effect: the
    /// `forward_ports` setting, or its default when unset (the device's
    /// own port for `ssh`, none for `simulator`; see
    /// [`Inventory::forward_target`]).
    pub forward_ports: Vec<u16>,
}

/// A device to add.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub device_type: String,
    pub driver: DriverKind,
    pub attributes: BTreeMap<String, String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// An OpenSSH private key (PEM text).
    pub private_key: Option<Secret>,
    /// Offer legacy SSH algorithms (`None`: the service default).
    pub legacy_algorithms: Option<bool>,
    /// The secret `enable` asks for (privileged mode), sealed like the
    /// password.
    pub enable_password: Option<Secret>,
    /// Exec channels or a shell (`None`: the device type's default).
    pub session: Option<SessionKind>,
}

/// A device's unsealed credentials, wiped from memory on drop.
#[derive(Debug, Clone, Default)]
pub struct DeviceCredentials {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub private_key: Option<Secret>,
    /// The enable secret, for devices that log in unprivileged.
    pub enable_password: Option<Secret>,
}

/// A device's sealed password, private key and enable secret.
type SealedSecrets = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

pub(super) fn password_context(name: &str) -> String {
    format!("device:{name}:password")
}

pub(super) fn private_key_context(name: &str) -> String {
    format!("device:{name}:private_key")
}

pub(super) fn enable_password_context(name: &str) -> String {
    format!("device:{name}:enable_password")
}

/// Device names appear in commands, logs and globs: keep them plain.
fn validate_name(name: &str) -> Result<(), InventoryError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(InventoryError::Invalid(format!(
            "invalid device name {name:?}: use 1-128 letters, digits, '-', '_', '.', ':' or '/'"
        )))
    }
}

/// A statement meant for one device row changed `n` rows.
fn one_device(n: usize, name: &str) -> Result<(), InventoryError> {
    match n {
        0 => Err(InventoryError::UnknownDevice(name.to_string())),
        _ => Ok(()),
    }
}

const DEVICE_COLUMNS: &str = "name, host, port, device_type, driver, attributes, username, \
     password_sealed IS NOT NULL, private_key_sealed IS NOT NULL, host_key, legacy_algorithms, \
     enable_password_sealed IS NOT NULL, session, jump_host, forward_ports";

fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Device, InventoryError>> {
    let driver: String = row.get(4)?;
    let attributes: String = row.get(5)?;
    let port: i64 = row.get(2)?;
    let forward_ports: Option<String> = row.get(14)?;
    Ok((|| {
        let driver: DriverKind = driver.parse()?;
        let port = u16::try_from(port)
            .map_err(|_| InventoryError::Corrupt(format!("port {port} out of range")))?;
        let forward_ports = match forward_ports {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| InventoryError::Corrupt(format!("forward_ports: {e}")))?,
            None if driver == DriverKind::Ssh => vec![port],
            None => Vec::new(),
        };
        Ok(Device {
            name: row.get(0)?,
            host: row.get(1)?,
            port,
            device_type: row.get(3)?,
            driver,
            attributes: serde_json::from_str(&attributes)
                .map_err(|e| InventoryError::Corrupt(format!("attributes: {e}")))?,
            username: row.get(6)?,
            has_password: row.get(7)?,
            has_private_key: row.get(8)?,
            host_key: row.get(9)?,
            legacy_algorithms: row.get(10)?,
            has_enable_password: row.get(11)?,
            session: row.get(12)?,
            jump_host: row.get(13)?,
            forward_ports,
        })
    })())
}

impl Inventory {
    /// Adds a device; its secrets are sealed before they reach the file.
    pub fn add_device(&mut self, device: &NewDevice) -> Result<(), InventoryError> {
        validate_name(&device.name)?;
        if device.host.trim().is_empty() {
            return Err(InventoryError::Invalid("a device needs a host".into()));
        }
        if device.port == 0 {
            return Err(InventoryError::Invalid(
                "port 0 is not a device port".into(),
            ));
        }
        let (password, private_key, enable_password) = self.seal_device_secrets(device)?;
        let attributes = serde_json::to_string(&device.attributes)
            .map_err(|e| InventoryError::Invalid(format!("attributes: {e}")))?;
        let result = self.conn.execute(
            "INSERT INTO devices (name, host, port, device_type, driver, attributes, username, \
             password_sealed, private_key_sealed, legacy_algorithms, created_at, \
             enable_password_sealed, session) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                device.name,
                device.host,
                device.port,
                device.device_type,
                device.driver.as_str(),
                attributes,
                device.username,
                password,
                private_key,
                device.legacy_algorithms,
                now_secs() as i64,
                enable_password,
                device.session.map(SessionKind::as_str),
            ],
        );
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(InventoryError::DuplicateDevice(device.name.clone()))
            }
            other => other.map(drop).map_err(Into::into),
        }
    }

    /// Removes a device (refused while another device is reached through
    /// it: see [`Inventory::set_jump_host`]).
    pub fn remove_device(&mut self, name: &str) -> Result<(), InventoryError> {
        self.check_not_a_jump_host(name, "remove")?;
        let n = self
            .conn
            .execute("DELETE FROM devices WHERE name = ?1", [name])?;
        one_device(n, name)
    }

    /// Every device, by name.
    pub fn devices(&self) -> Result<Vec<Device>, InventoryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY name"
        ))?;
        let rows = stmt.query_map([], device_from_row)?;
        rows.map(|r| r?).collect()
    }

    /// One device.
    pub fn device(&self, name: &str) -> Result<Device, InventoryError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE name = ?1"
        ))?;
        stmt.query_row([name], device_from_row)
            .optional()?
            .ok_or_else(|| InventoryError::UnknownDevice(name.to_string()))?
    }

    /// A device's credentials, unsealed. Needs the admin password.
    pub fn device_credentials(&self, name: &str) -> Result<DeviceCredentials, InventoryError> {
        self.device_with_credentials(name)
            .map(|(_, credentials)| credentials)
    }

    /// A device and its unsealed credentials, read in one statement (an
    /// exec needs both, and this runs on every one). Needs the admin
    /// password.
    pub fn device_with_credentials(
        &self,
        name: &str,
    ) -> Result<(Device, DeviceCredentials), InventoryError> {
        let key = self.key()?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS}, password_sealed, private_key_sealed, \
             enable_password_sealed FROM devices WHERE name = ?1"
        ))?;
        let row = stmt
            .query_row([name], |r| {
                // By name: the same words inside DEVICE_COLUMNS are
                // `… IS NOT NULL` expressions, named differently.
                type Sealed = Option<Vec<u8>>;
                let sealed: (Sealed, Sealed, Sealed) = (
                    r.get("password_sealed")?,
                    r.get("private_key_sealed")?,
                    r.get("enable_password_sealed")?,
                );
                Ok((device_from_row(r)?, sealed))
            })
            .optional()?;
        let (device, (password, private_key, enable_password)) =
            row.ok_or_else(|| InventoryError::UnknownDevice(name.to_string()))?;
        let device = device?;
        let unseal = |context: String, sealed: Option<Vec<u8>>| {
            sealed
                .map(|s| -> Result<Secret, InventoryError> {
                    let plain = key.open(&context, &s)?;
                    let text = std::str::from_utf8(&plain)
                        .map_err(|_| InventoryError::Corrupt("secret is not UTF-8".into()))?;
                    Ok(Secret::new(text))
                })
                .transpose()
        };
        let credentials = DeviceCredentials {
            username: device.username.clone(),
            password: unseal(password_context(name), password)?,
            private_key: unseal(private_key_context(name), private_key)?,
            enable_password: unseal(enable_password_context(name), enable_password)?,
        };
        Ok((device, credentials))
    }

    /// Records the SSH host key first seen for a device (trust on first use).
    pub fn record_host_key(&mut self, name: &str, host_key: &str) -> Result<(), InventoryError> {
        let n = self.conn.execute(
            "UPDATE devices SET host_key = ?2 WHERE name = ?1",
            params![name, host_key],
        )?;
        one_device(n, name)
    }

    /// Forgets a device's recorded host key, after an operator has checked
    /// that the device really changed it.
    pub fn forget_host_key(&mut self, name: &str) -> Result<(), InventoryError> {
        let n = self
            .conn
            .execute("UPDATE devices SET host_key = NULL WHERE name = ?1", [name])?;
        one_device(n, name)
    }
}

/// Changing a device after creation: read its whole record, change fields,
/// write the whole record back. A field added to [`NewDevice`] later comes
/// along by being read and written here (next to `add_device`).
impl Inventory {
    /// A device's whole record, secrets unsealed: what `add_device` took.
    /// Needs the admin password.
    pub fn device_record(&self, name: &str) -> Result<NewDevice, InventoryError> {
        let (device, credentials) = self.device_with_credentials(name)?;
        Ok(NewDevice {
            name: device.name,
            host: device.host,
            port: device.port,
            device_type: device.device_type,
            driver: device.driver,
            attributes: device.attributes,
            username: credentials.username,
            password: credentials.password,
            private_key: credentials.private_key,
            legacy_algorithms: device.legacy_algorithms,
            enable_password: credentials.enable_password,
            session: device.session,
        })
    }

    /// A device's secrets sealed for storage (password, private key,
    /// enable secret), each under its own associated data.
    fn seal_device_secrets(&self, device: &NewDevice) -> Result<SealedSecrets, InventoryError> {
        let key = self.key()?;
        let seal = |context: String, secret: &Option<Secret>| {
            secret
                .as_ref()
                .map(|p| key.seal(&context, p.expose().as_bytes()))
                .transpose()
        };
        Ok((
            seal(password_context(&device.name), &device.password)?,
            seal(private_key_context(&device.name), &device.private_key)?,
            seal(
                enable_password_context(&device.name),
                &device.enable_password,
            )?,
        ))
    }

    /// Replaces the record of the device `device.name` (the same checks as
    /// `add_device`; secrets sealed again). A changed host or port forgets
    /// the recorded SSH host key: it belonged to the old address.
    pub fn replace_device(&mut self, device: &NewDevice) -> Result<(), InventoryError> {
        if device.host.trim().is_empty() {
            return Err(InventoryError::Invalid("a device needs a host".into()));
        }
        if device.port == 0 {
            return Err(InventoryError::Invalid(
                "port 0 is not a device port".into(),
            ));
        }
        if device.driver != DriverKind::Ssh {
            self.check_not_a_jump_host(&device.name, "change the driver of")?;
            self.check_no_jump_host(&device.name, device.driver)?;
        }
        let (password, private_key, enable_password) = self.seal_device_secrets(device)?;
        let attributes = serde_json::to_string(&device.attributes)
            .map_err(|e| InventoryError::Invalid(format!("attributes: {e}")))?;
        let n = self.conn.execute(
            "UPDATE devices SET \
             host_key = CASE WHEN host = ?2 AND port = ?3 THEN host_key ELSE NULL END, \
             host = ?2, port = ?3, device_type = ?4, driver = ?5, attributes = ?6, \
             username = ?7, password_sealed = ?8, private_key_sealed = ?9, \
             legacy_algorithms = ?10, enable_password_sealed = ?11, session = ?12 \
             WHERE name = ?1",
            params![
                device.name,
                device.host,
                device.port,
                device.device_type,
                device.driver.as_str(),
                attributes,
                device.username,
                password,
                private_key,
                device.legacy_algorithms,
                enable_password,
                device.session.map(SessionKind::as_str),
            ],
        )?;
        one_device(n, &device.name)
    }
}
