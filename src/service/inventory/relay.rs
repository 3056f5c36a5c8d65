//! The service's enrollment with a relay, kept in the `meta` table: the
//! certificate bound to its serial (its key sealed like every other
//! secret), the relay's CA and the key that verifies caller assertions.

use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use super::{Inventory, InventoryError};

pub(super) const RELAY_KEY_CONTEXT: &str = "meta:relay_key";

/// What `service enroll` stores and `service run` uses.
pub struct RelayEnrollment {
    /// The relay's HTTPS base URL.
    pub url: String,
    /// The relay's QUIC address, or several separated by commas (a relay
    /// tier's nodes, tried in turn: `relay_agent::relay_addresses`).
    pub quic: String,
    pub serial: String,
    pub cert_der: Vec<u8>,
    pub key_der: Zeroizing<Vec<u8>>,
    pub ca_der: Vec<u8>,
    /// Raw Ed25519 public key that verifies caller assertions.
    pub assertion_key: Vec<u8>,
    /// The relay's issuer name in assertions.
    pub issuer: String,
    /// The direct address the service advertises to callers, if any.
    pub advertise: Option<String>,
}

impl std::fmt::Debug for RelayEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayEnrollment")
            .field("url", &self.url)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl Inventory {
    /// Stores (replacing any earlier) enrollment.
    pub fn set_relay_enrollment(&mut self, e: &RelayEnrollment) -> Result<(), InventoryError> {
        let sealed = self.key()?.seal(RELAY_KEY_CONTEXT, &e.key_der)?;
        let rows: [(&str, Vec<u8>); 9] = [
            ("relay_url", e.url.as_bytes().to_vec()),
            ("relay_quic", e.quic.as_bytes().to_vec()),
            ("relay_serial", e.serial.as_bytes().to_vec()),
            ("relay_cert", e.cert_der.clone()),
            ("relay_key", sealed),
            ("relay_ca", e.ca_der.clone()),
            ("relay_assertion_key", e.assertion_key.clone()),
            ("relay_issuer", e.issuer.as_bytes().to_vec()),
            (
                "relay_advertise",
                e.advertise.clone().unwrap_or_default().into_bytes(),
            ),
        ];
        let tx = self.conn.transaction()?;
        for (key, value) in rows {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The enrollment, if this service enrolled with a relay.
    pub fn relay_enrollment(&self) -> Result<Option<RelayEnrollment>, InventoryError> {
        let enrolled: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'relay_serial'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if enrolled.is_none() {
            return Ok(None);
        }
        let text = |key: &str| -> Result<String, InventoryError> {
            String::from_utf8(self.meta(key)?)
                .map_err(|_| InventoryError::Corrupt(format!("meta entry {key:?} is not text")))
        };
        let advertise = text("relay_advertise")?;
        Ok(Some(RelayEnrollment {
            url: text("relay_url")?,
            quic: text("relay_quic")?,
            serial: text("relay_serial")?,
            cert_der: self.meta("relay_cert")?,
            key_der: self
                .key()?
                .open(RELAY_KEY_CONTEXT, &self.meta("relay_key")?)?,
            ca_der: self.meta("relay_ca")?,
            assertion_key: self.meta("relay_assertion_key")?,
            issuer: text("relay_issuer")?,
            advertise: (!advertise.is_empty()).then_some(advertise),
        }))
    }
}
