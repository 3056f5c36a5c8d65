//! A real OpenSSH server for tests, one `sshd -i` per accepted connection.
//!
//! Inetd mode lets the test own the listening socket (bound to port 0), so
//! there is no race for a free port; each connection gets a genuine sshd
//! process. `scripts/setup-test-host.sh` creates the account used here.
//! [`Sshd::start_daemon`] runs a listening `sshd -D` instead, for settings
//! only the listener enforces (`MaxStartups`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

pub const TEST_USER: &str = "switchyard-test";
pub const TEST_PASSWORD: &str = "switchyard-test-password";
const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Server,
    accepted: Arc<AtomicUsize>,
}

enum Server {
    /// Our accept loop, one `sshd -i` per connection.
    Inetd(JoinHandle<()>),
    /// A listening `sshd -D` (killed on drop).
    Daemon(Child),
}

impl Drop for Sshd {
    fn drop(&mut self) {
        match &mut self.server {
            // Aborting drops the accept task's children, which kill_on_drop ends.
            Server::Inetd(accept) => accept.abort(),
            Server::Daemon(child) => {
                let _ = child.start_kill();
            }
        }
    }
}

fn keygen(path: &Path, kind: &str) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "switchyard-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen must be installed (scripts/setup-test-host.sh)");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Starts a server allowing `max_sessions` channels per connection.
    pub async fn start(max_sessions: u32) -> Self {
        Self::start_with(max_sessions, "").await
    }

    /// Like [`Sshd::start`], with `extra` sshd_config lines that take
    /// precedence over the defaults here (sshd keeps the first value it
    /// reads), e.g. `KexAlgorithms diffie-hellman-group14-sha1` or
    /// `UsePAM yes`. When `extra` sets `HostKeyAlgorithms` to RSA ones
    /// (`ssh-rsa`, `rsa-sha2-*`), an RSA host key is added (the default one
    /// is Ed25519).
    pub async fn start_with(max_sessions: u32, extra: &str) -> Self {
        let dir = prepare(max_sessions, extra);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config_path = dir.path().join("sshd_config");
        let log_path = dir.path().join("sshd.log");
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(accept_loop(
            listener,
            config_path,
            log_path,
            accepted.clone(),
        ));
        Self {
            port,
            dir,
            server: Server::Inetd(accept),
            accepted,
        }
    }

    /// Starts a listening `sshd -D` with `extra` config lines (e.g.
    /// `MaxStartups 2`). sshd cannot take a port-0 socket from us, so a port
    /// the kernel just handed out is used, and another one if sshd cannot
    /// bind it. Readiness is read from `/proc/net/tcp` (a probe connection
    /// would itself count against `MaxStartups`).
    pub async fn start_daemon(max_sessions: u32, extra: &str) -> Self {
        let dir = prepare(max_sessions, extra);
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("sshd.log"))
                .unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(dir.path().join("sshd_config"))
                .arg("-o")
                .arg(format!("ListenAddress=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .expect("spawn sshd -D");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if listening(port) {
                    return Self {
                        port,
                        dir,
                        server: Server::Daemon(child),
                        accepted: Arc::new(AtomicUsize::new(0)),
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // lost the port to someone else: try another
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "sshd -D did not listen within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let log = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd -D could not bind a port in 5 tries:\n{log}");
    }

    /// TCP connections accepted so far (inetd mode only; the device side's
    /// count, not the client's).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A directory the test user may write (for commands that leave
    /// evidence on the device side, such as their pid).
    pub fn scratch(&self) -> PathBuf {
        let d = self.dir.path().join("scratch");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        d
    }
}

/// Whether something listens on 127.0.0.1:`port` (from `/proc/net/tcp`).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&want.as_str()) && fields.get(3) == Some(&"0A")
        })
}

/// Host and client keys plus an sshd_config in a fresh directory.
fn prepare(max_sessions: u32, extra: &str) -> tempfile::TempDir {
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
    keygen(&d.join("host_key"), "ed25519");
    keygen(&d.join("client_key"), "ed25519");
    let rsa_host_key = if extra.contains("HostKeyAlgorithms") && extra.contains("rsa") {
        keygen(&d.join("rsa_host_key"), "rsa");
        format!("HostKey {}/rsa_host_key\n", d.display())
    } else {
        String::new()
    };
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    let config = format!(
        "{extra}\n\
         {rsa_host_key}\
         HostKey {d}/host_key\n\
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

    dir
}

impl Sshd {
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

async fn accept_loop(
    listener: TcpListener,
    config: PathBuf,
    log: PathBuf,
    accepted: Arc<AtomicUsize>,
) {
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

/// A device-side command that records its shell's pid in `pid_file`, then
/// prints a line every 0.1 s for ever: it stops only when its channel is
/// closed (its next write fails) or it is signalled.
pub fn endless_command(pid_file: &Path) -> String {
    format!(
        "echo $$ > {}; while echo x; do sleep 0.1; done",
        pid_file.display()
    )
}

/// The pid an [`endless_command`] wrote, once the whole line is there.
pub fn read_pid(pid_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    text.strip_suffix('\n')?.trim().parse().ok()
}

/// Whether process `pid` still runs (exists and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
