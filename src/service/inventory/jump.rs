//! Jump hosts: a device reached through another inventory device over SSH
//! `direct-tcpip` (RFC 4254 §7.2), the device's `jump_host` setting
//! (schema migration 6).
//!
//! **Invariant:** a stored `jump_host` names an existing `ssh`-driver
//! device, the device that has it is an `ssh` device too, and following
//! `jump_host` from any device ends (no cycles) within [`MAX_JUMPS`] hops.
//! [`Inventory::set_jump_host`] checks all of it when the setting is
//! written; removing a jump device or giving it another driver is refused
//! while devices are reached through it.

use rusqlite::{OptionalExtension, params};

use super::{DriverKind, Inventory, InventoryError};

/// The longest chain of jump hosts (device → jump → jump ...) allowed.
pub const MAX_JUMPS: usize = 8;

impl Inventory {
    /// Sets (`Some`) or clears (`None`) the jump host of device `name`:
    /// the inventory device it is reached through. Refused (nothing
    /// changes) unless the jump device exists and uses the `ssh` driver,
    /// `name` uses `ssh` too, and the chain of jump hosts stays acyclic
    /// and at most [`MAX_JUMPS`] long.
    pub fn set_jump_host(&mut self, name: &str, jump: Option<&str>) -> Result<(), InventoryError> {
        let device = self.device(name)?;
        if let Some(jump) = jump {
            if device.driver != DriverKind::Ssh {
                return Err(InventoryError::Invalid(format!(
                    "{name} uses the {} driver; only ssh devices can be reached through a jump \
                     host",
                    device.driver.as_str()
                )));
            }
            let jump_device = self.device(jump).map_err(|e| match e {
                InventoryError::UnknownDevice(_) => InventoryError::Invalid(format!(
                    "jump host {jump:?} is not a device in the inventory; add it first"
                )),
                other => other,
            })?;
            if jump_device.driver != DriverKind::Ssh {
                return Err(InventoryError::Invalid(format!(
                    "jump host {jump} uses the {} driver; a jump host must be an ssh device",
                    jump_device.driver.as_str()
                )));
            }
            if jump == name {
                return Err(InventoryError::Invalid(format!(
                    "jump host {jump} for {name} would make a cycle: {name} -> {jump}"
                )));
            }
            // Walk the chain from the jump: it must neither come back to
            // `name` nor grow beyond the bound.
            let mut chain = vec![name.to_string(), jump.to_string()];
            let mut next = jump_device.jump_host;
            while let Some(hop) = next {
                if chain.contains(&hop) {
                    chain.push(hop);
                    return Err(InventoryError::Invalid(format!(
                        "jump host {jump} for {name} would make a cycle: {}",
                        chain.join(" -> ")
                    )));
                }
                chain.push(hop.clone());
                if chain.len() > MAX_JUMPS + 1 {
                    return Err(InventoryError::Invalid(format!(
                        "jump host {jump} for {name} makes a chain of more than {MAX_JUMPS} \
                         jump hosts: {}",
                        chain.join(" -> ")
                    )));
                }
                next = self.jump_host_of(&hop)?;
            }
        }
        self.conn.execute(
            "UPDATE devices SET jump_host = ?2 WHERE name = ?1",
            params![name, jump],
        )?;
        Ok(())
    }

    /// The jump host stored for `name` (`None`: reached directly).
    fn jump_host_of(&self, name: &str) -> Result<Option<String>, InventoryError> {
        self.conn
            .query_row(
                "SELECT jump_host FROM devices WHERE name = ?1",
                [name],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .ok_or_else(|| InventoryError::UnknownDevice(name.to_string()))
    }

    /// Refuses to `action` (remove, change the driver of) a device that
    /// other devices are reached through.
    pub(super) fn check_not_a_jump_host(
        &self,
        name: &str,
        action: &str,
    ) -> Result<(), InventoryError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM devices WHERE jump_host = ?1 ORDER BY name")?;
        let users = stmt
            .query_map([name], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        if users.is_empty() {
            Ok(())
        } else {
            Err(InventoryError::Invalid(format!(
                "cannot {action} {name}: it is the jump host of {}; clear that first \
                 (`switchyard service device set DEVICE --jump-host none`)",
                users.join(", ")
            )))
        }
    }

    /// Refuses a non-ssh driver for a device that has a jump host.
    pub(super) fn check_no_jump_host(
        &self,
        name: &str,
        driver: DriverKind,
    ) -> Result<(), InventoryError> {
        match self.jump_host_of(name)? {
            Some(jump) => Err(InventoryError::Invalid(format!(
                "{name} is reached through the jump host {jump}, which needs the ssh driver, not \
                 {}; clear it first (`--jump-host none`)",
                driver.as_str()
            ))),
            None => Ok(()),
        }
    }
}
