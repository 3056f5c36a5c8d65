//! The front-door Unix socket: created with mode 0660 from the start,
//! replacing a stale file only after a failed connect proves no broker is
//! alive there.

use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another broker is already serving {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; remove it or choose another --socket")]
    NotASocket(PathBuf),
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The default socket path: `$XDG_RUNTIME_DIR/switchyard/broker.sock`, else
/// `/run/switchyard/broker.sock` for root, else
/// `$TMPDIR/switchyard-UID/broker.sock` (`/tmp` when `$TMPDIR` is unset).
pub fn default_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("switchyard").join("broker.sock");
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/run/switchyard/broker.sock");
    }
    std::env::temp_dir()
        .join(format!("switchyard-{}", nix::unistd::Uid::effective()))
        .join("broker.sock")
}

/// The one rule every command (the broker included) uses for the socket:
/// `--socket` (`explicit`), else `$SWITCHYARD_SOCKET`, else the config's
/// `broker.socket` (`configured`), else [`default_path`].
pub fn resolve(explicit: Option<&Path>, configured: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("SWITCHYARD_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| configured.map(Path::to_path_buf))
        .unwrap_or_else(default_path)
}

/// The longest path a Unix socket address holds: `sun_path` is 108 bytes,
/// one of them the terminating NUL (unix(7)).
pub const MAX_PATH_BYTES: usize = 107;

/// Why a client could not reach the broker at a socket path: what is wrong
/// with the path itself, or that nobody listens there. Each message names
/// the path and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectProblem {
    #[error(
        "the broker is not running at {}; start it with `{}`",
        path.display(), start_command(path)
    )]
    NotRunning { path: PathBuf },
    #[error(
        "the socket path {} is {len} bytes long; a Unix socket path holds at most \
         {MAX_PATH_BYTES}: choose a shorter --socket PATH",
        path.display()
    )]
    TooLong { path: PathBuf, len: usize },
    #[error(
        "{} is a directory, not the broker's socket; name the socket itself, e.g. \
         --socket {}",
        path.display(), path.join("broker.sock").display()
    )]
    Directory { path: PathBuf },
    #[error(
        "{} is not a socket (it is a {kind}); --socket PATH must name the socket the \
         broker listens on",
        path.display()
    )]
    NotASocket { path: PathBuf, kind: &'static str },
    #[error(
        "permission denied opening {}: this user may not use that broker (the socket's \
         group is broker.socket_group; join it, or run your own broker with `{}`)",
        path.display(), start_command(path)
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot connect to the broker at {}: {source}", path.display())]
    Other {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `switchyard broker`, with `--socket PATH` when `path` is not the default.
fn start_command(path: &Path) -> String {
    if path == default_path() {
        "switchyard broker".into()
    } else {
        format!("switchyard --socket {} broker", path.display())
    }
}

/// Finds out why connecting to `path` failed (called after a failed
/// connect; it looks at the path and tries one plain connect).
pub fn diagnose(path: &Path) -> ConnectProblem {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    let path_buf = path.to_path_buf();
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_PATH_BYTES {
        return ConnectProblem::TooLong {
            path: path_buf,
            len,
        };
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ConnectProblem::NotRunning { path: path_buf };
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return ConnectProblem::PermissionDenied { path: path_buf };
        }
        Err(source) => {
            return ConnectProblem::Other {
                path: path_buf,
                source,
            };
        }
    };
    let file_type = meta.file_type();
    if file_type.is_dir() {
        return ConnectProblem::Directory { path: path_buf };
    }
    if !file_type.is_socket() {
        let kind = if file_type.is_file() {
            "regular file"
        } else if file_type.is_fifo() {
            "named pipe"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "device"
        } else {
            "special file"
        };
        return ConnectProblem::NotASocket {
            path: path_buf,
            kind,
        };
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            ConnectProblem::PermissionDenied { path: path_buf }
        }
        // A socket file nobody listens on: a broker that did not clean up.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ConnectProblem::NotRunning { path: path_buf }
        }
        Err(source) => ConnectProblem::Other {
            path: path_buf,
            source,
        },
        // It answers now (a broker that was starting); say so plainly.
        Ok(_) => ConnectProblem::Other {
            path: path_buf,
            source: std::io::Error::other("the broker did not answer; try again"),
        },
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the socket with mode 0660 (and `group`, if given).
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, SocketError> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent() {
        crate::fsutil::create_dir_all_with_mode(dir, 0o750).map_err(io(dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket(path.to_path_buf()));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            info!(socket = %path.display(), "replacing stale socket");
            std::fs::remove_file(path).map_err(io(path))?;
        }
        Err(_) => {}
    }
    // The umask makes the socket 0660 at creation: there is no window in
    // which other users could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(io(path))?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| io(path)(std::io::Error::from(e)))?;
    }
    Ok(listener)
}

/// The front-door socket passed by systemd socket activation
/// (`LISTEN_FDS`), if any. Such a socket belongs to systemd: it is never
/// unlinked or shut down by the broker.
pub fn inherited() -> Result<Option<UnixListener>, SocketError> {
    use std::os::fd::FromRawFd;
    let inherited = PathBuf::from("<systemd socket>");
    let fds = match sd_notify::listen_fds() {
        Ok(fds) => fds,
        Err(_) => return Ok(None),
    };
    let Some(fd) = fds.into_iter().next() else {
        return Ok(None);
    };
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID matched),
    // and nothing else in the process owns it.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    std_listener.set_nonblocking(true).map_err(io(&inherited))?;
    let listener = UnixListener::from_std(std_listener).map_err(io(&inherited))?;
    info!("using the front-door socket passed by systemd");
    Ok(Some(listener))
}

/// Removes the socket file (at shutdown).
pub fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
