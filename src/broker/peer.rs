//! Who is calling: local peer credentials and the owner of shared state.
//!
//! The caller's uid, gid, pid and supplementary groups come from the Unix
//! socket (`SO_PEERCRED`, `SO_PEERGROUPS`): the kernel records them when
//! the caller connects, so they are read once per connection and cannot
//! change under us. Logins and links are owned by the local user, or by a
//! group when the config names one that shares.
//!
//! Group membership is decided from those connect-time groups, not from
//! `/proc/<pid>/status` (a pid can exit and be reused by another user's
//! process; reading it is also blocking I/O on an actor) nor from the
//! group database for the uid (`getgrouplist`: an NSS lookup that may hit
//! the network, and that describes the user's login groups rather than the
//! credentials of the process that connected, e.g. after `newgrp` or a
//! dropped group). A kernel without `SO_PEERGROUPS` (before 4.13) reports
//! no supplementary groups: such callers share only through their primary
//! group — it fails closed.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

/// A local caller, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
    /// Supplementary groups of the caller's credentials when it connected.
    pub groups: Arc<[u32]>,
}

/// What each front-door connection reports to tonic (a request extension):
/// the caller's credentials, read once per connection.
#[derive(Debug, Clone)]
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
            groups: peer_groups(self.get_ref()).unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no supplementary groups from SO_PEERGROUPS");
                Arc::from([])
            }),
        }))
    }
}

/// `SO_PEERGROUPS` (Linux, asm-generic value; the architectures this
/// builds for use it). Not exported by `libc`.
const SO_PEERGROUPS: nix::libc::c_int = 59;
/// The kernel's own limit on supplementary groups (`NGROUPS_MAX`).
const NGROUPS_MAX: usize = 65_536;

/// The supplementary groups the peer of the Unix socket `fd` had when it
/// connected.
pub fn peer_groups(fd: &impl AsRawFd) -> std::io::Result<Arc<[u32]>> {
    // SAFETY: the descriptor is borrowed from a live socket for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<nix::libc::gid_t>()) as nix::libc::socklen_t;
        // SAFETY: `groups` is a writable buffer of `len` bytes; the kernel
        // writes at most `len` bytes and stores the size it needs in `len`.
        let rc = unsafe {
            nix::libc::getsockopt(
                fd.as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<nix::libc::gid_t>();
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups.into());
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(nix::libc::ERANGE)
            && needed > groups.len()
            && needed <= NGROUPS_MAX
        {
            groups.resize(needed, 0);
            continue;
        }
        return Err(error);
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
/// it (primary or supplementary, as the socket reported at connect), else
/// the peer's own uid.
pub fn owner_for(peer: &Peer, share_group: Option<u32>) -> Owner {
    match share_group {
        Some(gid) if peer.gid == gid || peer.groups.contains(&gid) => Owner::Group(gid),
        _ => Owner::User(peer.uid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid: 1000,
            gid,
            pid: None,
            groups: groups.into(),
        }
    }

    #[test]
    fn owner_is_the_user_unless_in_the_sharing_group() {
        let p = peer(1000, &[]);
        assert_eq!(owner_for(&p, None), Owner::User(1000));
        assert_eq!(owner_for(&p, Some(50)), Owner::User(1000));
        assert_eq!(owner_for(&peer(50, &[]), Some(50)), Owner::Group(50));
        // Supplementary membership counts, from the connect-time groups
        // alone (no pid to look anything up by).
        assert_eq!(owner_for(&peer(1000, &[7, 50]), Some(50)), Owner::Group(50));
        assert_eq!(
            owner_for(&peer(1000, &[7, 51]), Some(50)),
            Owner::User(1000)
        );
    }

    #[test]
    fn the_socket_reports_the_connecting_process_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut reported: Vec<u32> = peer_groups(&a).unwrap().to_vec();
        let mut ours: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        reported.sort_unstable();
        reported.dedup();
        ours.sort_unstable();
        ours.dedup();
        assert_eq!(reported, ours);
    }

    /// A process with other groups than ours connects: what the socket
    /// reports are its groups at connect time, even after it exited.
    #[test]
    fn groups_are_those_of_the_process_that_connected() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("needs root to give a child other groups; checked the socketpair only");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import os, socket, sys; os.setgroups([4242, 4343]); \
                 s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
            ])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "{status}");
        let (conn, _) = listener.accept().unwrap();
        let mut groups = peer_groups(&conn).unwrap().to_vec();
        groups.sort_unstable();
        assert_eq!(groups, [4242, 4343]);
    }
}
