//! A real OpenSSH server for tests, one `sshd -i` per accepted connection.
//!
//! Inetd mode lets the test own the listening socket (bound to port 0), so
//! there is no race for a free port; each connection gets a genuine sshd
//! process. `scripts/setup-test-host.sh` creates the account used here.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

pub const TEST_USER: &str = "switchyard-test";
pub const TEST_PASSWORD: &str = "switchyard-test-password";
const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    dir: tempfile::TempDir,
    accept: JoinHandle<()>,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Aborting drops the accept task's children, which kill_on_drop ends.
        self.accept.abort();
    }
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "switchyard-test",
            "-f",
        ])
        .arg(path)
        .status()
        .expect("ssh-keygen must be installed (scripts/setup-test-host.sh)");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts a server allowing `max_sessions` channels per connection.
    pub async fn start(max_sessions: u32) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run scripts/setup-test-host.sh"
        );
        let ok = std::process::Command::new("id")
            .arg(TEST_USER)
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "user {TEST_USER} is missing: run scripts/setup-test-host.sh"
        );
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");

        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // sshd reads authorized_keys as the target user: let it traverse.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let config = format!(
            "HostKey {d}/host_key\n\
             PidFile none\n\
             UsePAM no\n\
             PasswordAuthentication yes\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             MaxSessions {max_sessions}\n\
             SetEnv HOME={d}\n\
             LogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // Check the config once up front so a bad one fails clearly.
        let check = std::process::Command::new(SSHD)
            .args(["-t", "-f"])
            .arg(d.join("sshd_config"))
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "sshd -t failed: {}",
            String::from_utf8_lossy(&check.stderr)
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config_path = d.join("sshd_config");
        let log_path = d.join("sshd.log");
        let accept = tokio::spawn(accept_loop(listener, config_path, log_path));
        Self { port, dir, accept }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The server's host public key (OpenSSH form).
    pub fn host_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap()
    }

    /// A private key the server accepts for TEST_USER.
    pub fn client_private_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key")).unwrap()
    }

    /// What the sshd processes logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

async fn accept_loop(listener: TcpListener, config: PathBuf, log: PathBuf) {
    let mut children: Vec<Child> = Vec::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let std_stream = stream.into_std().unwrap();
        std_stream.set_nonblocking(false).unwrap();
        let fd: OwnedFd = std_stream.into();
        let fd2 = fd.try_clone().unwrap();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(SSHD)
            .args(["-i", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::from(fd))
            .stdout(Stdio::from(fd2))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sshd -i");
        children.push(child);
    }
}
