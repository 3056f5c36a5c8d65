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
/// `/run/switchyard/broker.sock` for root, else under the temp directory.
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

/// The socket clients should use: `--socket`, else `$SWITCHYARD_SOCKET`,
/// else the default.
pub fn client_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os("SWITCHYARD_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_path)
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
