//! Changing the admin password: every sealed secret is opened with the old
//! key and sealed with one derived from the new password (new salt, same
//! KDF cost), in **one** SQLite transaction with the new salt and password
//! check. SQLite commits it atomically (WAL), so a process that dies at
//! any point before the commit leaves the inventory exactly as it was,
//! still opened by the old password; after the commit only the new one
//! opens it.
//!
//! Sealed today: the meta entries `seal_check`, `tls_key`, `relay_key`
//! (when enrolled) and each device's `password_sealed`,
//! `private_key_sealed` and `enable_password_sealed`. **Invariant:** anything sealed later must be
//! added here (a unit test re-keys an inventory holding every kind and
//! opens each one with the new key).

use rusqlite::{OptionalExtension, params};

use super::relay::RELAY_KEY_CONTEXT;
use super::{CHECK_CONTEXT, Inventory, InventoryError, TLS_KEY_CONTEXT};
use crate::secret::Secret;
use crate::service::seal::{KdfParams, SealKey, new_salt};

/// Sealed meta entries and their associated data.
const SEALED_META: [(&str, &str); 3] = [
    ("seal_check", CHECK_CONTEXT),
    ("tls_key", TLS_KEY_CONTEXT),
    ("relay_key", RELAY_KEY_CONTEXT),
];

/// A device's name and its sealed password, private key and enable secret.
type SealedDevice = (String, Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Test-only (debug builds): when this variable is set, the process
/// aborts half-way through re-sealing, after the meta entries and before
/// the devices, with the transaction open — what a crash or `SIGKILL`
/// there leaves behind.
pub const ABORT_MIDWAY_ENV: &str = "SWITCHYARD_TEST_ABORT_REKEY_MIDWAY";

impl Inventory {
    /// Changes the admin password (the inventory must be open with the
    /// current one). Errors: `Locked` (opened without it), `Invalid` (an
    /// empty password), `Seal`/`Corrupt` for a secret that does not open,
    /// `Sqlite`; on any error nothing changed.
    pub fn change_admin_password(&mut self, new_password: &Secret) -> Result<(), InventoryError> {
        if new_password.is_empty() {
            return Err(InventoryError::Invalid(
                "the admin password must not be empty".into(),
            ));
        }
        let kdf: KdfParams = serde_json::from_slice(&self.meta("kdf_params")?)
            .map_err(|e| InventoryError::Corrupt(format!("kdf params: {e}")))?;
        let salt = new_salt();
        let new_key = SealKey::derive(new_password, &salt, kdf)?;
        let Self { conn, key, .. } = self;
        let old_key = key.as_ref().ok_or(InventoryError::Locked)?;
        let tx = conn.transaction()?;
        for (name, context) in SEALED_META {
            let sealed: Option<Vec<u8>> = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(sealed) = sealed {
                let plain = old_key.open(context, &sealed)?;
                tx.execute(
                    "UPDATE meta SET value = ?2 WHERE key = ?1",
                    params![name, new_key.seal(context, &plain)?],
                )?;
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'kdf_salt'",
            [salt.to_vec()],
        )?;
        #[cfg(debug_assertions)]
        if std::env::var_os(ABORT_MIDWAY_ENV).is_some() {
            eprintln!("{ABORT_MIDWAY_ENV}: aborting half-way through re-sealing");
            std::process::abort();
        }
        let devices: Vec<SealedDevice> = {
            let mut stmt = tx.prepare(
                "SELECT name, password_sealed, private_key_sealed, enable_password_sealed \
                 FROM devices",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?
        };
        let reseal = |context: String, sealed: Option<Vec<u8>>| {
            sealed
                .map(|s| -> Result<Vec<u8>, InventoryError> {
                    let plain = old_key.open(&context, &s)?;
                    Ok(new_key.seal(&context, &plain)?)
                })
                .transpose()
        };
        for (name, password, private_key, enable_password) in devices {
            let password = reseal(super::devices::password_context(&name), password)?;
            let private_key = reseal(super::devices::private_key_context(&name), private_key)?;
            let enable_password = reseal(
                super::devices::enable_password_context(&name),
                enable_password,
            )?;
            tx.execute(
                "UPDATE devices SET password_sealed = ?2, private_key_sealed = ?3, \
                 enable_password_sealed = ?4 WHERE name = ?1",
                params![name, password, private_key, enable_password],
            )?;
        }
        tx.commit()?;
        *key = Some(new_key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::service::inventory::{DriverKind, NewDevice, RelayEnrollment};

    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn every_sealed_secret_opens_with_the_new_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.db");
        let old = Secret::new("old admin");
        let new = Secret::new("new admin");
        let mut inv = Inventory::init_with(&path, &old, cheap()).unwrap();
        inv.add_device(&NewDevice {
            name: "d1".into(),
            host: "192.0.2.1".into(),
            port: 22,
            device_type: "IOS".into(),
            driver: DriverKind::Ssh,
            attributes: BTreeMap::new(),
            username: Some("u".into()),
            password: Some(Secret::new("device pw")),
            private_key: Some(Secret::new("KEY PEM")),
            legacy_algorithms: None,
            enable_password: Some(Secret::new("enable pw")),
            session: None,
        })
        .unwrap();
        inv.set_relay_enrollment(&RelayEnrollment {
            url: "https://relay.example.net".into(),
            quic: "relay.example.net:4433".into(),
            serial: "SN-1".into(),
            cert_der: vec![1, 2, 3],
            key_der: vec![9; 32].into(),
            ca_der: vec![4],
            assertion_key: vec![5; 32],
            issuer: "relay".into(),
            advertise: None,
        })
        .unwrap();
        let tls_before = inv.tls_identity().unwrap().key_der.to_vec();
        inv.change_admin_password(&new).unwrap();
        drop(inv);

        assert!(matches!(
            Inventory::open(&path, &old),
            Err(InventoryError::WrongAdminPassword(_))
        ));
        let inv = Inventory::open(&path, &new).unwrap();
        let creds = inv.device_credentials("d1").unwrap();
        assert_eq!(creds.password.unwrap().expose(), "device pw");
        assert_eq!(creds.private_key.unwrap().expose(), "KEY PEM");
        assert_eq!(creds.enable_password.unwrap().expose(), "enable pw");
        assert_eq!(inv.tls_identity().unwrap().key_der.to_vec(), tls_before);
        assert_eq!(
            inv.relay_enrollment().unwrap().unwrap().key_der.to_vec(),
            vec![9; 32]
        );
    }

    #[test]
    fn an_inventory_opened_without_the_password_cannot_change_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.db");
        drop(Inventory::init_with(&path, &Secret::new("a"), cheap()).unwrap());
        let mut inv = Inventory::open_unsealed(&path).unwrap();
        assert!(matches!(
            inv.change_admin_password(&Secret::new("b")),
            Err(InventoryError::Locked)
        ));
    }
}
