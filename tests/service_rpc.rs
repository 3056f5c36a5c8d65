//! The service RPC socket over real QUIC/TLS on loopback.

mod common;

use std::time::Duration;

use common::service::{ALICE_PASSWORD, TestService, ssh_device, sshd_device, start_service};
use common::sshd::{Sshd, endless_command, process_alive, read_pid};
use common::{eventually, within};
use switchyard::broker::direct_client::{DirectConnection, DirectTarget, connect};
use switchyard::broker::link::{LinkChannel, LinkError};
use switchyard::secret::Secret;
use switchyard::service::ratelimit::LimiterConfig;
use switchyard::service::rpc::RpcConfig;
use switchyard::wire::conn::{Liveness, TransportLimits, client_endpoint};
use switchyard::wire::frame::PROTOCOL_VERSION;
use switchyard::wire::messages::{
    ErrorCode, Request, RequestEnvelope, Response, TerminalInput, close_code,
};
use switchyard::wire::mux::Conn;

fn target(svc: &TestService, user: &str, password: &str) -> DirectTarget {
    DirectTarget {
        label: svc.addr().to_string(),
        addr: svc.addr(),
        username: user.into(),
        password: Secret::new(password),
        fingerprint: Some(svc.fingerprint),
        rpc_url: None,
        proxy: None,
    }
}

/// The QUIC connection under a direct login (these tests speak raw QUIC).
fn quic(c: &DirectConnection) -> &quinn::Connection {
    match &c.conn {
        Conn::Quic(conn) => conn,
        other => panic!("not a QUIC connection: {other:?}"),
    }
}

async fn login(
    svc: &TestService,
    user: &str,
    password: &str,
) -> Result<DirectConnection, LinkError> {
    let endpoint = client_endpoint(svc.addr()).unwrap();
    within(
        20,
        "login",
        connect(
            &endpoint,
            &target(svc, user, password),
            &TransportLimits::default(),
        ),
    )
    .await
}

fn channel(c: &DirectConnection, svc: &TestService) -> LinkChannel {
    LinkChannel::Remote {
        conn: c.conn.clone(),
        target: svc.addr().to_string(),
        max_frame: TransportLimits::default().max_frame,
        liveness: Liveness::on_demand(),
    }
}

fn req(request: Request) -> RequestEnvelope {
    RequestEnvelope {
        deadline_ms: None,
        request,
    }
}

async fn collect(ch: &LinkChannel, envelope: RequestEnvelope) -> Result<Vec<Response>, LinkError> {
    let mut call = ch.call(envelope).await?;
    let mut out = Vec::new();
    while let Some(r) = within(30, "response", call.next()).await {
        out.push(r?);
    }
    Ok(out)
}

fn exec(devices: &[&str], commands: &[&str]) -> RequestEnvelope {
    req(Request::Exec {
        devices: devices.iter().map(|s| s.to_string()).collect(),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        timeout_ms: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_inventory_and_exec_stream_per_device() {
    let svc = start_service(&[], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    assert_eq!(c.service_name, "test-service");
    assert_eq!(c.fingerprint, svc.fingerprint);
    let ch = channel(&c, &svc);

    let inv = collect(&ch, req(Request::Inventory)).await.unwrap();
    let Response::Inventory(devices) = &inv[0] else {
        panic!("{inv:?}")
    };
    let names: Vec<_> = devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["core-1", "core-2", "edge-1"]);
    assert_eq!(devices[2].attributes["role"], "edge");

    let events = collect(
        &ch,
        exec(&["core-1", "edge-1"], &["show version", "show nope"]),
    )
    .await
    .unwrap();
    let mut output = [String::new(), String::new()];
    let mut done = [false, false];
    for e in &events {
        // A command's output comes in chunks, then the rest with its device.
        if let Response::ExecOutput {
            device,
            command: 0,
            stderr: false,
            data,
        } = e
        {
            output[*device as usize].push_str(&String::from_utf8_lossy(data));
            continue;
        }
        if matches!(e, Response::ExecOutput { .. }) {
            continue;
        }
        let Response::ExecDevice {
            device,
            commands,
            error: None,
        } = e
        else {
            panic!("unexpected event {e:?}");
        };
        output[*device as usize].push_str(&String::from_utf8_lossy(&commands[0].output));
        assert_eq!(commands[1].exit_status, Some(1), "show nope fails");
        done[*device as usize] = true;
    }
    assert_eq!(done, [true, true]);
    assert!(output[0].contains("core-1 uptime"));
    assert!(output[1].contains("edge-1 uptime"));
    // Ping rides its own stream too.
    assert_eq!(
        collect(&ch, req(Request::Ping)).await.unwrap(),
        vec![Response::Pong]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_rejected_then_locked_out() {
    let svc = start_service(
        &[],
        RpcConfig {
            login_limiter: LimiterConfig {
                max_failures: 3,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    for _ in 0..3 {
        let Err(LinkError::Rejected { error, .. }) = login(&svc, "alice", "wrong").await else {
            panic!("wrong password accepted");
        };
        assert_eq!(error.code, ErrorCode::Unauthenticated);
        assert!(!error.message.contains("wrong\""), "{error}");
    }
    // Locked out now, even with the right password.
    let Err(LinkError::Rejected { error, .. }) = login(&svc, "alice", ALICE_PASSWORD).await else {
        panic!("lockout not applied");
    };
    assert_eq!(error.code, ErrorCode::ResourceExhausted);
    assert!(error.message.contains("too many failed logins"));
    // Unknown users are refused exactly like wrong passwords.
    let svc2 = start_service(&[], RpcConfig::default());
    let Err(LinkError::Rejected { error, .. }) = login(&svc2, "mallory", "x").await else {
        panic!("unknown user accepted");
    };
    assert_eq!(error.code, ErrorCode::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_fingerprint_mismatch_is_refused() {
    let svc = start_service(&[], RpcConfig::default());
    let endpoint = client_endpoint(svc.addr()).unwrap();
    let mut t = target(&svc, "alice", ALICE_PASSWORD);
    t.fingerprint = Some(switchyard::wire::pin::Fingerprint([7; 32]));
    let err = within(
        20,
        "connect",
        connect(&endpoint, &t, &TransportLimits::default()),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(err, LinkError::FingerprintMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&svc.fingerprint.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_unknown_devices_and_bad_requests_are_clear_errors() {
    let svc = start_service(&[], RpcConfig::default());
    let bob = login(&svc, "bob", "bob-password").await.unwrap();
    let ch = channel(&bob, &svc);
    let inv = collect(&ch, req(Request::Inventory)).await.unwrap();
    let Response::Inventory(devices) = &inv[0] else {
        panic!()
    };
    assert_eq!(devices.len(), 2, "bob sees core-* only");
    // A forbidden device (edge-1 exists) and an unknown one (core-9) each
    // fail on their own, with one answer, while core-1 runs.
    let events = collect(
        &ch,
        exec(&["edge-1", "core-1", "core-9", "edge-1"], &["show version"]),
    )
    .await
    .unwrap();
    let mut errors = std::collections::BTreeMap::new();
    let mut ran = Vec::new();
    for event in events {
        let Response::ExecDevice {
            device,
            commands,
            error,
        } = event
        else {
            continue;
        };
        match error {
            Some(e) => assert!(errors.insert(device, e).is_none(), "one result each"),
            None => ran.push((device, commands)),
        }
    }
    assert_eq!(ran.len(), 1, "core-1 runs");
    assert_eq!(ran[0].0, 1);
    assert!(String::from_utf8_lossy(&ran[0].1[0].output).contains("core-1 uptime"));
    assert_eq!(errors.keys().copied().collect::<Vec<_>>(), [0, 2]);
    for (device, name) in [(0, "edge-1"), (2, "core-9")] {
        let e = &errors[&device];
        assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");
        assert_eq!(e.message, format!("no device {name:?} that you may use"));
    }
    let Err(LinkError::Remote(e)) = collect(&ch, exec(&["core-1"], &[])).await else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_propagates_to_the_service() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let svc = start_service(&[ssh_device("hang-1", port)], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    let mut envelope = exec(&["hang-1"], &["true"]);
    envelope.deadline_ms = Some(300);
    let Err(LinkError::Remote(e)) = collect(&ch, envelope).await else {
        panic!("no deadline error")
    };
    assert_eq!(e.code, ErrorCode::DeadlineExceeded);
}

/// A caller that goes away stops the command on the device: checked on the
/// device side (the command's own process ends), with a device timeout of
/// ten minutes, so only the cancellation can end it within the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_going_away_cancels_the_device_work() {
    let sshd = Sshd::start(10).await;
    let svc = start_service(&[sshd_device("linux-1", sshd.port)], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    let pid_file = sshd.scratch().join("pid");
    let command = endless_command(&pid_file);
    let envelope = req(Request::Exec {
        devices: vec!["linux-1".into()],
        commands: vec![command],
        timeout_ms: Some(600_000),
    });
    let call = ch.call(envelope).await.unwrap();
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
    drop(call);
    // Generous for a busy machine; the command would otherwise run ten minutes.
    eventually(
        5,
        "the device command ends after its caller went away",
        || !process_alive(pid),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_frames_cut_off_only_that_connection() {
    let svc = start_service(&[], RpcConfig::default());
    let good = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    // A valid request with a payload behind it, which requests never carry.
    let ping = switchyard::wire::codec::encode(&req(Request::Ping)).unwrap();
    let mut smuggled = vec![PROTOCOL_VERSION];
    smuggled.extend_from_slice(&(ping.len() as u32).to_be_bytes());
    smuggled.extend_from_slice(&2u32.to_be_bytes());
    smuggled.extend_from_slice(&ping);
    smuggled.extend_from_slice(b"xx");
    for bad in [
        // Header claims 64 MiB.
        vec![PROTOCOL_VERSION, 0x04, 0, 0, 0, 0, 0, 0, 0],
        // Header claims a 64 MiB payload.
        vec![PROTOCOL_VERSION, 0, 0, 0, 1, 0x04, 0, 0, 0],
        // Valid header, garbage body.
        vec![PROTOCOL_VERSION, 0, 0, 0, 3, 0, 0, 0, 0, 0xff, 0xff, 0xff],
        // Another protocol version (1: frames without a payload length).
        vec![1, 0, 0, 0, 1, 0],
        smuggled,
    ] {
        let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
        let (mut send, _recv) = quic(&c).open_bi().await.unwrap();
        send.write_all(&bad).await.unwrap();
        let _ = send.finish();
        let reason = within(10, "connection closed", quic(&c).closed()).await;
        match reason {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    close.error_code,
                    quinn::VarInt::from_u32(close_code::PROTOCOL_VIOLATION)
                );
            }
            other => panic!("unexpected close: {other}"),
        }
    }
    // The well-behaved connection is unaffected.
    let ch = channel(&good, &svc);
    assert_eq!(
        collect(&ch, req(Request::Ping)).await.unwrap(),
        vec![Response::Pong]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_pushes_back_instead_of_queueing() {
    let svc = start_service(
        &[],
        RpcConfig {
            limits: TransportLimits {
                max_concurrent_streams: 2,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    let open_terminal = || {
        req(Request::Terminal {
            device: "core-1".into(),
            cols: 80,
            rows: 24,
        })
    };
    let mut t1 = ch.call(open_terminal()).await.unwrap();
    let _t2 = ch.call(open_terminal()).await.unwrap();
    // Both slots are taken: a third stream cannot open until one ends.
    let third = tokio::time::timeout(Duration::from_millis(300), quic(&c).open_bi()).await;
    assert!(third.is_err(), "a third concurrent stream was allowed");
    assert_eq!(
        within(10, "ready", t1.next()).await.unwrap().unwrap(),
        Response::TerminalReady
    );
    t1.send_input(TerminalInput::Data(b"exit\r".to_vec()))
        .await
        .unwrap();
    while let Some(r) = within(10, "terminal end", t1.next()).await {
        r.unwrap();
    }
    t1.finish_input();
    drop(t1);
    within(10, "stream after one ended", quic(&c).open_bi())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_session_on_a_device() {
    let svc = start_service(&[], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    let mut t = ch
        .call(req(Request::Terminal {
            device: "core-2".into(),
            cols: 80,
            rows: 24,
        }))
        .await
        .unwrap();
    assert_eq!(
        within(10, "ready", t.next()).await.unwrap().unwrap(),
        Response::TerminalReady
    );
    t.send_input(TerminalInput::Data(b"show clock\r".to_vec()))
        .await
        .unwrap();
    let mut screen = String::new();
    while !screen.contains("UTC") || !screen.ends_with("core-2#") {
        match within(10, "output", t.next()).await.unwrap().unwrap() {
            Response::TerminalOutput(b) => screen.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("{other:?}"),
        }
    }
    t.send_input(TerminalInput::Data(b"exit\r".to_vec()))
        .await
        .unwrap();
    let mut closed = false;
    while let Some(r) = within(10, "close", t.next()).await {
        closed |= r.unwrap() == Response::TerminalClosed;
    }
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_running_requests_and_refuses_new_ones() {
    common::init();
    let sshd = Sshd::start(10).await;
    let mut svc = start_service(&[sshd_device("slow-1", sshd.port)], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    let mut running = ch
        .call(exec(&["slow-1"], &["sleep 1; echo done"]))
        .await
        .unwrap();
    // Make sure the request is running at the service before shutting down.
    let server = svc.server.take().unwrap();
    common::eventually(20, "exec running", || server.running_requests() == 1).await;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(20)));
    // New requests are refused while the running one finishes.
    let refused = loop {
        match collect(&ch, req(Request::Ping)).await {
            Err(LinkError::Remote(e)) => break e,
            Ok(_) => tokio::task::yield_now().await,
            Err(other) => panic!("unexpected: {other}"),
        }
    };
    assert_eq!(refused.code, ErrorCode::Unavailable);
    assert!(refused.message.contains("shutting down"));
    // Output streams as it comes (chunks), the rest rides in the result.
    let mut output = Vec::new();
    while let Some(r) = within(30, "running exec", running.next()).await {
        match r.unwrap() {
            Response::ExecOutput { data, .. } => output.extend_from_slice(&data),
            Response::ExecDevice {
                commands,
                error: None,
                ..
            } => output.extend(commands[0].output.clone()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(output, b"done\n");
    within(30, "shutdown", shutdown).await.unwrap();
}

/// Issue 17 item 3: one request naming the same SSH device 10,000 times
/// runs it once (repeats are merged; the answer comes under the first
/// position) over at most the per-device connection limit, counted on the
/// device side (a counting TCP relay in front of a simulated device). The
/// limit under a burst of separate callers is `ssh_driver`'s
/// `ten_thousand_callers_to_one_device_share_the_limit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_names_of_one_device_stay_within_its_connection_limit() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    common::init();
    let fleet = switchyard::sim::server::SimFleet::start(Default::default())
        .await
        .unwrap();
    let ep = fleet.endpoints()[0].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let relay = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(ep.addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let creds = switchyard::sim::server::SimCredentials::default();
    let mut device = ssh_device(&fleet.endpoints()[0].name, port);
    device.username = Some(creds.username.clone());
    device.password = Some(creds.password.clone());
    let name = device.name.clone();
    let svc = start_service(&[device], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    // A generous command timeout: it also bounds each name's wait in the
    // device's queue (with the connect timeout), and 10,000 queue behind
    // 4 x 8 channels on a busy machine.
    let request = req(Request::Exec {
        devices: vec![name.clone(); 10_000],
        commands: vec!["show version".into()],
        timeout_ms: Some(120_000),
    });
    let responses = collect(&ch, request).await.unwrap();
    let mut answered = Vec::new();
    for r in responses {
        let Response::ExecDevice {
            device,
            commands,
            error,
        } = r
        else {
            continue;
        };
        assert_eq!(error, None, "device {device}");
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].error, None);
        let out = String::from_utf8_lossy(&commands[0].output);
        assert!(out.contains(&format!("{name} uptime is")), "{out}");
        answered.push(device);
    }
    assert_eq!(answered, vec![0], "one answer, under the first position");
    let limit =
        switchyard::service::drivers::ssh::SshDriverConfig::default().max_connections_per_device;
    let seen = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=limit).contains(&seen),
        "{seen} connections to the device (limit {limit})"
    );
    relay.abort();
}

/// `Request::ExecReset` over a real QUIC link to a service whose device
/// runs commands in a warm shell (IOS-XE over SSH to the simulator):
/// `disable` leaves the shell in user mode, where the simulator refuses
/// `show running-config` (exit status 1). Without a reset that carries
/// over; `reset.before` runs in a fresh shell, `reset.after` closes the
/// shell `disable` ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reset_gives_shell_devices_a_fresh_shell_over_the_wire() {
    use switchyard::sim::server::{SimFleet, SimFleetConfig};
    use switchyard::wire::messages::{ExecFlags, ShellReset};

    let fleet = SimFleet::start(SimFleetConfig {
        count: 1,
        ..Default::default()
    })
    .await
    .expect("simulated device");
    let device = switchyard::service::inventory::NewDevice {
        device_type: "IOS-XE".into(),
        username: Some("admin".into()),
        password: Some(Secret::new("admin")),
        ..ssh_device("shell-1", fleet.endpoints()[0].port)
    };
    let svc = start_service(&[device], RpcConfig::default());
    let c = login(&svc, "alice", ALICE_PASSWORD).await.unwrap();
    let ch = channel(&c, &svc);
    let run = |command: &str, before: bool, after: bool| {
        let devices = vec!["shell-1".to_string()];
        let commands = vec![command.to_string()];
        let reset = ShellReset { before, after };
        let request = if reset.any() {
            Request::ExecReset {
                devices,
                commands,
                timeout_ms: None,
                flags: ExecFlags::default(),
                reset,
            }
        } else {
            Request::ExecWith {
                devices,
                commands,
                timeout_ms: None,
                flags: ExecFlags::default(),
            }
        };
        let ch = &ch;
        async move {
            let events = collect(ch, req(request)).await.unwrap();
            let done = events.iter().find_map(|e| match e {
                Response::ExecDevice {
                    commands,
                    error: None,
                    ..
                } => Some(commands[0].exit_status),
                _ => None,
            });
            done.unwrap_or_else(|| panic!("no device result: {events:?}"))
        }
    };
    const PRIVILEGED: &str = "show running-config";
    assert_eq!(run(PRIVILEGED, false, false).await, Some(0));
    assert_eq!(run("disable", false, false).await, Some(0));
    assert_eq!(
        run(PRIVILEGED, false, false).await,
        Some(1),
        "user mode kept"
    );
    assert_eq!(run(PRIVILEGED, true, false).await, Some(0), "reset before");
    assert_eq!(
        run(PRIVILEGED, false, false).await,
        Some(0),
        "fresh one kept"
    );
    assert_eq!(run("disable", false, true).await, Some(0));
    assert_eq!(run(PRIVILEGED, false, false).await, Some(0), "reset after");
    // The connection is still the one it was: ExecReset is a well-formed
    // request to this service, not a protocol violation.
    assert!(quic(&c).close_reason().is_none());
}
