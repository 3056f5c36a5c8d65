//! A real Telnet server for tests: Debian's `inetutils-telnetd`, one
//! process per accepted connection with the socket as its standard input
//! and output (inetd style), so the test owns the port-0 listener. Logins
//! go through the system's `login` as the test account
//! (`scripts/setup-test-host.sh` creates it and installs telnetd).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const TELNETD: &str = "/usr/sbin/telnetd";

/// A listening Telnet server; dropping it ends every session.
pub struct Telnetd {
    pub port: u16,
    accept: JoinHandle<()>,
    accepted: Arc<AtomicUsize>,
}

impl Drop for Telnetd {
    fn drop(&mut self) {
        // Aborting drops the children, which kill_on_drop ends.
        self.accept.abort();
    }
}

impl Telnetd {
    pub async fn start() -> Self {
        assert!(
            Path::new(TELNETD).exists(),
            "{TELNETD} is missing: run scripts/setup-test-host.sh (inetutils-telnetd)"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(listener, accepted.clone()));
        Self {
            port,
            accept,
            accepted,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, accepted: Arc<AtomicUsize>) {
    let mut children: Vec<Child> = Vec::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let std_stream = stream.into_std().unwrap();
        std_stream.set_nonblocking(false).unwrap();
        let fd: OwnedFd = std_stream.into();
        let fd2 = fd.try_clone().unwrap();
        let child = Command::new(TELNETD)
            .stdin(Stdio::from(fd))
            .stdout(Stdio::from(fd2))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn telnetd");
        children.push(child);
    }
}
