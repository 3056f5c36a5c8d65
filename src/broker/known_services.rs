//! Service certificate fingerprints learned on first use, per owner and
//! target, persisted under the broker's state directory (JSON, written
//! atomically, mode 0600) so a restarted broker still detects a changed
//! certificate.
//!
//! Owned by the `SessionRegistry` actor alone: it reads pins when it makes
//! a direct link, records them when a link proves one, and lists or forgets
//! them for their owner (`switchyard known-services list|forget`, the
//! `ListKnownServices` / `ForgetKnownService` calls). A caller only ever
//! sees and changes its own owner's entries.

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
        self.save()
    }

    /// The owner's entries as (target `host:port`, fingerprint), sorted by
    /// target.
    pub fn list(&self, owner: Owner) -> Vec<(String, Fingerprint)> {
        let prefix = key(owner, "");
        self.entries
            .iter()
            .filter_map(|(k, fp)| {
                let target = k.strip_prefix(&prefix)?;
                Some((target.to_string(), Fingerprint::parse(fp)?))
            })
            .collect()
    }

    /// Forgets the owner's pin for `target`; the next connection to it
    /// trusts the certificate it meets (first use again). Returns the
    /// forgotten fingerprint, `None` when there was none. On a failure to
    /// persist, the entry stays (in memory and on disk) and the error is
    /// returned, so what the caller is told matches what a restart sees.
    pub fn forget(&mut self, owner: Owner, target: &str) -> std::io::Result<Option<Fingerprint>> {
        let k = key(owner, target);
        let Some(old) = self.entries.remove(&k) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.entries.insert(k, old);
            return Err(e);
        }
        Ok(Fingerprint::parse(&old))
    }

    fn save(&self) -> std::io::Result<()> {
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

    #[test]
    fn lists_and_forgets_only_the_owners_entries_and_persists_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known.json");
        let mut k = KnownServices::load(Some(path.clone()));
        k.record(Owner::User(1), "b:8181", Fingerprint([1; 32]))
            .unwrap();
        k.record(Owner::User(1), "a:8181", Fingerprint([2; 32]))
            .unwrap();
        k.record(Owner::User(11), "c:8181", Fingerprint([3; 32]))
            .unwrap();
        let listed = k.list(Owner::User(1));
        assert_eq!(
            listed,
            vec![
                ("a:8181".to_string(), Fingerprint([2; 32])),
                ("b:8181".to_string(), Fingerprint([1; 32])),
            ]
        );
        // Another owner's entry is not forgettable by this one.
        assert_eq!(k.forget(Owner::User(1), "c:8181").unwrap(), None);
        assert_eq!(
            k.forget(Owner::User(1), "a:8181").unwrap(),
            Some(Fingerprint([2; 32]))
        );
        let reloaded = KnownServices::load(Some(path));
        assert_eq!(reloaded.get(Owner::User(1), "a:8181"), None);
        assert_eq!(
            reloaded.get(Owner::User(11), "c:8181"),
            Some(Fingerprint([3; 32]))
        );
    }
}
