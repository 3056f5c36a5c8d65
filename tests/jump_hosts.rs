//! Jump hosts (issue 15): a device reached through another inventory device
//! over SSH `direct-tcpip` (RFC 4254 §7.2), against two stock OpenSSH
//! servers: a jump sshd and a target sshd. The jump's own log (`LogLevel
//! DEBUG1`) shows each `direct-tcpip` open to the target's port, and its
//! accept count shows how many SSH connections reached it.
//!
//! Forwards and SOCKS5 proxies to a device behind a jump host (issue 16):
//! the device's port is opened as a `direct-tcpip` channel on the jump's
//! pooled connection, over a direct link and an integrated one, with real
//! `curl` and `python3 -m http.server`.

mod common;

use std::time::{Duration, Instant};

use common::broker::{TestBroker, status};
use common::http::{ServedPage, curl};
use common::service::{ADMIN_PASSWORD, make_inventory, sshd_device, start_service};
use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{init, within};
use switchyard::secret::Secret;
use switchyard::service::drivers::Drivers;
use switchyard::service::drivers::platform::Platform;
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::terminal::TerminalInput;
use switchyard::service::drivers::{DeviceProfile, DeviceTarget, DriverError};
use switchyard::service::inventory::SessionKind;
use switchyard::service::inventory::{DeviceScope, ForwardPorts, Inventory};
use switchyard::service::ops::{Principal, ServiceOps};
use switchyard::service::rpc::RpcConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::either::Either;

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
    // A forward's tunnel to a port behind the jump (here the target's SSH
    // port: its banner) rides the same jump connection.
    let mut tunnel = within(
        30,
        "tunnel",
        pool.open_tunnel(&jump, ("127.0.0.1", target_server.port), "behind-exec", T),
    )
    .await
    .unwrap();
    let mut banner = [0u8; 8];
    within(20, "banner", tunnel.read_exact(&mut banner))
        .await
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    drop(tunnel);

    // The target was reached through the jump: its sshd logged each
    // direct-tcpip open to the target's port (one per device connection,
    // one for the tunnel).
    assert_eq!(
        direct_tcpip_opens(&jump_server, target_server.port),
        3,
        "jump log:\n{}",
        jump_server.log()
    );
    // One SSH connection to the jump serves both devices and the tunnel;
    // the target saw one per device (the exec device's channels and
    // terminal share one) and the tunnel's.
    assert_eq!(jump_server.accepted(), 1, "connections to the jump host");
    assert_eq!(target_server.accepted(), 3, "connections to the target");
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
    let (silent_port, _hold) = common::silent_listener().await;
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

// ---------------------------------------------------------------------
// Forwards and SOCKS5 to a device behind a jump host (issue 16).
// ---------------------------------------------------------------------

/// Makes `behind` a device reached through `jump-1` whose only
/// forwardable port is `port` (its own SSH port, 1, is never used).
fn put_behind_jump(inv: &mut Inventory, port: u16) {
    inv.set_jump_host("behind", Some("jump-1")).unwrap();
    inv.set_forward_ports("behind", &ForwardPorts::Listed(vec![port]))
        .unwrap();
}

/// The jump device (at `jump_port`) and the device behind it, as added.
fn jump_devices(jump_port: u16) -> [switchyard::service::inventory::NewDevice; 2] {
    [sshd_device("jump-1", jump_port), sshd_device("behind", 1)]
}

fn open_inventory(path: &std::path::Path) -> Inventory {
    Inventory::open(path, &Secret::new(ADMIN_PASSWORD)).unwrap()
}

/// Through service `lab` of `broker`: `forward start` to `behind`'s web
/// port (serving `web`, its web UI) and curl the page, then a SOCKS5 proxy
/// and curl it by the device's name; both went through the jump's one SSH
/// connection.
async fn fetch_through_forward_and_socks(web: &ServedPage, broker: &TestBroker, jump: &Sshd) {
    let port = web.http.port.to_string();
    let out = cli(broker, &["forward", "start", "lab", "behind", &port]).await;
    assert!(out.status.success(), "{out:?}");
    let addr = bound_address(&out);
    let got = curl(&[&format!("http://{addr}/page.bin")]).await;
    web.assert_served(&got, &format!("jump log:\n{}", jump.log()));

    let out = cli(
        broker,
        &["socks-proxy", "start", "lab", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let proxy = bound_address(&out);
    let url = format!("http://behind:{port}/page.bin");
    let got = curl(&["--socks5-hostname", &proxy, &url]).await;
    web.assert_served(&got, &format!("jump log:\n{}", jump.log()));

    // Each connection was a direct-tcpip channel the jump opened to the
    // web port, all on one SSH connection to the jump.
    assert_eq!(
        direct_tcpip_opens(jump, web.http.port),
        2,
        "jump log:\n{}",
        jump.log()
    );
    assert_eq!(jump.accepted(), 1, "connections to the jump host");
}

async fn cli(broker: &TestBroker, args: &[&str]) -> std::process::Output {
    within(30, "switchyard", broker.command().args(args).output())
        .await
        .unwrap()
}

/// The address in `ID  ADDRESS` (what `forward start` prints).
fn bound_address(out: &std::process::Output) -> String {
    let line = String::from_utf8(out.stdout.clone()).unwrap();
    let (_, addr) = line.trim().split_once("  ").expect("ID  ADDRESS");
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_and_a_socks_proxy_reach_a_device_behind_a_jump_on_its_one_connection() {
    init();
    let jump_server = jump_sshd(true).await;
    let web = ServedPage::start().await;
    let svc = start_service(&jump_devices(jump_server.port), RpcConfig::default());
    put_behind_jump(
        &mut open_inventory(&svc.dir.path().join("inv.db")),
        web.http.port,
    );
    let broker = TestBroker::start(&[]).await;
    let out = broker.connect_direct(&svc, "lab", &[]).await;
    assert!(out.status.success(), "{out:?}");

    fetch_through_forward_and_socks(&web, &broker, &jump_server).await;
    // The jump's host key, first seen by a forward, was recorded.
    let inv = open_inventory(&svc.dir.path().join("inv.db"));
    let key = inv.device("jump-1").unwrap().host_key.expect("recorded");
    assert_eq!(
        common::key_body(&key),
        common::key_body(&jump_server.host_public_key())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrated_forward_reaches_a_device_behind_a_jump() {
    init();
    let jump_server = jump_sshd(true).await;
    let web = ServedPage::start().await;
    let broker = TestBroker::start(&[]).await;
    let db = broker.dir.path().join("lab-inv.db");
    put_behind_jump(
        &mut make_inventory(&db, &jump_devices(jump_server.port)),
        web.http.port,
    );
    let pw = broker.dir.path().join("admin-pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let db_arg = db.to_str().unwrap();
    let pw_arg = pw.to_str().unwrap();
    let out = cli(
        &broker,
        &[
            "connect",
            "integrated",
            "lab",
            "--db",
            db_arg,
            "--admin-password-file",
            pw_arg,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");

    fetch_through_forward_and_socks(&web, &broker, &jump_server).await;
    let s = status(&broker).await;
    assert_eq!(s.links[0].transport, "integrated", "{:?}", s.links);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_through_a_jump_without_tcp_forwarding_names_the_jump_and_the_setting() {
    init();
    let jump_server = jump_sshd(false).await;
    // The device's web port: never reached.
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    web.set_nonblocking(true).unwrap();
    let web_port = web.local_addr().unwrap().port();
    let svc = start_service(&jump_devices(jump_server.port), RpcConfig::default());
    put_behind_jump(
        &mut open_inventory(&svc.dir.path().join("inv.db")),
        web_port,
    );
    let broker = TestBroker::start(&[]).await;
    let out = broker.connect_direct(&svc, "lab", &[]).await;
    assert!(out.status.success(), "{out:?}");

    let port = web_port.to_string();
    let out = cli(&broker, &["forward", "start", "lab", "behind", &port]).await;
    assert!(out.status.success(), "{out:?}");
    let addr = bound_address(&out);
    // The connection is reset (or closed) without a byte...
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut got = Vec::new();
    let read = within(
        30,
        "the refused connection ends",
        conn.read_to_end(&mut got),
    )
    .await;
    assert!(read.is_err() || got.is_empty(), "{read:?} {got:?}");
    // ...and the forward says why: the jump, the device and the setting.
    let error = common::eventually_some(20, "the forward's last error", || async {
        let out = cli(&broker, &["forward", "list", "--json"]).await;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let error = list[0]["last_error"].as_str()?.to_string();
        (!error.is_empty()).then_some(error)
    })
    .await;
    assert!(
        error.contains(&format!(
            "the jump host jump-1 refused direct-tcpip to 127.0.0.1:{web_port} for behind"
        )) && error.contains("AllowTcpForwarding"),
        "{error}"
    );
    // Through the SOCKS5 proxy the jump's policy refusal is reply 02,
    // "connection not allowed by ruleset" (RFC 1928 §6), not 05.
    let out = cli(
        &broker,
        &["socks-proxy", "start", "lab", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let proxy = bound_address(&out);
    assert_eq!(socks_reply(&proxy, "behind", web_port).await, 2);
    assert!(
        matches!(web.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the device's port was reached"
    );
}

/// A SOCKS5 CONNECT (no authentication) to `device:port` through the
/// proxy at `proxy`; the reply's REP code (RFC 1928 §6).
async fn socks_reply(proxy: &str, device: &str, port: u16) -> u8 {
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    within(30, "the SOCKS5 reply", async {
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut method = [0u8; 2];
        s.read_exact(&mut method).await.unwrap();
        assert_eq!(method, [5, 0]);
        let mut msg = vec![5, 1, 0, 3, device.len() as u8];
        msg.extend_from_slice(device.as_bytes());
        msg.extend_from_slice(&port.to_be_bytes());
        s.write_all(&msg).await.unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        reply[1]
    })
    .await
}

/// A service library over an inventory holding `jump-1` (at `jump_port`)
/// and `behind` (only `port` forwardable), and a caller who may use every
/// device.
fn ops_behind_jump(
    dir: &std::path::Path,
    jump_port: u16,
    port: u16,
    config: SshDriverConfig,
) -> (std::sync::Arc<ServiceOps>, Principal) {
    let mut inv = make_inventory(&dir.join("inv.db"), &jump_devices(jump_port));
    put_behind_jump(&mut inv, port);
    let ops = ServiceOps::new("jump-test", inv, Drivers::new(config));
    let alice = Principal {
        user: "alice".into(),
        scope: DeviceScope::all(),
    };
    (ops, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_backed_forward_passes_half_closes_both_ways() {
    init();
    let jump_server = jump_sshd(true).await;
    // An echo server: what it is sent, back, then its own end of file once
    // the sender's came.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (ops, alice) = ops_behind_jump(
        dir.path(),
        jump_server.port,
        echo_port,
        SshDriverConfig::default(),
    );
    let server = tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let stream = within(
        30,
        "open",
        ops.open_forward(&alice, "behind", echo_port, None),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\njump log:\n{}", jump_server.log()));
    let Either::Right(tunnel) = stream else {
        panic!("a device behind a jump is reached through it, not by TCP")
    };
    // More than the channel's windows, so back-pressure is met on the way.
    let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(tunnel);
    let send = async {
        w.write_all(&data).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let (sent, read) = within(120, "echo through the jump", async {
        tokio::join!(send, r.read_to_end(&mut back))
    })
    .await;
    sent.unwrap();
    read.unwrap();
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    within(10, "the echo server ends", server).await.unwrap();

    // The device's end of file reaches the caller while the caller still
    // writes: a server that answers, half-closes, then reads the rest.
    let (port, server) = common::banner_server().await;
    open_inventory(&dir.path().join("inv.db"))
        .set_forward_ports("behind", &ForwardPorts::Listed(vec![port]))
        .unwrap();
    let stream = within(30, "open", ops.open_forward(&alice, "behind", port, None))
        .await
        .unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let mut banner = Vec::new();
    within(10, "banner and EOF", r.read_to_end(&mut banner))
        .await
        .unwrap();
    assert_eq!(banner, b"banner\n");
    w.write_all(b"still talking").await.unwrap();
    w.shutdown().await.unwrap();
    let rest = within(10, "the server reads", server).await.unwrap();
    assert_eq!(rest, b"still talking", "the caller's half still flowed");
    assert_eq!(jump_server.accepted(), 1, "connections to the jump host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_through_a_silent_jump_ends_by_its_deadline() {
    init();
    // A jump "host" that accepts TCP and never says a word.
    let (silent_port, _hold) = common::silent_listener().await;
    let dir = tempfile::tempdir().unwrap();
    // The pool's own connect timeout is longer than the caller's deadline.
    let (ops, alice) = ops_behind_jump(dir.path(), silent_port, 8080, SshDriverConfig::default());
    let deadline = Duration::from_secs(2);
    let started = Instant::now();
    let err = within(
        30,
        "open",
        ops.open_forward(&alice, "behind", 8080, Some(deadline)),
    )
    .await
    .err()
    .expect("a silent jump host");
    let took = started.elapsed();
    assert!(took < deadline + Duration::from_secs(3), "took {took:?}");
    let text = err.to_string();
    assert!(
        text.contains("port 8080 of device behind") && text.contains("jump host jump-1"),
        "{text}"
    );
    assert_eq!(
        err.code(),
        switchyard::wire::messages::ErrorCode::DeadlineExceeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_the_jump_cannot_reach_fails_alone_and_keeps_the_jump_connection() {
    init();
    let jump_server = jump_sshd(true).await;
    // A port whose connects hang: a listener with a full accept queue
    // (backlog 0, one connection queued, never accepted).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hanging = socket.listen(0).unwrap();
    let hanging_port = hanging.local_addr().unwrap().port();
    let _queued = tokio::net::TcpStream::connect(("127.0.0.1", hanging_port))
        .await
        .unwrap();
    // And a port that answers.
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_port = web.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (ops, alice) = ops_behind_jump(
        dir.path(),
        jump_server.port,
        web_port,
        SshDriverConfig::default(),
    );
    open_inventory(&dir.path().join("inv.db"))
        .set_forward_ports(
            "behind",
            &ForwardPorts::Listed(vec![web_port, hanging_port]),
        )
        .unwrap();
    let first = within(
        30,
        "open",
        ops.open_forward(&alice, "behind", web_port, None),
    )
    .await
    .unwrap();
    let (first_conn, _) = within(10, "accept", web.accept()).await.unwrap();
    drop((first, first_conn));

    let deadline = Duration::from_secs(2);
    let err = within(
        30,
        "open",
        ops.open_forward(&alice, "behind", hanging_port, Some(deadline)),
    )
    .await
    .err()
    .expect("the jump cannot connect there");
    // The jump's connection, shared by everything behind it, is still the
    // one: the next forward rides it.
    let mut again = within(
        30,
        "open",
        ops.open_forward(&alice, "behind", web_port, None),
    )
    .await
    .unwrap();
    let (mut conn, _) = within(10, "accept", web.accept()).await.unwrap();
    conn.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    within(10, "read", again.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"hello");
    assert_eq!(jump_server.accepted(), 1, "connections to the jump host");
    // The error names the jump and the port it could not open.
    let text = err.to_string();
    assert!(
        text.contains("jump-1") && text.contains(&hanging_port.to_string()),
        "{text}"
    );
    assert_eq!(
        err.code(),
        switchyard::wire::messages::ErrorCode::DeadlineExceeded
    );
}
