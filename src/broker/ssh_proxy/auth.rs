//! Who may log in to the SSH proxy, and where a login goes (sans-IO).
//!
//! Clients authenticate with a public key listed in an OpenSSH
//! `authorized_keys` text (options before a key are ignored: the proxy
//! offers no forwarding or commands a `command=`/`restrict` could limit,
//! and a client key is as good as the owner's own login), or with the
//! proxy's password, compared in constant time. The user name names the
//! target: `DEVICE@SERVICE` (see [`Target::parse`]).

use russh::keys::PublicKey;
use russh::keys::ssh_key::AuthorizedKeys;

use crate::secret::Secret;

/// Client keys in one authorized_keys text, at most.
pub const MAX_KEYS: usize = 1024;

/// Why the proxy's client credentials were refused at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "the SSH proxy needs client keys (authorized_keys) or a password; give \
         --authorized-keys FILE or --password-file FILE"
    )]
    Nothing,
    #[error("authorized_keys line {line}: {reason}")]
    BadKey { line: usize, reason: String },
    #[error("authorized_keys has more than {MAX_KEYS} keys")]
    TooMany,
}

/// The credentials the proxy accepts.
pub struct ClientAuth {
    keys: Vec<PublicKey>,
    password: Option<Secret>,
}

impl ClientAuth {
    /// Parses `authorized_keys` (OpenSSH format: blank lines and `#`
    /// comments skipped, a bad line refused with its number) and takes
    /// `password` (ignored when empty).
    pub fn new(authorized_keys: &str, password: Option<Secret>) -> Result<Self, AuthConfigError> {
        let mut keys = Vec::new();
        for (i, line) in authorized_keys.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let entry = AuthorizedKeys::new(trimmed)
                .next()
                .transpose()
                .map_err(|e| AuthConfigError::BadKey {
                    line: i + 1,
                    reason: e.to_string(),
                })?
                .ok_or(AuthConfigError::BadKey {
                    line: i + 1,
                    reason: "no key".into(),
                })?;
            if keys.len() == MAX_KEYS {
                return Err(AuthConfigError::TooMany);
            }
            keys.push(entry.public_key().clone());
        }
        let password = password.filter(|p| !p.expose().is_empty());
        if keys.is_empty() && password.is_none() {
            return Err(AuthConfigError::Nothing);
        }
        Ok(Self { keys, password })
    }

    /// Client keys accepted.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Whether a password is accepted.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether `key` is one of the authorized keys (its comment aside).
    pub fn key_allowed(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k.key_data() == key.key_data())
    }

    /// Whether `given` is the proxy's password (constant time in the
    /// password's bytes; lengths may differ in time).
    pub fn password_matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        match &self.password {
            Some(p) => {
                let want = p.expose().as_bytes();
                want.len() == given.len() && bool::from(want.ct_eq(given.as_bytes()))
            }
            None => false,
        }
    }
}

/// Where a login goes: the SSH user name `DEVICE@SERVICE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub device: String,
    /// One of the proxy owner's named services.
    pub service: String,
}

impl Target {
    /// Splits `DEVICE@SERVICE` at its last `@` (service names hold none;
    /// a device name may). `ssh -p 2222 DEVICE@SERVICE@127.0.0.1` gives
    /// this user name, since `ssh` takes the host after the last `@`.
    pub fn parse(user: &str) -> Result<Self, String> {
        match user.rsplit_once('@') {
            Some((device, service)) if !device.is_empty() && !service.is_empty() => {
                crate::label::check("a device name", device).map_err(|e| e.to_string())?;
                crate::label::check("a service name", service).map_err(|e| e.to_string())?;
                Ok(Self {
                    device: device.to_string(),
                    service: service.to_string(),
                })
            }
            _ => Err(format!(
                "the user name {:?} names no device: log in as DEVICE@SERVICE, e.g. \
                 `ssh -p PORT router1@lab@127.0.0.1` for device router1 of named service lab",
                crate::label::tidy_max(user, 128)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_last_at_sign() {
        assert_eq!(
            Target::parse("r1@lab").unwrap(),
            Target {
                device: "r1".into(),
                service: "lab".into()
            }
        );
        assert_eq!(Target::parse("a@b@lab").unwrap().device, "a@b");
        for bad in ["r1", "@lab", "r1@", ""] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains("DEVICE@SERVICE"), "{e}");
        }
        assert!(Target::parse("r\x1b1@lab").is_err());
    }

    #[test]
    fn keys_and_passwords() {
        let key = crate::sim::server::host_key_for("a").public_key().clone();
        let line = key.to_openssh().unwrap();
        let text = format!("# comment\n\nno-pty,command=\"x\" {line} user@host\n");
        let auth = ClientAuth::new(&text, None).unwrap();
        assert_eq!(auth.key_count(), 1);
        assert!(auth.key_allowed(&key));
        assert!(!auth.password_matches(""));
        let other = crate::sim::server::host_key_for("x").public_key().clone();
        assert!(!auth.key_allowed(&other));

        let auth = ClientAuth::new("", Some(Secret::new("pw"))).unwrap();
        assert!(auth.password_matches("pw"));
        assert!(!auth.password_matches("pW"));
        assert!(!auth.password_matches("pw2"));

        assert!(matches!(
            ClientAuth::new("", Some(Secret::new(""))),
            Err(AuthConfigError::Nothing)
        ));
        assert!(matches!(
            ClientAuth::new("ssh-ed25519 garbage\n", None),
            Err(AuthConfigError::BadKey { line: 1, .. })
        ));
    }
}
