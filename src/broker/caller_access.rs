//! Which files a local caller may open, judged with the caller's rights
//! rather than the broker's.
//!
//! The broker may run as root (or as a user whose socket group lets other
//! users in), so it can see files its callers cannot. Before it opens an
//! inventory for a caller ([`inventory_path_for`]) it walks the path one
//! component at a time as the kernel would for the caller: search (`x`)
//! permission on every directory, symbolic links followed (at most
//! [`MAX_LINKS`]), each judged by the mode bits for the caller's uid, primary
//! gid and supplementary groups (read from `/proc/PID/status`; the primary
//! gid alone when the caller's pid is unknown). The file itself must be a
//! regular file the caller may read and write, owned by the caller (root
//! and the broker's own uid excepted).
//!
//! On failure: one answer for every reason — missing, unreachable, not
//! theirs — ("cannot open inventory PATH as uid N: not found or not
//! permitted"), so a caller cannot learn what exists where they may not
//! look. POSIX ACLs are not consulted (an ACL that grants more is refused
//! here; one that takes rights away is not seen). Known limit: a caller who
//! may write a directory on the path can swap it between this check and the
//! open; opening with the caller's fsuid would close that.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::error::BrokerError;
use super::peer::Peer;

/// Symbolic links followed in one path, as Linux's `MAXSYMLINKS`.
pub const MAX_LINKS: usize = 40;

/// Read, write and search bits of a mode triple.
const READ: u32 = 4;
const WRITE: u32 = 2;
const SEARCH: u32 = 1;

/// Who is asking, for permission checks.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Caller {
    /// The caller behind `peer`, with the supplementary groups its socket
    /// reported when it connected.
    pub fn of(peer: &Peer) -> Self {
        Self {
            uid: peer.uid,
            gid: peer.gid,
            groups: peer.groups.to_vec(),
        }
    }

    /// Whether the mode bits of `meta` grant all of `want` to this caller.
    /// Root may do anything but search a directory with no `x` bit at all.
    fn may(&self, meta: &std::fs::Metadata, want: u32) -> bool {
        let mode = meta.mode();
        if self.uid == 0 {
            return want & SEARCH == 0 || mode & 0o111 != 0;
        }
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if meta.gid() == self.gid || self.groups.contains(&meta.gid()) {
            mode >> 3
        } else {
            mode
        } & 0o7;
        bits & want == want
    }
}

/// The inventory at `db` (an absolute path), resolved to a path free of
/// symbolic links, if `peer` may open it; else the one answer described in
/// the module docs (`NOT_FOUND`).
pub fn inventory_path_for(peer: &Peer, db: &Path) -> Result<PathBuf, BrokerError> {
    if !db.is_absolute() {
        return Err(BrokerError::InvalidArgument(format!(
            "the inventory path {} must be absolute",
            db.display()
        )));
    }
    let caller = Caller::of(peer);
    let broker_uid = nix::unistd::Uid::effective().as_raw();
    let refused = || {
        BrokerError::NotFound(format!(
            "cannot open inventory {} as uid {}: not found or not permitted \
             (it must be a file you own, on a path you may search)",
            db.display(),
            peer.uid
        ))
    };
    let path = resolve_as(&caller, db).ok_or_else(refused)?;
    let meta = std::fs::metadata(&path).map_err(|_| refused())?;
    let owner_ok = caller.uid == 0 || meta.uid() == caller.uid || caller.uid == broker_uid;
    if !meta.is_file() || !owner_ok || !caller.may(&meta, READ | WRITE) {
        return Err(refused());
    }
    Ok(path)
}

/// Resolves `path` component by component as `caller` would, following
/// symbolic links; `None` when any step is missing or not searchable.
fn resolve_as(caller: &Caller, path: &Path) -> Option<PathBuf> {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut links = 0;
    let push = |pending: &mut Vec<PathBuf>, p: &Path| {
        // Stored reversed, so `pop` yields components in order.
        for c in p.components().rev() {
            pending.push(c.as_os_str().into());
        }
    };
    push(&mut pending, path);
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next()? {
            Component::RootDir => resolved = PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                searchable(caller, &resolved)?;
                resolved.pop();
            }
            Component::Normal(name) => {
                searchable(caller, &resolved)?;
                let next = resolved.join(name);
                let meta = std::fs::symlink_metadata(&next).ok()?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    let target = std::fs::read_link(&next).ok()?;
                    push(&mut pending, &target);
                } else {
                    resolved = next;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    Some(resolved)
}

/// `Some` when `dir` is a directory `caller` may search.
fn searchable(caller: &Caller, dir: &Path) -> Option<()> {
    let meta = std::fs::metadata(dir).ok()?;
    (meta.is_dir() && caller.may(&meta, SEARCH)).then_some(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path, m: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn paths_resolve_through_links_and_dot_dot_as_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("a")).unwrap();
        std::fs::write(root.join("a/inv.db"), b"x").unwrap();
        std::os::unix::fs::symlink("a", root.join("link")).unwrap();
        let me = Caller {
            uid: nix::unistd::Uid::effective().as_raw(),
            gid: nix::unistd::Gid::effective().as_raw(),
            groups: Vec::new(),
        };
        assert_eq!(
            resolve_as(&me, &root.join("link/../a/./inv.db")),
            Some(root.join("a/inv.db"))
        );
        assert_eq!(resolve_as(&me, &root.join("missing/inv.db")), None);
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve_as(&me, &root.join("loop")), None, "link loops end");
    }

    #[test]
    fn mode_bits_are_judged_for_the_callers_uid_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let meta = || std::fs::metadata(&private).unwrap();
        let (uid, gid) = (meta().uid(), meta().gid());
        let stranger = Caller {
            uid: uid + 1000,
            gid: gid + 1000,
            groups: Vec::new(),
        };
        let member = Caller {
            groups: vec![gid],
            ..stranger.clone()
        };
        mode(&private, 0o700);
        assert!(!stranger.may(&meta(), SEARCH));
        assert!(!member.may(&meta(), SEARCH));
        mode(&private, 0o710);
        assert!(!stranger.may(&meta(), SEARCH));
        assert!(member.may(&meta(), SEARCH));
        mode(&private, 0o711);
        assert!(stranger.may(&meta(), SEARCH));
        assert!(!stranger.may(&meta(), READ));
    }
}
