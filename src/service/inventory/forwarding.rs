//! Which TCP ports of a device remote users may forward to (the device's
//! `forward_ports` setting, schema migration 5).
//!
//! **Default (setting unset):** the device's own port (the `port` it is
//! reached on, its SSH port) for an `ssh`-driver device, and nothing for a
//! `simulator` device, which has no network ports. A remote user allowed a
//! device may already run any command on it with the service's stored
//! credentials, so reaching its SSH port (which still asks for a login)
//! gives nothing more; any other port (a web UI, NETCONF, gNMI) must be
//! listed by the service's administrator (`switchyard service device add
//! --forward-ports 22,443`, or [`Inventory::set_forward_ports`]). A listed
//! set replaces the default; an empty list forbids forwarding.

use rusqlite::{OptionalExtension, params};

use super::{DriverKind, Inventory, InventoryError};

/// A device's `forward_ports` setting as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardPorts {
    /// Unset: the default (the device's own port for `ssh` devices).
    Default,
    /// These ports and no others (empty: none).
    Listed(Vec<u16>),
}

/// What a forward to a device needs: where it is and what may be reached.
#[derive(Debug, Clone)]
pub struct ForwardTarget {
    pub name: String,
    pub host: String,
    pub driver: DriverKind,
    /// The ports that may be forwarded, in effect (default applied).
    pub allowed: Vec<u16>,
    /// Whether `allowed` comes from an explicit `forward_ports` setting.
    pub explicit: bool,
    /// The device's `jump_host` (`inventory::jump`): a forward to it is a
    /// `direct-tcpip` channel on that device's SSH connection.
    pub jump_host: Option<String>,
}

impl ForwardTarget {
    /// Whether `port` may be forwarded to.
    pub fn allows(&self, port: u16) -> bool {
        self.allowed.contains(&port)
    }
}

impl Inventory {
    /// Sets a device's `forward_ports` (`ForwardPorts::Default` clears it).
    /// Port 0 is refused.
    pub fn set_forward_ports(
        &mut self,
        name: &str,
        ports: &ForwardPorts,
    ) -> Result<(), InventoryError> {
        let stored = match ports {
            ForwardPorts::Default => None,
            ForwardPorts::Listed(list) => {
                if list.contains(&0) {
                    return Err(InventoryError::Invalid(
                        "port 0 cannot be forwarded to".into(),
                    ));
                }
                let mut list = list.clone();
                list.sort_unstable();
                list.dedup();
                Some(
                    serde_json::to_string(&list)
                        .map_err(|e| InventoryError::Invalid(e.to_string()))?,
                )
            }
        };
        let n = self.conn.execute(
            "UPDATE devices SET forward_ports = ?2 WHERE name = ?1",
            params![name, stored],
        )?;
        match n {
            0 => Err(InventoryError::UnknownDevice(name.to_string())),
            _ => Ok(()),
        }
    }

    /// A device's `forward_ports` setting as stored.
    pub fn forward_ports(&self, name: &str) -> Result<ForwardPorts, InventoryError> {
        Ok(self.forward_row(name)?.ports)
    }

    /// A device as a forward needs it, with its default applied. Needs no
    /// secret.
    pub fn forward_target(&self, name: &str) -> Result<ForwardTarget, InventoryError> {
        let ForwardRow {
            host,
            port,
            driver,
            ports,
            jump_host,
        } = self.forward_row(name)?;
        let (allowed, explicit) = match ports {
            ForwardPorts::Listed(list) => (list, true),
            ForwardPorts::Default if driver == DriverKind::Ssh => (vec![port], false),
            ForwardPorts::Default => (Vec::new(), false),
        };
        Ok(ForwardTarget {
            name: name.to_string(),
            host,
            driver,
            allowed,
            explicit,
            jump_host,
        })
    }

    fn forward_row(&self, name: &str) -> Result<ForwardRow, InventoryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT host, port, driver, forward_ports, jump_host FROM devices WHERE name = ?1",
        )?;
        type Row = (String, i64, String, Option<String>, Option<String>);
        let row: Option<Row> = stmt
            .query_row([name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let (host, port, driver, ports, jump_host) =
            row.ok_or_else(|| InventoryError::UnknownDevice(name.to_string()))?;
        let port = u16::try_from(port)
            .map_err(|_| InventoryError::Corrupt(format!("port {port} out of range")))?;
        let ports = match ports {
            None => ForwardPorts::Default,
            Some(text) => ForwardPorts::Listed(
                serde_json::from_str(&text)
                    .map_err(|e| InventoryError::Corrupt(format!("forward_ports: {e}")))?,
            ),
        };
        Ok(ForwardRow {
            host,
            port,
            driver: driver.parse()?,
            ports,
            jump_host,
        })
    }
}

/// A device's row as forwards read it (setting as stored).
struct ForwardRow {
    host: String,
    port: u16,
    driver: DriverKind,
    ports: ForwardPorts,
    jump_host: Option<String>,
}
