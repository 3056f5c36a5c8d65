//! Jump hosts (issue 15): a device reached through another inventory device
//! over SSH `direct-tcpip` (RFC 4254 §7.2), against two stock OpenSSH
//! servers: a jump sshd and a target sshd. The jump's own log (`LogLevel
//! DEBUG1`) shows each `direct-tcpip` open to the target's port, and its
//! accept count shows how many SSH connections reached it.

mod common;

use std::time::{Duration, Instant};

use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{init, within};
use switchyard::service::drivers::platform::Platform;
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::terminal::TerminalInput;
use switchyard::service::drivers::{DeviceProfile, DeviceTarget, DriverError};
use switchyard::service::inventory::SessionKind;

const T: Duration = Duration::from_secs(20);

/// A stock-sshd device named `name` at `port`, reached through `jump`.
fn target(name: &str, port: u16, password: &str, jump: Option<DeviceTarget>) -> DeviceTarget {
    DeviceTarget {
        profile: DeviceProfile {
            platform: Platform::Linux,
            session: SessionKind::Exec,
        },
        jump: jump.map(Box::new),
        ..common::loopback_device(name, port, TEST_USER, password)
    }
}

/// A jump sshd that logs each `direct-tcpip` request (debug1), with or
/// without TCP forwarding.
async fn jump_sshd(forwarding: bool) -> Sshd {
    let allow = if forwarding { "yes" } else { "no" };
    Sshd::start_with(10, &format!("AllowTcpForwarding {allow}\nLogLevel DEBUG1")).await
}

/// How many `direct-tcpip` opens to `port` the jump sshd logged.
fn direct_tcpip_opens(jump: &Sshd, port: u16) -> usize {
    let want = format!("target 127.0.0.1 port {port}");
    jump.log()
        .lines()
        .filter(|l| l.contains("direct") && l.contains(&want))
        .count()
}

async fn exec_one(pool: &SshPool, t: &DeviceTarget, command: &str) -> Result<String, DriverError> {
    let exec = within(40, "exec", pool.exec(t, &[command.to_string()], T)).await?;
    let out = exec.results[0]
        .outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("{}: {e}", t.name));
    Ok(out.output.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_behind_one_jump_share_one_jump_connection() {
    init();
    let jump_server = jump_sshd(true).await;
    let target_server = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let jump = target("jump-1", jump_server.port, TEST_PASSWORD, None);
    let exec_dev = target(
        "behind-exec",
        target_server.port,
        TEST_PASSWORD,
        Some(jump.clone()),
    );
    let mut shell_dev = target(
        "behind-shell",
        target_server.port,
        TEST_PASSWORD,
        Some(jump.clone()),
    );
    shell_dev.profile.session = SessionKind::Shell;

    // Exec channels and a warm shell, one device each, both behind jump-1.
    let out = exec_one(&pool, &exec_dev, "echo exec-$((6*7))")
        .await
        .unwrap_or_else(|e| panic!("{e}\njump log:\n{}", jump_server.log()));
    assert_eq!(out.trim(), "exec-42");
    let out = exec_one(&pool, &shell_dev, "echo shell-$((6*7))")
        .await
        .unwrap_or_else(|e| panic!("{e}\njump log:\n{}", jump_server.log()));
    assert!(out.contains("shell-42"), "{out:?}");
    // Again on each: warm connections, nothing new opened anywhere.
    exec_one(&pool, &exec_dev, "true").await.unwrap();
    exec_one(&pool, &shell_dev, "true").await.unwrap();
    // A terminal rides the same path.
    let (mut term, _) = within(30, "terminal", pool.terminal(&exec_dev, 80, 24))
        .await
        .unwrap();
    term.input
        .send(TerminalInput::Data(b"echo term-$((6*7))\n".to_vec()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    within(20, "terminal output", async {
        while !String::from_utf8_lossy(&seen).contains("term-42") {
            seen.extend(term.output.recv().await.expect("terminal output"));
        }
    })
    .await;
    drop(term);

    // The target was reached through the jump: its sshd logged each
    // direct-tcpip open to the target's port (one per device connection).
    assert_eq!(
        direct_tcpip_opens(&jump_server, target_server.port),
        2,
        "jump log:\n{}",
        jump_server.log()
    );
    // One SSH connection to the jump serves both devices; the target saw
    // one per device (the exec device's channels and terminal share one).
    assert_eq!(jump_server.accepted(), 1, "connections to the jump host");
    assert_eq!(target_server.accepted(), 2, "connections to the target");
    assert_eq!(pool.stats().connects, 3);
    // The jump's host key waits in the pool to be recorded (nobody asked
    // for it on the direct-tcpip lease).
    let key = pool.take_host_key("jump-1").expect("jump host key kept");
    assert_eq!(
        common::key_body(&key),
        common::key_body(&jump_server.host_public_key())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_host_without_tcp_forwarding_is_named_in_the_error() {
    init();
    let jump_server = jump_sshd(false).await;
    let target_server = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let jump = target("jump-1", jump_server.port, TEST_PASSWORD, None);
    let dev = target("behind", target_server.port, TEST_PASSWORD, Some(jump));
    let err = exec_one(&pool, &dev, "true")
        .await
        .expect_err("AllowTcpForwarding no refuses the channel");
    let text = err.to_string();
    assert!(matches!(err, DriverError::JumpRefused { .. }), "{err:?}");
    assert!(
        text.contains(&format!(
            "the jump host jump-1 refused direct-tcpip to 127.0.0.1:{} for behind",
            target_server.port
        )) && text.contains("AllowTcpForwarding"),
        "{text}"
    );
    assert_eq!(target_server.accepted(), 0, "the target was never reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_jump_credentials_are_the_jumps_error() {
    init();
    let jump_server = jump_sshd(true).await;
    let target_server = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let jump = target("jump-1", jump_server.port, "not-the-password", None);
    let dev = target("behind", target_server.port, TEST_PASSWORD, Some(jump));
    let err = exec_one(&pool, &dev, "true")
        .await
        .expect_err("the jump refuses the login");
    let text = err.to_string();
    assert!(
        matches!(&err, DriverError::Jump { jump, device, .. } if jump == "jump-1" && device == "behind"),
        "{err:?}"
    );
    assert!(
        text.contains("through the jump host jump-1")
            && text.contains("authentication to jump-1")
            && text.contains("check the device's credentials"),
        "{text}"
    );
    assert_eq!(target_server.accepted(), 0, "the target was never reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_jump_host_ends_within_the_connect_timeout() {
    init();
    // A jump "host" that accepts TCP and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let target_server = Sshd::start(10).await;
    let connect_timeout = Duration::from_secs(2);
    let pool = SshPool::new(SshDriverConfig {
        connect_timeout,
        ..SshDriverConfig::default()
    });
    let jump = target("jump-1", silent_port, TEST_PASSWORD, None);
    let dev = target("behind", target_server.port, TEST_PASSWORD, Some(jump));
    let started = Instant::now();
    let err = exec_one(&pool, &dev, "true")
        .await
        .expect_err("a silent jump host");
    let took = started.elapsed();
    // The connect (jump connect + channel open + target handshake) has
    // one connect_timeout; generous slack for a loaded machine.
    assert!(
        took < connect_timeout + Duration::from_secs(3),
        "took {took:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("jump-1") && text.contains("behind"),
        "the error names both: {text}"
    );
}
