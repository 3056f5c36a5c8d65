//! The broker end to end: a real broker process, a real service on
//! loopback QUIC, real gRPC over the Unix socket.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::broker::{
    Metrics, TestBroker, direct, in_session, named, open_attached, run_exec, status,
};
use common::service::{ALICE_PASSWORD, ssh_device, sshd_device, start_service};
use common::sshd::{Sshd, endless_command, process_alive, read_pid};
use common::within;
use switchyard::api::pb;
use switchyard::service::inventory::{NewDevice, SessionKind};
use switchyard::service::rpc::RpcConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_share_one_link_for_the_same_credentials() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let mut a = broker.client().await;
    let mut b = broker.client().await;
    let (sa, _ha) = open_attached(&mut a).await;
    let (sb, _hb) = open_attached(&mut b).await;

    let first = a
        .service_direct(direct(&svc, &sa, "", ALICE_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.reused);
    assert_eq!(first.service_name, "test-service");
    assert_eq!(
        first.fingerprint,
        svc.fingerprint.to_string(),
        "learned on first use"
    );
    let second = b
        .service_direct(direct(&svc, &sb, "", ALICE_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert!(second.reused, "same user, same password: shared link");

    // A different password never rides the live link: it gets its own
    // login, which the service refuses.
    let wrong = b
        .service_direct(direct(&svc, &sb, "", "not-alices"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    // No password at all reuses the live link of this local user.
    let third = b
        .service_direct(direct(&svc, &sb, "", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(third.reused);

    let out = run_exec(
        &mut a,
        in_session(&sa, &first.service_id),
        &["core-1", "edge-1"],
        &["show version"],
    )
    .await
    .unwrap();
    assert!(out[0].ok_output().contains("core-1 uptime"));
    assert!(out[1].ok_output().contains("edge-1 uptime"));
    let out = run_exec(
        &mut b,
        in_session(&sb, &second.service_id),
        &["core-2"],
        &["show clock"],
    )
    .await
    .unwrap();
    assert!(out[0].ok_output().contains("UTC"));

    let s = status(&broker).await;
    assert_eq!(s.links.len(), 1, "{s:?}");
    assert_eq!(s.links[0].connects, 1);
    assert_eq!(s.links[0].state, "up");
    assert_eq!(s.links[0].transport, "direct");
    assert_eq!(s.links[0].holders, 3);
    assert_eq!(s.sessions.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_processes_exec_through_one_named_service() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let out = broker.connect_direct(&svc, "lab", &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let runs = (0..20).map(|i| {
        let mut cmd = broker.command();
        let device = ["core-1", "core-2", "edge-1"][i % 3];
        cmd.args(["exec", "lab", device, "-c", "show version", "--json"]);
        async move { cmd.output().await.unwrap() }
    });
    let outputs = within(120, "20 execs", futures::future::join_all(runs)).await;
    for out in outputs {
        assert!(
            out.status.success(),
            "exec failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One device report, then the request's summary line.
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let report: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(report["status"], "success");
        let summary: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(summary["summary"]["status"], "SUCCESS");
        assert!(
            report["results"][0]["output"]
                .as_str()
                .unwrap()
                .contains("uptime")
        );
    }
    let s = status(&broker).await;
    assert_eq!(s.links.len(), 1);
    assert_eq!(
        s.links[0].connects, 1,
        "all 20 processes shared one handshake"
    );
    assert_eq!(s.named_services[0].name, "lab");

    let out = broker
        .command()
        .args(["status", "--json"])
        .output()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["links"][0]["connects"], 1);

    // Disconnect forgets the name; the link closes once idle.
    let out = broker
        .command()
        .args(["disconnect", "lab"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let out = broker
        .command()
        .args(["exec", "lab", "core-1", "-c", "show clock"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no named service \"lab\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_for_bad_input() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[("SWITCHYARD_BROKER__CONNECT_TIMEOUT_SECS", "2")]).await;
    let mut c = broker.client().await;
    let (s, _hold) = open_attached(&mut c).await;
    let e = c
        .service_direct(direct(&svc, &s, "", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("refused the login"), "{e:?}");

    let svc_id = c
        .service_direct(direct(&svc, &s, "", ALICE_PASSWORD))
        .await
        .unwrap()
        .into_inner()
        .service_id;
    let out = run_exec(
        &mut c,
        in_session(&s, &svc_id),
        &["nope-1"],
        &["show version"],
    )
    .await
    .unwrap();
    assert!(out[0].error.contains("no device \"nope-1\""), "{out:?}");
    assert_eq!(out[0].error_code, "NOT_FOUND", "{out:?}");
    let e = run_exec(
        &mut c,
        in_session(&s, "v999"),
        &["core-1"],
        &["show version"],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = run_exec(&mut c, in_session("s0-bogus", &svc_id), &["core-1"], &["x"])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Nothing listens on this UDP port.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut req = direct(&svc, &s, "", ALICE_PASSWORD);
    req.port = port.into();
    let e = within(60, "unreachable", c.service_direct(req))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains(&format!("127.0.0.1:{port}")));

    // Names and labels that would garble `status` or forge log lines.
    let mut req = direct(&svc, "", "lab\nINFO forged", ALICE_PASSWORD);
    let e = c.service_direct(req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("service name"), "{e:?}");
    req.name = "x".repeat(100_000);
    let e = c.service_direct(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().len() < 300, "the error quotes a shortened name");
    let mut req = direct(&svc, &s, "", ALICE_PASSWORD);
    req.username = "alice\r\nINFO forged".into();
    let e = c.service_direct(req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("control characters"), "{e:?}");
    assert!(status(&broker).await.named_services.is_empty());
    // A session's client name is only a label: tidied, not refused.
    let odd = c
        .open_session(pb::OpenSessionRequest {
            client_name: format!("run.py a\nb {}", "x".repeat(1000)),
        })
        .await
        .unwrap()
        .into_inner()
        .session_id;
    let shown = status(&broker)
        .await
        .sessions
        .into_iter()
        .find(|x| x.session_id == odd)
        .unwrap()
        .client_name;
    assert!(shown.starts_with("run.py a\\nb xx"), "{shown}");
    assert_eq!(shown.chars().count(), 256);

    // Pinned fingerprint that does not match.
    let mut req = direct(&svc, &s, "", ALICE_PASSWORD);
    req.fingerprint = "00".repeat(32);
    let e = c.service_direct(req).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut req = direct(&svc, &s, "", ALICE_PASSWORD);
    req.fingerprint = "zz".into();
    assert_eq!(
        c.service_direct(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_socket_mode() {
    use std::os::unix::fs::PermissionsExt;
    let broker = TestBroker::start(&[]).await;
    let mode = std::fs::metadata(broker.socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let channel = switchyard::api::client::channel(&broker.socket())
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "switchyard.v1.Broker".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A second broker on the same socket refuses to start.
    let out = tokio::process::Command::new(common::switchyard_bin())
        .arg("broker")
        .arg("--socket")
        .arg(broker.socket())
        .env("XDG_STATE_HOME", broker.dir.path().join("state2"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another broker is already serving"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_says_how_to_start_a_missing_broker() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nope.sock");
    let out = tokio::process::Command::new(common::switchyard_bin())
        .args(["status"])
        .env("SWITCHYARD_SOCKET", &socket)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // Not the default path, so the command to start it names the socket.
    let start = format!("`switchyard --socket {} broker`", socket.display());
    assert!(
        err.contains("the broker is not running") && err.contains(&start),
        "{err}"
    );
}

/// Helper process for the kill test: holds a session with an exec in
/// flight, says READY, and waits to be killed. Runs only when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for caller_killed_mid_exec_is_released"]
async fn helper_hold_session_with_exec_in_flight() {
    let (Ok(socket), Ok(port), Ok(command)) = (
        std::env::var("HELPER_SOCKET"),
        std::env::var("HELPER_PORT"),
        std::env::var("HELPER_COMMAND"),
    ) else {
        return;
    };
    let mut c = switchyard::api::client::connect(std::path::Path::new(&socket))
        .await
        .unwrap();
    let (s, _hold) = open_attached(&mut c).await;
    let svc = c
        .service_direct(pb::ServiceDirectRequest {
            session_id: s.clone(),
            username: "alice".into(),
            host: "127.0.0.1".into(),
            port: port.parse().unwrap(),
            password: ALICE_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The broker answers an exec with its first event, which never comes
    // here (the command never ends): the test sees it running on the device.
    println!("READY {s}");
    let answer = c
        .exec(pb::ExecRequest {
            service: in_session(&s, &svc.service_id),
            devices: vec!["linux-1".into()],
            commands: vec![command],
            timeout_ms: 600_000,
            max_output_bytes: 0,
            ..Default::default()
        })
        .await;
    // Held (stream or error) until the test kills this process: dropping a
    // stream would cancel the call from here instead.
    let _held = answer;
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_killed_mid_exec_is_released_within_a_second() {
    caller_killed_mid_command(SessionKind::Exec, Duration::from_secs(5)).await;
}

/// Issue 15 input 7 on a shell-session device (stock sshd, `session =
/// shell`): the command runs in a warm shell's pty, with no channel of its
/// own to close; the shell gets a Ctrl-C and is closed when its caller is
/// killed, and the command's process is gone within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_killed_mid_shell_command_stops_it_on_the_device_within_two_seconds() {
    caller_killed_mid_command(SessionKind::Shell, Duration::from_secs(2)).await;
}

/// A caller (a helper process) runs a never-ending command on a stock
/// sshd device whose commands run on exec channels or in a shell, and is
/// killed with SIGKILL: its session is released within a second and the
/// command's process on the device ends within `gone_within`.
async fn caller_killed_mid_command(session: SessionKind, gone_within: Duration) {
    // A real device running a command that never ends by itself, with a
    // ten-minute timeout: only the caller's going away can stop it.
    let sshd = Sshd::start(10).await;
    let pid_file = sshd.scratch().join("pid");
    let device = NewDevice {
        session: Some(session),
        ..sshd_device("linux-1", sshd.port)
    };
    let svc = start_service(&[device], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;

    // Another session, busy on its own, must not notice.
    let mut other = broker.client().await;
    let (so, _hold) = open_attached(&mut other).await;
    let other_svc = other
        .service_direct(direct(&svc, &so, "", ALICE_PASSWORD))
        .await
        .unwrap()
        .into_inner()
        .service_id;

    let mut helper = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_hold_session_with_exec_in_flight",
            "--ignored",
            "--nocapture",
        ])
        .env("HELPER_SOCKET", broker.socket())
        .env("HELPER_PORT", svc.addr().port().to_string())
        .env(
            "HELPER_COMMAND",
            match session {
                SessionKind::Exec => endless_command(&pid_file),
                // The loop in a process of its own: the shell's pid stays.
                SessionKind::Shell => format!("sh -c '{}'", endless_command(&pid_file)),
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let session = within(60, "helper ready", async {
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("helper exited early");
            if let Some(id) = line.strip_prefix("READY ") {
                return id.to_string();
            }
        }
    })
    .await;
    // The helper's exec runs on the device.
    let pid = within(30, "the device command starts", async {
        loop {
            if let Some(pid) = read_pid(&pid_file) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(process_alive(pid), "the device command runs");
    let s = status(&broker).await;
    let held = s
        .sessions
        .iter()
        .find(|x| x.session_id == session)
        .expect("helper session listed");
    assert_eq!(held.in_flight, 1);

    helper.start_kill().unwrap();
    let killed = Instant::now();
    helper.wait().await.unwrap();
    loop {
        let s = status(&broker).await;
        if !s.sessions.iter().any(|x| x.session_id == session) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "session not released within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Its in-flight exec was cancelled all the way to the device: the
    // command's process ends (it would otherwise run for ten minutes).
    loop {
        if !process_alive(pid) {
            break;
        }
        assert!(
            killed.elapsed() < gone_within,
            "the device command still runs {gone_within:?} after its caller was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = run_exec(
        &mut other,
        in_session(&so, &other_svc),
        &["core-1"],
        &["show clock"],
    )
    .await
    .unwrap();
    assert!(
        out[0].ok_output().contains("UTC"),
        "the other session is unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_restart_fails_in_flight_calls_fast_then_recovers() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut svc = start_service(
        &[ssh_device("hang-1", silent.local_addr().unwrap().port())],
        RpcConfig::default(),
    );
    let broker = TestBroker::start(&[
        ("SWITCHYARD_BROKER__RECONNECT_MIN_SECS", "0.05"),
        ("SWITCHYARD_BROKER__RECONNECT_MAX_SECS", "0.3"),
    ])
    .await;
    let mut c = broker.client_with_named(&svc, "lab").await;

    // An exec hangs at the device while the service goes away.
    let mut hung = broker.client().await;
    let in_flight =
        tokio::spawn(
            async move { run_exec(&mut hung, named("lab"), &["hang-1"], &["true"]).await },
        );
    let _device = within(20, "device connect", silent.accept()).await.unwrap();
    svc.stop().await;
    let e = within(10, "in-flight call fails fast", in_flight)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains(&svc.addr().to_string()),
        "names the service: {e:?}"
    );

    // While the service is down, calls fail fast instead of hanging.
    let e = within(
        10,
        "call while down",
        run_exec(&mut c, named("lab"), &["core-1"], &["show clock"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);

    // Back on the same address: the link reconnects by itself.
    svc.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match run_exec(&mut c, named("lab"), &["core-1"], &["show clock"]).await {
            Ok(out) => {
                assert!(out[0].ok_output().contains("UTC"));
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e:?}");
                assert!(Instant::now() < deadline, "no reconnect: {}", broker.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let s = status(&broker).await;
    assert_eq!(s.links[0].connects, 2);
    assert_eq!(s.links[0].state, "up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_through_the_cli() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    broker.client_with_named(&svc, "lab").await;
    let mut child = broker
        .command()
        .args(["terminal", "lab", "core-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"show ip interface brief\rexit\r")
        .await
        .unwrap();
    let out = within(30, "terminal session", child.wait_with_output())
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screen.contains("core-1#"), "{screen:?}");
    assert!(screen.contains("GigabitEthernet0/0"), "{screen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unheld_link_closes_at_once_with_zero_idle_timeout() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[("SWITCHYARD_BROKER__IDLE_TIMEOUT_SECS", "0")]).await;
    let mut c = broker.client().await;
    let (s, hold) = open_attached(&mut c).await;
    c.service_direct(direct(&svc, &s, "", ALICE_PASSWORD))
        .await
        .unwrap();
    assert_eq!(status(&broker).await.links.len(), 1);
    drop(hold); // the session ends, releasing its link
    let deadline = Instant::now() + Duration::from_secs(10);
    while !status(&broker).await.links.is_empty() {
        assert!(Instant::now() < deadline, "link not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_the_broker_log() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[("RUST_LOG", "trace")]).await;
    let mut c = broker.client().await;
    let (s, _hold) = open_attached(&mut c).await;
    c.service_direct(direct(&svc, &s, "", ALICE_PASSWORD))
        .await
        .unwrap();
    let wrong = "Wr0ng-password-marker";
    c.service_direct(direct(&svc, &s, "", wrong))
        .await
        .unwrap_err();
    let out = broker
        .connect_direct(&svc, "lab", &[("RUST_LOG", "trace")])
        .await;
    assert!(out.status.success());
    let done = run_exec(&mut c, named("lab"), &["core-1"], &["show clock"])
        .await
        .unwrap();
    assert!(done[0].ok_output().contains("UTC"), "{done:?}");
    let cli_log = String::from_utf8_lossy(&out.stderr);
    // Stop the broker so its log is complete.
    let mut child = broker.child;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let log = std::fs::read_to_string(broker.dir.path().join("broker.log")).unwrap();
    assert!(log.contains("link up"), "trace log was captured: {log}");
    for secret in [ALICE_PASSWORD, wrong] {
        assert!(!log.contains(secret), "a password reached the broker log");
        assert!(!cli_log.contains(secret), "a password reached the CLI log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_callers_share_one_handshake() {
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let mut holds = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..6 {
        let mut c = broker.client().await;
        let (s, hold) = open_attached(&mut c).await;
        holds.push(hold);
        let req = direct(&svc, &s, "", ALICE_PASSWORD);
        calls.push(async move { c.service_direct(req).await });
    }
    let replies = within(60, "concurrent logins", futures::future::join_all(calls)).await;
    let reused = replies
        .into_iter()
        .map(|r| r.unwrap().into_inner().reused)
        .filter(|r| *r)
        .count();
    assert_eq!(reused, 5, "one caller created the link, five joined it");
    let s = status(&broker).await;
    assert_eq!(s.links.len(), 1);
    assert_eq!(s.links[0].connects, 1, "single flight: one handshake");
    assert_eq!(s.links[0].holders, 6);
}

/// Input the front door cannot take fails only that call or connection:
/// bytes that are not HTTP/2, a request over the message limit, a command
/// too big for the link's frames. The broker and the shared link carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input_fails_only_that_call() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let mut c = broker.client_with_named(&svc, "lab").await;

    // Not HTTP/2: the broker ends that connection (reset or closed) instead
    // of waiting on it.
    let mut raw = tokio::net::UnixStream::connect(broker.socket())
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let ended = within(
        10,
        "broker ends the connection",
        raw.read_to_end(&mut answer),
    )
    .await;
    assert!(
        ended.is_ok()
            || matches!(&ended, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{ended:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"),
        "answered as HTTP/1.1"
    );

    // Over the front door's message limit: refused as it arrives.
    let huge = "x".repeat(5 * 1024 * 1024);
    let e = run_exec(&mut c, named("lab"), &["core-1"], &[huge.as_str()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("too large"), "{e:?}");

    // Under that limit but over the link's frame limit (1 MiB): the
    // caller's own error, said as such, and not sent down the link.
    let big = "x".repeat(2 * 1024 * 1024);
    let e = run_exec(&mut c, named("lab"), &["core-1"], &[big.as_str()])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("1048576-byte message limit"), "{e:?}");

    // The same client, connection and link go on working.
    let out = run_exec(&mut c, named("lab"), &["core-1"], &["show clock"])
        .await
        .unwrap();
    assert!(out[0].ok_output().contains("UTC"), "{out:?}");
    let links = status(&broker).await.links;
    assert_eq!(links.len(), 1);
    assert_eq!((links[0].state.as_str(), links[0].connects), ("up", 1));
    assert_eq!(links[0].last_error, "");
}

/// One local user cannot fill the shared broker with sessions: past the
/// per-user limit a new one is refused, saying which limit, and closing a
/// session makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_user_are_limited() {
    let (broker, startup) = TestBroker::start_with(
        &[("SWITCHYARD_BROKER__MAX_SESSIONS_PER_USER", "2")],
        &["--metrics-listen", "127.0.0.1:0"],
    )
    .await;
    let mut c = broker.client().await;
    let (first, _hold_first) = open_attached(&mut c).await;
    let (_second, _hold_second) = open_attached(&mut c).await;
    let e = c
        .open_session(pb::OpenSessionRequest {
            client_name: "third".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("broker.max_sessions_per_user"),
        "{e:?}"
    );
    c.close_session(pb::CloseSessionRequest { session_id: first })
        .await
        .unwrap();
    let (_third, _hold_third) = open_attached(&mut c).await;
    assert_eq!(status(&broker).await.sessions.len(), 2);
    let page = Metrics::from_startup_log(&startup).scrape().await;
    assert_eq!(page.value("switchyard_sessions_refused_total"), 1.0);
}
