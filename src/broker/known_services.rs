//! Service certificate fingerprints learned on first use, per owner and
//! target, persisted under the broker's state directory (JSON, written
//! atomically, mode 0600) so a restarted broker still detects a changed
//! certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::peer::Owner;
use crate::wire::pin::Fingerprint;

#[derive(Debug)]
pub struct KnownServices {
    path: Option<PathBuf>,
    entries: BTreeMap<String, String>,
}

fn key(owner: Owner, target: &str) -> String {
    format!("{owner}|{target}")
}

impl KnownServices {
    /// Loads the store (an unreadable or missing file starts empty; `None`
    /// keeps everything in memory).
    pub fn load(path: Option<PathBuf>) -> Self {
        let entries = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self { path, entries }
    }

    pub fn get(&self, owner: Owner, target: &str) -> Option<Fingerprint> {
        self.entries
            .get(&key(owner, target))
            .and_then(|f| Fingerprint::parse(f))
    }

    /// Records a fingerprint; persistence failures are returned for logging
    /// (the in-memory record still protects this run).
    pub fn record(&mut self, owner: Owner, target: &str, fp: Fingerprint) -> std::io::Result<()> {
        self.entries.insert(key(owner, target), fp.to_string());
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(&self.entries).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomically(path, &bytes)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("known.json");
        let mut k = KnownServices::load(Some(path.clone()));
        let fp = Fingerprint([3; 32]);
        k.record(Owner::User(1), "svc:8181", fp).unwrap();
        let k2 = KnownServices::load(Some(path));
        assert_eq!(k2.get(Owner::User(1), "svc:8181"), Some(fp));
        assert_eq!(k2.get(Owner::User(2), "svc:8181"), None);
    }
}
