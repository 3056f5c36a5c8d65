//! Who is calling: local peer credentials and the owner of shared state.
//!
//! The caller's uid, gid and pid come from `SO_PEERCRED` on the Unix socket
//! (the kernel vouches for them). Logins and links are owned by the local
//! user, or by a group when the config names one that shares.

use std::path::Path;

/// A local caller, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

/// What each front-door connection reports to tonic (a request extension):
/// the caller's credentials, read once per connection with `SO_PEERCRED`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectedPeer(pub Option<Peer>);

impl tonic::transport::server::Connected for crate::uds::ReadWokenUnixStream {
    type ConnectInfo = ConnectedPeer;

    fn connect_info(&self) -> ConnectedPeer {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(self.get_ref(), PeerCredentials).ok();
        ConnectedPeer(cred.map(|c| Peer {
            uid: c.uid(),
            gid: c.gid(),
            // 0: the caller lives in another pid namespace.
            pid: u32::try_from(c.pid()).ok().filter(|pid| *pid > 0),
        }))
    }
}

/// Who owns a link or a named service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    User(u32),
    Group(u32),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(uid) => write!(f, "uid {uid}"),
            Self::Group(gid) => write!(f, "gid {gid}"),
        }
    }
}

/// The owner of what `peer` creates: the sharing group when the peer is in
/// it (primary or supplementary), else the peer's own uid.
pub fn owner_for(peer: &Peer, share_group: Option<u32>) -> Owner {
    match share_group {
        Some(gid) if peer.gid == gid || peer.pid.is_some_and(|pid| in_group(pid, gid)) => {
            Owner::Group(gid)
        }
        _ => Owner::User(peer.uid),
    }
}

/// Whether process `pid` has `gid` among its supplementary groups.
fn in_group(pid: u32, gid: u32) -> bool {
    supplementary_groups(pid).is_some_and(|groups| groups.contains(&gid))
}

/// Process `pid`'s supplementary groups (`Groups:` in `/proc/PID/status`);
/// `None` when they cannot be read.
pub fn supplementary_groups(pid: u32) -> Option<Vec<u32>> {
    let status = Path::new("/proc").join(pid.to_string()).join("status");
    let text = std::fs::read_to_string(status).ok()?;
    let groups = text.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        groups
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_the_user_unless_in_the_sharing_group() {
        let p = Peer {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        assert_eq!(owner_for(&p, None), Owner::User(1000));
        assert_eq!(owner_for(&p, Some(50)), Owner::User(1000));
        let q = Peer { gid: 50, ..p };
        assert_eq!(owner_for(&q, Some(50)), Owner::Group(50));
        assert_ne!(owner_for(&p, Some(50)), Owner::Group(50));
    }

    #[test]
    fn supplementary_groups_are_read_from_proc() {
        let me = std::process::id();
        let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        let groups: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap()
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        if let Some(g) = groups.first() {
            assert!(in_group(me, *g));
        }
        assert!(!in_group(me, 4_000_000_000));
    }
}
