//! Hands a command the lean `switchyard` binary does not run itself to
//! `switchyardd`, installed next to it.
//!
//! The hand-off is an `exec`: the process keeps its pid, so a service
//! manager's notify socket, a parent's child handle and signals still reach
//! the program that does the work.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// The binary that runs every command, daemons included.
pub const FULL_BINARY: &str = "switchyardd";

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot find this program's own path: {0}")]
    OwnPath(std::io::Error),
    #[error(
        "cannot run {}: {source}; the daemon and admin commands of `switchyard` run \
         `{FULL_BINARY}`, which must be installed next to `switchyard`",
        path.display()
    )]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Replaces this process with `switchyardd`, given the same arguments and
/// the same `argv[0]` (so `ps` and logs show the command that was started).
/// Returns only when that fails.
pub fn exec_full_binary() -> HandoffError {
    let path = match std::env::current_exe() {
        Ok(own) => own.with_file_name(FULL_BINARY),
        Err(e) => return HandoffError::OwnPath(e),
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("switchyard"));
    let source = std::process::Command::new(&path)
        .arg0(arg0)
        .args(args)
        .exec();
    HandoffError::Exec { path, source }
}
