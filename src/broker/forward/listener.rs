//! A forward's local listener, reachable only by its owner.
//!
//! * **Unix socket** (`unix:PATH`): the directory must belong to the
//!   owner (checked on a descriptor opened without following links, and
//!   the socket is bound through that descriptor, so the directory cannot
//!   be swapped for another in between); the socket is created mode 0600
//!   (set on the socket before `bind`, so it never exists with a wider
//!   mode) and handed to the owner (`lchown`, which never follows a link).
//!   Each connection's `SO_PEERCRED` uid must be the owner's too.
//! * **TCP** (default `127.0.0.1:0`): loopback addresses only (others are
//!   refused). TCP carries no credentials, so each connection's uid is
//!   looked up in the kernel's socket table (`/proc/net/tcp`, `tcp6`): the
//!   row whose local address is the connection's peer and whose remote
//!   address is the listener is the connecting socket, and its `uid`
//!   column is the uid that created it. A connection whose socket is not
//!   found, or belongs to another uid, is reset. What this cannot see: a
//!   socket the owner passed to another process (it is still the
//!   owner's), and processes in another network namespace (they cannot
//!   reach this loopback anyway).
//!
//! **Invariant:** no accepted connection reaches a link before its uid
//! was checked against the owner's.

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::either::Either;

use crate::broker::error::BrokerError;

/// Where a forward listens, as given (`--listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// Parses `--listen`: empty for `127.0.0.1:0`, `unix:/ABSOLUTE/PATH`,
    /// or a loopback `ADDRESS:PORT` (port 0 picks one).
    pub fn parse(text: &str) -> Result<Self, BrokerError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))));
        }
        if let Some(path) = text.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(BrokerError::InvalidArgument(format!(
                    "--listen unix:PATH needs an absolute path to a socket, not {path:?}"
                )));
            }
            return Ok(Self::Unix(path));
        }
        let addr: SocketAddr = text.parse().map_err(|_| {
            BrokerError::InvalidArgument(format!(
                "--listen {text:?}: give ADDRESS:PORT (e.g. 127.0.0.1:0) or unix:PATH"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(BrokerError::InvalidArgument(format!(
                "--listen {addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed, \
                 so only this host's users can reach a forward; use a Unix socket to \
                 restrict it to you alone"
            )));
        }
        Ok(Self::Tcp(addr))
    }
}

/// A bound local listener owned by uid `owner`.
pub struct LocalListener {
    kind: Kind,
    owner: u32,
}

enum Kind {
    Tcp {
        listener: TcpListener,
        addr: SocketAddr,
    },
    Unix {
        listener: UnixListener,
        /// The socket's directory, held so the socket is removed from the
        /// same directory it was made in.
        dir: OwnedFd,
        name: OsString,
        path: PathBuf,
    },
}

/// An accepted local connection: TCP (left) or a Unix socket (right).
pub type LocalStream = Either<TcpStream, UnixStream>;

impl LocalListener {
    /// Binds `listen` for `owner` (see the module docs for the checks).
    pub async fn bind(listen: &Listen, owner: u32) -> Result<Self, BrokerError> {
        let kind = match listen {
            Listen::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    BrokerError::InvalidArgument(format!("cannot listen on {addr}: {e}"))
                })?;
                let addr = listener.local_addr().map_err(io_internal)?;
                Kind::Tcp { listener, addr }
            }
            Listen::Unix(path) => bind_unix(path, owner)?,
        };
        Ok(Self { kind, owner })
    }

    /// The bound address: `127.0.0.1:PORT`, or `unix:PATH`.
    pub fn address(&self) -> String {
        match &self.kind {
            Kind::Tcp { addr, .. } => addr.to_string(),
            Kind::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }

    /// The bound TCP port (0 for a Unix socket).
    pub fn port(&self) -> u16 {
        match &self.kind {
            Kind::Tcp { addr, .. } => addr.port(),
            Kind::Unix { .. } => 0,
        }
    }

    /// The next connection, and whether it comes from the owner's uid.
    pub async fn accept(&self) -> io::Result<(LocalStream, Result<(), String>)> {
        match &self.kind {
            Kind::Tcp { listener, addr } => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let check = match tcp_owner(peer, *addr) {
                    Some(uid) if uid == self.owner => Ok(()),
                    Some(uid) => Err(format!("uid {uid} is not the forward's owner")),
                    None => Err(format!("no socket of {peer} found to check its uid")),
                };
                Ok((Either::Left(stream), check))
            }
            Kind::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                let check = match stream.peer_cred() {
                    Ok(cred) if cred.uid() == self.owner => Ok(()),
                    Ok(cred) => Err(format!("uid {} is not the forward's owner", cred.uid())),
                    Err(e) => Err(format!("no peer credentials: {e}")),
                };
                Ok((Either::Right(stream), check))
            }
        }
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let Kind::Unix { dir, name, .. } = &self.kind {
            let _ = nix::unistd::unlinkat(
                dir,
                name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

fn io_internal(e: io::Error) -> BrokerError {
    BrokerError::Internal(e.to_string())
}

fn bind_unix(path: &Path, owner: u32) -> Result<Kind, BrokerError> {
    let refused = |why: String| {
        BrokerError::InvalidArgument(format!("cannot listen on unix:{}: {why}", path.display()))
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(refused("not a path to a file".into()));
    };
    let dir = nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refused(format!("its directory cannot be opened ({e})")))?;
    let stat = nix::sys::stat::fstat(&dir).map_err(|e| refused(e.to_string()))?;
    if stat.st_uid != owner {
        return Err(refused(format!(
            "its directory belongs to uid {}, not to you (uid {owner})",
            stat.st_uid
        )));
    }
    // Bound through the directory's descriptor: the directory checked is
    // the one the socket is made in.
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let socket = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| BrokerError::Internal(e.to_string()))?;
    // Linux gives the socket file the socket's own mode (less the umask),
    // so it is 0600 from the moment it exists.
    nix::sys::stat::fchmod(&socket, Mode::from_bits_truncate(0o600))
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let addr = UnixAddr::new(via_fd.as_os_str().as_bytes()).map_err(|e| refused(e.to_string()))?;
    nix::sys::socket::bind(socket.as_raw_fd(), &addr).map_err(|e| match e {
        nix::errno::Errno::EADDRINUSE => {
            refused("it exists; remove it or pick another path".into())
        }
        e => refused(e.to_string()),
    })?;
    let unlink = || {
        let _ = nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    };
    if nix::unistd::geteuid().as_raw() != owner
        && let Err(e) = std::os::unix::fs::lchown(&via_fd, Some(owner), None)
    {
        unlink();
        return Err(refused(format!("cannot give it to uid {owner}: {e}")));
    }
    if let Err(e) =
        nix::sys::socket::listen(&socket, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
    {
        unlink();
        return Err(refused(e.to_string()));
    }
    let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(socket))
        .map_err(io_internal)?;
    Ok(Kind::Unix {
        listener,
        dir,
        name: name.to_os_string(),
        path: path.to_path_buf(),
    })
}

/// The uid owning the socket at `peer` connected to `listener` (both on
/// this host), from `/proc/net/tcp` or `tcp6`.
fn tcp_owner(peer: SocketAddr, listener: SocketAddr) -> Option<u32> {
    let table = match peer.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let text = std::fs::read_to_string(table).ok()?;
    socket_uid(&text, peer, listener)
}

/// Sans-IO: in a `/proc/net/tcp{,6}` table, the uid of the socket whose
/// local address is `local` and remote address `remote`.
pub fn socket_uid(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (l, r, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        (parse_addr(l)? == local && parse_addr(r)? == remote)
            .then(|| uid.parse().ok())
            .flatten()
    })
}

/// `HEXADDR:HEXPORT` as the kernel prints it: the address as 32-bit words
/// in the machine's byte order, the port as a number.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in addr.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            // An IPv4 client of a dual-stack socket.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Resets a local connection (TCP: RST; Unix: closed with data unread).
pub fn reset(stream: &LocalStream) {
    if let Either::Left(tcp) = stream {
        let _ = tcp.set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            Listen::parse("").unwrap(),
            Listen::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert!(Listen::parse("0.0.0.0:80").is_err(), "not loopback");
        assert!(Listen::parse("unix:relative").is_err());
        assert_eq!(
            Listen::parse("unix:/run/x.sock").unwrap(),
            Listen::Unix("/run/x.sock".into())
        );
    }

    #[test]
    fn finds_the_uid_of_a_loopback_socket() {
        let local = u32::from_ne_bytes([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {local:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
             1: {local:08X}:D431 {local:08X}:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n"
        );
        let client: SocketAddr = "127.0.0.1:54321".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(socket_uid(&table, client, server), Some(1000));
        assert_eq!(socket_uid(&table, server, client), None);
        // The real table: this test's own connection.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let uid = tcp_owner(stream.local_addr().unwrap(), listener.local_addr().unwrap());
        assert_eq!(uid, Some(nix::unistd::getuid().as_raw()));
    }
}
