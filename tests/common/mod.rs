//! Shared test harness: a real OpenSSH server, simulated devices, and the
//! `switchyard` binary. Nothing here uses fixed ports or sleeps to
//! synchronize; waits are on conditions, with deadlines.

#![allow(dead_code)]

pub mod broker;
pub mod cloud;
pub mod http;
pub mod postgres;
pub mod process;
pub mod service;
pub mod sshd;
pub mod telnetd;
pub mod tinyproxy;

use std::future::Future;
use std::time::Duration;

/// Installs the process crypto provider (idempotent).
pub fn init() {
    switchyard::tls::install_crypto_provider();
}

/// Awaits `fut`, failing the test if it takes longer than `secs`.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {secs}s"),
    }
}

/// A black-holed host: a loopback TCP listener that accepts connections
/// and never says a word. Its port, and the task holding what it accepted
/// (which runs until the test's runtime ends).
pub async fn silent_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, hold)
}

/// A server that answers one connection with `banner\n`, half-closes,
/// then reads the rest: its port, and the task that ends with what it read
/// (a device's end of file must reach a forward's caller while the caller
/// still writes).
pub async fn banner_server() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"banner\n").await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        rest
    });
    (port, server)
}

/// Reads `from` onto `screen` until `done` holds for what the screen shows
/// (lossy UTF-8): a terminal's output. Fails if the stream ends first or
/// after `secs`.
pub async fn read_screen_until(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    screen: &mut Vec<u8>,
    secs: u64,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncReadExt;
    within(secs, what, async {
        let mut buf = [0u8; 4096];
        while !done(&String::from_utf8_lossy(screen)) {
            let n = from.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "terminal ended: {:?}",
                String::from_utf8_lossy(screen)
            );
            screen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
}

/// Polls `cond` until it holds, failing after `secs`. For state that has no
/// event to wait on (a pool reaping idle connections).
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the async `probe` until it gives `Some`, failing after `secs`;
/// what it gave. For state another process changes with no event to wait
/// on (a broker's `status`).
pub async fn eventually_some<T, F: Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Set to `1` to let a run that is not root skip the checks that need root
/// (running a command as another uid). CI runs as root and never sets it.
pub const SKIP_ROOT_ENV: &str = "SWITCHYARD_TEST_SKIP_ROOT_CHECKS";

/// Whether the root-only part `what` of a test can run: true as root;
/// false when not root and [`SKIP_ROOT_ENV`] is `1` (said on stderr);
/// otherwise the test fails, saying why, rather than passing untested.
pub fn root_or_opted_out(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var(SKIP_ROOT_ENV).as_deref() == Ok("1") {
        eprintln!("skipping {what}: not root and {SKIP_ROOT_ENV}=1");
        return false;
    }
    panic!(
        "{what} needs root (CI runs the tests as root): run as root, or set \
         {SKIP_ROOT_ENV}=1 to skip it knowingly"
    );
}

/// The `switchyard` binary built for this test run.
pub fn switchyard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// The ed25519 key data of an OpenSSH public-key line, without the comment.
pub fn key_body(openssh: &str) -> String {
    openssh
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A field of `/proc/PID/status` that counts kibibytes (`VmRSS`,
/// `VmHWM`, ...), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024
}

/// A device at `127.0.0.1:port`, reached by SSH as `username` with
/// `password`, with the inventory's defaults otherwise; a test changes
/// the fields it is about with struct update syntax.
pub fn loopback_device(
    name: &str,
    port: u16,
    username: &str,
    password: &str,
) -> switchyard::service::drivers::DeviceTarget {
    switchyard::service::drivers::DeviceTarget {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        driver: switchyard::service::inventory::DriverKind::Ssh,
        credentials: switchyard::service::inventory::DeviceCredentials {
            username: Some(username.into()),
            password: Some(switchyard::secret::Secret::new(password)),
            private_key: None,
            enable_password: None,
        },
        known_host_key: None,
        legacy_algorithms: None,
        profile: Default::default(),
        jump: None,
    }
}
