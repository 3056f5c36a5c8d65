//! Running under systemd: readiness and watchdog notifications, socket
//! activation, and draining on SIGTERM. The test plays systemd.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::broker::{Metrics, direct, named, run_exec};
use common::service::{ALICE_PASSWORD, ssh_device, start_service};
use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{switchyard_bin, within};
use switchyard::api::pb;
use switchyard::service::rpc::RpcConfig;
use tonic::Code;

/// Whether the front door answers a health check within `secs`.
fn health_ok(socket: &std::path::Path, secs: u64) -> bool {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let check = async {
                    let Ok(ch) = switchyard::api::client::channel(&socket).await else {
                        return false;
                    };
                    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
                    h.check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
                };
                tokio::time::timeout(Duration::from_secs(secs), check)
                    .await
                    .unwrap_or(false)
            })
    })
    .join()
    .unwrap()
}

/// Fills the receive queue of the datagram socket at `path`, so that the
/// next blocking sender blocks until the test reads. Returns how many
/// filler datagrams (`FILL`) were queued. A fresh sender whose first send
/// would block proves the queue (not a sender's buffer) is full.
fn fill_queue(path: &std::path::Path) -> usize {
    let mut queued = 0;
    for _ in 0..10_000 {
        let sender = UnixDatagram::unbound().unwrap();
        sender.set_nonblocking(true).unwrap();
        let mut this = 0;
        loop {
            match sender.send_to(b"FILL", path) {
                Ok(_) => this += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("cannot fill the notify socket: {e}"),
            }
        }
        queued += this;
        if this == 0 {
            return queued;
        }
    }
    panic!("the notify socket's queue never filled");
}

/// Whether `pid`'s main thread is blocked writing to a socket: the broker
/// runs its start-up (and `sd_notify`) on its main thread, so with the
/// notify queue full this is the broker held inside its READY send.
fn blocked_in_send(pid: u32) -> bool {
    #[cfg(target_arch = "x86_64")]
    const SEND: &[&str] = &["1", "44", "46"]; // write, sendto, sendmsg
    #[cfg(target_arch = "aarch64")]
    const SEND: &[&str] = &["64", "206", "211"];
    let Ok(syscall) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall")) else {
        return false;
    };
    let mut fields = syscall.split_whitespace();
    let (Some(nr), Some(fd)) = (fields.next(), fields.next()) else {
        return false;
    };
    let Ok(fd) = u64::from_str_radix(fd.trim_start_matches("0x"), 16) else {
        return false;
    };
    SEND.contains(&nr)
        && std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One datagram. A receive with a timeout is not restarted after a signal
/// (other tests here reap children through tokio's SIGCHLD handler), so an
/// interrupted one is retried.
fn recv(socket: &UnixDatagram, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match socket.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            received => return received,
        }
    }
}

#[test]
fn ready_only_once_serving_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // With the queue full, the broker's READY send blocks: the front door
    // is checked while the broker is held at the very moment it says
    // READY, so one that said it before serving cannot catch up.
    let mut fillers = fill_queue(&notify_path);
    let socket = dir.path().join("broker.sock");
    // systemd names the watched process in WATCHDOG_PID; `sh` learns the
    // pid the broker will have (exec keeps it).
    let broker = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" broker --socket "$1""#)
        .arg(switchyard_bin())
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut broker = KillOnDrop(broker);
    let pid = broker.0.id();
    let started = Instant::now();
    while !blocked_in_send(pid) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the broker never tried to notify"
        );
        assert!(broker.0.try_wait().unwrap().is_none(), "the broker exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The broker is frozen in its first notification. Generous bound: a
    // front door that is not serving yet never answers while it is held.
    assert!(
        health_ok(&socket, 10),
        "READY=1 was sent before the front door answered"
    );
    let mut buf = [0u8; 4096];
    let mut ready_at = None;
    let mut pings = Vec::new();
    while pings.len() < 6 {
        let n = recv(&notify, &mut buf).expect("a notification within 30 s");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if fillers > 0 {
            assert_eq!(msg, "FILL");
            fillers -= 1;
            continue;
        }
        if ready_at.is_none() {
            // The held notification is the first one the broker sent.
            assert!(msg.contains("READY=1"), "first notification: {msg}");
        }
        if msg.contains("READY=1") {
            assert!(msg.contains("STATUS="), "{msg}");
            ready_at = Some(Instant::now());
        }
        if msg.contains("WATCHDOG=1") {
            pings.push(Instant::now());
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    assert!(ready_at.is_some(), "no READY=1");
    // Half of 200 ms: pings every ~100 ms; generous bounds for a busy VM.
    let span = pings[5] - pings[1];
    assert!(
        span < Duration::from_millis(1500),
        "pings too slow: {span:?} for 4"
    );
    assert!(
        span > Duration::from_millis(200),
        "pings too fast: {span:?} for 4"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(broker.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    loop {
        let n = recv(&notify, &mut buf).expect("STOPPING=1");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert!(broker.0.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_uses_the_inherited_socket() {
    let svc = start_service(&[], RpcConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    // systemd-socket-activate (from systemd) listens and passes the socket
    // as fd 3 with LISTEN_FDS/LISTEN_PID, as systemd would.
    let mut activator = tokio::process::Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(switchyard_bin())
        .args(["broker", "--socket"])
        .arg(&socket)
        .env("XDG_STATE_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("systemd-socket-activate (scripts/setup-test-host.sh installs systemd)");
    // The socket exists before the broker runs; the first connection starts it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "activator did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = within(30, "connect", switchyard::api::client::connect(&socket))
        .await
        .unwrap();
    c.service_direct(direct(&svc, "", "lab", ALICE_PASSWORD))
        .await
        .unwrap();
    let out = run_exec(&mut c, named("lab"), &["core-1"], &["show clock"])
        .await
        .unwrap();
    assert!(out[0].ok_output().contains("UTC"), "{out:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    within(30, "broker exit", activator.wait()).await.unwrap();
    assert!(
        socket.exists(),
        "an inherited socket is never unlinked by the broker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_calls_and_refuses_new_ones() {
    common::init();
    let sshd = Sshd::start(10).await;
    let mut slow = ssh_device("slow-1", sshd.port);
    slow.username = Some(TEST_USER.into());
    slow.password = Some(switchyard::secret::Secret::new(TEST_PASSWORD));
    let svc = start_service(&[slow], RpcConfig::default());
    let broker =
        common::broker::TestBroker::start(&[("SWITCHYARD_BROKER__DRAIN_TIMEOUT_SECS", "20")]).await;
    let mut c = broker.client_with_named(&svc, "lab").await;
    let req = |device: &str, cmd: &str| pb::ExecRequest {
        service: Some(pb::ServiceRef {
            name: "lab".into(),
            ..Default::default()
        }),
        devices: vec![device.into()],
        commands: vec![cmd.into()],
        timeout_ms: 0,
        max_output_bytes: 0,
        ..Default::default()
    };
    let mut slow_call = c.clone();
    // The output may stream as a chunk before the result or come in it:
    // `run_exec_request` joins both.
    let running = tokio::spawn(async move {
        let (mut reports, _) =
            common::broker::run_exec_request(&mut slow_call, req("slow-1", "sleep 1; echo done"))
                .await?;
        let report = reports.remove(0);
        assert!(report.error.is_empty(), "{}", report.error);
        Ok::<_, tonic::Status>(report.commands[0].output.clone())
    });
    // Wait until the call is in flight at the broker.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        if s.links.first().is_some_and(|l| l.in_flight > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "exec never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut child = broker.child;
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // New calls are refused while the running one finishes.
    let refused = loop {
        match c.exec(req("core-1", "show clock")).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    signalled.elapsed() < Duration::from_secs(5),
                    "new calls still admitted"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let out = within(30, "running exec", running).await.unwrap().unwrap();
    assert_eq!(out, "done\n", "the running exec completed");
    let status = within(30, "broker exit", child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "exited before the drain timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_work() {
    let svc = start_service(&[], RpcConfig::default());
    let (broker, startup) =
        common::broker::TestBroker::start_with(&[], &["--metrics-listen", "127.0.0.1:0"]).await;
    let metrics = Metrics::from_startup_log(&startup);
    let mut c = broker.client_with_named(&svc, "lab").await;
    for _ in 0..3 {
        let out = run_exec(&mut c, named("lab"), &["core-1"], &["show clock"])
            .await
            .unwrap();
        assert!(out[0].ok_output().contains("UTC"), "{out:?}");
    }
    let err = run_exec(&mut c, named("nope"), &["core-1"], &["x"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("nope"), "{err:?}");
    let page = metrics.scrape().await;
    assert_eq!(page.value("switchyard_requests_total{kind=\"exec\"}"), 4.0);
    assert_eq!(
        page.value("switchyard_link_connects_total{transport=\"direct\"}"),
        1.0
    );
    assert_eq!(page.value("switchyard_links{transport=\"direct\"}"), 1.0);
    assert_eq!(page.value("switchyard_links{transport=\"relayed\"}"), 0.0);
    assert_eq!(
        page.value("switchyard_request_errors_total{code=\"NotFound\"}"),
        1.0
    );
    assert_eq!(page.value("switchyard_exec_duration_seconds_count"), 3.0);
}

/// Logs straight to journald: a daemon that logs at start-up (the
/// simulator) sends its record to the journal (positive) and nothing of it
/// to stderr (negative). No journald runs on CI machines, so when the
/// journal socket is absent the test stands in for journald on that path
/// (a datagram socket reading the native protocol) and removes it after;
/// with a real journald the record is read back with `journalctl`.
#[test]
fn logs_go_straight_to_journald() {
    const MESSAGE: &str = "simulated devices listening";
    let path = std::path::Path::new("/run/systemd/journal/socket");
    let stand_in = if path.exists() {
        None
    } else {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let journal = UnixDatagram::bind(path).expect("stand in for journald");
        journal
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Some(journal)
    };
    struct Remove<'a>(Option<&'a std::path::Path>);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            if let Some(p) = self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let _cleanup = Remove(stand_in.as_ref().map(|_| path));
    let dir = tempfile::tempdir().unwrap();
    let sim = std::process::Command::new(switchyard_bin())
        .args(["--log-format", "journald", "sim", "--count", "1"])
        .env("RUST_LOG", "info")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sim = KillOnDrop(sim);
    let pid = sim.0.id();
    let record = match &stand_in {
        Some(journal) => {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = recv(journal, &mut buf).expect("a journal record within 30 s");
                let record = String::from_utf8_lossy(&buf[..n]).into_owned();
                if record.contains(MESSAGE) {
                    break record;
                }
            }
        }
        None => {
            let started = Instant::now();
            loop {
                let out = std::process::Command::new("journalctl")
                    .args(["--no-pager", "-o", "export", &format!("_PID={pid}")])
                    .output()
                    .expect("journalctl");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if text.contains(MESSAGE) {
                    break text;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no journal record from pid {pid} within 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    // Native and export formats: fields may be length-prefixed, so check
    // names and values rather than `KEY=value` lines.
    assert!(
        record.contains("SYSLOG_IDENTIFIER") && record.contains("switchyard"),
        "{record}"
    );
    assert!(
        record.contains("PRIORITY") && record.contains("TARGET"),
        "{record}"
    );
    // Stopped with SIGTERM and waited for: its logging of that record has
    // long finished (a record goes to every output before the next line
    // of code runs), so stderr is complete for the negative check.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    while sim.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the simulator did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = sim.0.wait_with_output_fallback();
    assert!(!err.contains("journald is not available"), "{err}");
    assert!(
        !err.contains(MESSAGE),
        "the record went to stderr as well: {err}"
    );
}

trait StderrOf {
    fn wait_with_output_fallback(&mut self) -> String;
}

impl StderrOf for std::process::Child {
    fn wait_with_output_fallback(&mut self) -> String {
        let _ = self.wait();
        let mut err = String::new();
        if let Some(mut s) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut err);
        }
        err
    }
}
