//! Remote users: who may use this service, and which devices they may reach.

use globset::{Glob, GlobSet, GlobSetBuilder};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Inventory, InventoryError, now_secs};
use crate::password;
use crate::secret::Secret;

/// Which devices a remote user may reach: a list of glob patterns over
/// device names (`*` = all).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct DeviceScope {
    patterns: Vec<String>,
    #[serde(skip)]
    set: GlobSet,
}

impl DeviceScope {
    /// Parses a comma-separated list of globs (`"*"`, `"core-*,edge-1"`).
    pub fn parse(list: &str) -> Result<Self, InventoryError> {
        let patterns: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        if patterns.is_empty() {
            return Err(InventoryError::Invalid(
                "a device scope needs at least one pattern (use \"*\" for all devices)".into(),
            ));
        }
        Self::from_patterns(patterns)
    }

    fn from_patterns(patterns: Vec<String>) -> Result<Self, InventoryError> {
        let mut builder = GlobSetBuilder::new();
        for p in &patterns {
            let glob = Glob::new(p)
                .map_err(|e| InventoryError::Invalid(format!("bad device pattern {p:?}: {e}")))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| InventoryError::Invalid(format!("bad device patterns: {e}")))?;
        Ok(Self { patterns, set })
    }

    /// All devices.
    pub fn all() -> Self {
        // "*" always compiles.
        Self::from_patterns(vec!["*".into()]).unwrap_or_else(|_| Self {
            patterns: vec![],
            set: GlobSet::empty(),
        })
    }

    pub fn allows(&self, device: &str) -> bool {
        self.set.is_match(device)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// A remote user as listed (the password hash stays inside).
#[derive(Debug, Clone, Serialize)]
pub struct RemoteUser {
    pub name: String,
    pub devices: DeviceScope,
    pub enabled: bool,
    pub has_password: bool,
    pub cloud: bool,
}

/// A remote user to add.
#[derive(Debug, Clone)]
pub struct NewRemoteUser {
    pub name: String,
    pub password: Option<Secret>,
    pub devices: DeviceScope,
    pub enabled: bool,
    /// A cloud identity (an email the relay vouches for) instead of a
    /// local user name; it has no password here.
    pub cloud: bool,
}

impl Inventory {
    /// Adds a remote user; the password is stored as an Argon2id hash.
    pub fn add_user(&mut self, user: &NewRemoteUser) -> Result<(), InventoryError> {
        if user.name.trim().is_empty() || user.name.len() > 256 {
            return Err(InventoryError::Invalid(
                "a user name needs 1-256 characters".into(),
            ));
        }
        if user.cloud && user.password.is_some() {
            return Err(InventoryError::Invalid(
                "a cloud identity signs in through the relay and has no password here".into(),
            ));
        }
        let hash = user
            .password
            .as_ref()
            .map(password::hash_password)
            .transpose()
            .map_err(|e| InventoryError::Invalid(e.to_string()))?;
        let devices = serde_json::to_string(user.devices.patterns())
            .map_err(|e| InventoryError::Invalid(e.to_string()))?;
        let result = self.conn.execute(
            "INSERT INTO remote_users (name, password_hash, devices, enabled, cloud, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                user.name,
                hash,
                devices,
                user.enabled,
                user.cloud,
                now_secs() as i64
            ],
        );
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(InventoryError::DuplicateUser(user.name.clone()))
            }
            other => other.map(drop).map_err(Into::into),
        }
    }

    pub fn remove_user(&mut self, name: &str) -> Result<(), InventoryError> {
        let n = self
            .conn
            .execute("DELETE FROM remote_users WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(InventoryError::UnknownUser(name.to_string()));
        }
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<RemoteUser>, InventoryError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, devices, enabled, password_hash IS NOT NULL, cloud FROM remote_users ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (name, devices, enabled, has_password, cloud) = row?;
            Ok(RemoteUser {
                name,
                devices: scope_from_json(&devices)?,
                enabled,
                has_password,
                cloud,
            })
        })
        .collect()
    }

    /// What a login check needs: the user and its password hash. Split from
    /// the check itself so a caller can hash (slow, tens of milliseconds)
    /// without holding the inventory.
    pub fn login_record(&self, name: &str) -> Result<Option<LoginRecord>, InventoryError> {
        let row: Option<(String, Option<String>, bool, bool)> = self
            .conn
            .query_row(
                "SELECT devices, password_hash, enabled, cloud FROM remote_users WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        row.map(|(devices, password_hash, enabled, cloud)| {
            Ok(LoginRecord {
                user: RemoteUser {
                    name: name.to_string(),
                    devices: scope_from_json(&devices)?,
                    enabled,
                    has_password: password_hash.is_some(),
                    cloud,
                },
                password_hash,
            })
        })
        .transpose()
    }

    /// An enabled cloud identity in the remote-users list (the relay has
    /// already vouched for who it is).
    pub fn cloud_user(&self, identity: &str) -> Result<Option<RemoteUser>, InventoryError> {
        Ok(self
            .login_record(identity)?
            .map(|r| r.user)
            .filter(|u| u.cloud && u.enabled))
    }

    /// Checks a remote user's password (see [`LoginRecord::verify`]).
    pub fn authenticate_user(
        &self,
        name: &str,
        password: &Secret,
    ) -> Result<Option<RemoteUser>, InventoryError> {
        Ok(LoginRecord::verify(self.login_record(name)?, password))
    }
}

/// A remote user with its stored password hash. `Debug` leaves the hash
/// out (it is an offline-guessable secret).
#[derive(Clone)]
pub struct LoginRecord {
    pub user: RemoteUser,
    password_hash: Option<String>,
}

impl std::fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecord")
            .field("user", &self.user)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl LoginRecord {
    /// The user if `password` is right and the user is enabled. Unknown,
    /// disabled and password-less users all fail the same way and take the
    /// same time, so the answer tells an attacker nothing about which names
    /// exist.
    pub fn verify(record: Option<Self>, password: &Secret) -> Option<RemoteUser> {
        let hash = record
            .as_ref()
            .and_then(|r| r.password_hash.as_deref())
            .unwrap_or(password::DUMMY_HASH);
        let ok = password::verify_password(hash, password).unwrap_or(false);
        match record {
            Some(r) if ok && r.user.enabled && r.password_hash.is_some() => Some(r.user),
            _ => None,
        }
    }
}

fn scope_from_json(json: &str) -> Result<DeviceScope, InventoryError> {
    let patterns: Vec<String> = serde_json::from_str(json)
        .map_err(|e| InventoryError::Corrupt(format!("device scope: {e}")))?;
    DeviceScope::from_patterns(patterns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_record_never_shows_its_hash() {
        let hash = password::hash_password(&Secret::new("pw")).unwrap();
        let record = LoginRecord {
            user: RemoteUser {
                name: "alice".into(),
                devices: DeviceScope::all(),
                enabled: true,
                has_password: true,
                cloud: false,
            },
            password_hash: Some(hash.clone()),
        };
        let debug = format!("{record:?}");
        assert!(!debug.contains(&hash), "{debug}");
        assert!(!debug.contains("argon2"), "{debug}");
        assert!(debug.contains("alice"), "{debug}");
    }

    #[test]
    fn scope_globs() {
        let s = DeviceScope::parse("core-*, edge-1").unwrap();
        assert!(s.allows("core-7"));
        assert!(s.allows("edge-1"));
        assert!(!s.allows("edge-2"));
        assert!(DeviceScope::all().allows("anything"));
        assert!(DeviceScope::parse(" , ").is_err());
        assert!(DeviceScope::parse("[").is_err());
    }

    #[test]
    fn dummy_hash_is_a_real_hash_so_unknown_users_cost_the_same() {
        assert!(!password::verify_password(password::DUMMY_HASH, &Secret::new("x")).unwrap());
    }
}

/// What `update_user` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// A new password (stored as a new Argon2id hash).
    pub password: Option<Secret>,
    pub devices: Option<DeviceScope>,
    pub enabled: Option<bool>,
}

impl Inventory {
    /// Changes a remote user in one statement. A cloud identity takes no
    /// password.
    pub fn update_user(&mut self, name: &str, changes: &UserChanges) -> Result<(), InventoryError> {
        let cloud: Option<bool> = self
            .conn
            .query_row(
                "SELECT cloud FROM remote_users WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        let cloud = cloud.ok_or_else(|| InventoryError::UnknownUser(name.to_string()))?;
        if cloud && changes.password.is_some() {
            return Err(InventoryError::Invalid(
                "a cloud identity signs in through the relay and has no password here".into(),
            ));
        }
        let hash = changes
            .password
            .as_ref()
            .map(password::hash_password)
            .transpose()
            .map_err(|e| InventoryError::Invalid(e.to_string()))?;
        let devices = changes
            .devices
            .as_ref()
            .map(|d| serde_json::to_string(d.patterns()))
            .transpose()
            .map_err(|e| InventoryError::Invalid(e.to_string()))?;
        let n = self.conn.execute(
            "UPDATE remote_users SET password_hash = COALESCE(?2, password_hash), \
             devices = COALESCE(?3, devices), enabled = COALESCE(?4, enabled) WHERE name = ?1",
            params![name, hash, devices, changes.enabled],
        )?;
        if n == 0 {
            return Err(InventoryError::UnknownUser(name.to_string()));
        }
        Ok(())
    }
}
