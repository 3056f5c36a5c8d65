//! The cloud end to end: a real relay, services enrolled with it, and real
//! broker processes, on loopback. Each login method reaches a simulator
//! device; every refusal says why.

mod common;

use std::time::Duration;

use common::broker::{Metrics, TestBroker, in_session, open_attached, run_exec, status};
use common::cloud::{
    ALICE, ALICE_SSO_PASSWORD, CAROL, Client, CloudService, TestRelay, assert_ciphertext_only,
    assert_show_version, broker_for, broker_for_with, cloud_service, show_version, token_login,
    token_session,
};
use common::process::ServiceProcess;
use common::within;
use switchyard::api::pb;
use switchyard::relay::unix_now;
use tonic::Code;

/// A broker for `relay` that also serves its metrics.
async fn broker_with_metrics(relay: &TestRelay) -> (TestBroker, Metrics) {
    let config = relay.broker_config(relay.dir.path());
    let config = config.to_str().unwrap().to_string();
    let args = ["--config", &config, "--metrics-listen", "127.0.0.1:0"];
    let (broker, startup) = TestBroker::start_with(&[], &args).await;
    (broker, Metrics::from_startup_log(&startup))
}

/// Each transport's links are counted under their own name.
async fn assert_links_by_transport(metrics: &Metrics, relayed: f64, direct_sso: f64) {
    let page = metrics.scrape().await;
    assert_eq!(
        page.value("switchyard_links{transport=\"relayed\"}"),
        relayed
    );
    assert_eq!(
        page.value("switchyard_links{transport=\"direct-sso\"}"),
        direct_sso
    );
    assert_eq!(page.value("switchyard_links{transport=\"direct\"}"), 0.0);
}

/// A session service straight to `svc`'s RPC socket, logging in with the
/// cloud login (`service_direct_with_sso`).
async fn direct_sso(
    client: &mut Client,
    session: &str,
    serial: &str,
    svc: &CloudService,
) -> String {
    client
        .service_direct_with_sso(pb::ServiceDirectWithSsoRequest {
            session_id: session.into(),
            serial: serial.into(),
            host: "127.0.0.1".into(),
            port: svc.rpc_addr().port().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .service_id
}

async fn wait(
    client: &mut Client,
    session: &str,
    service: &str,
    secs: f64,
) -> Result<String, tonic::Status> {
    client
        .wait(pb::WaitRequest {
            service: in_session(session, service),
            timeout_secs: secs,
        })
        .await
        .map(|r| r.into_inner().service_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_login_reaches_a_device_through_the_relay() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-1", &[]).await;
    let (broker, metrics) = broker_with_metrics(&relay).await;
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let login = token_login(&mut client, &session, &relay.token(ALICE))
        .await
        .unwrap();
    assert_eq!(login.identity, ALICE);
    assert_eq!(login.method, "token");
    let service = cloud_service(&mut client, &session, "SN-1", None).await;
    let name = within(20, "wait", wait(&mut client, &session, &service, 15.0))
        .await
        .unwrap();
    assert_eq!(name, "cloud-service");
    let out = show_version(&mut client, &session, &service).await.unwrap();
    assert!(out.contains("Simulated Network OS"), "{out}");
    // Alice's cloud identity is scoped to core-*: edge-1 fails on its own,
    // as if it did not exist.
    let out = run_exec(
        &mut client,
        in_session(&session, &service),
        &["edge-1", "core-1"],
        &["show version"],
    )
    .await
    .unwrap();
    assert_eq!(out[0].error, "no device \"edge-1\" that you may use");
    assert_eq!(out[0].error_code, "NOT_FOUND", "{out:?}");
    assert!(out[1].ok_output().contains("core-1 uptime"), "{out:?}");

    let s = status(&broker).await;
    let login = s
        .logins
        .iter()
        .find(|l| l.identity == ALICE)
        .expect("login listed");
    assert_eq!((login.method.as_str(), login.sessions), ("token", 1));
    assert!(
        s.links
            .iter()
            .any(|l| l.transport == "relayed" && l.state == "up")
    );
    assert_links_by_transport(&metrics, 1.0, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_forwards_only_ciphertext() {
    // Through the packet port (datagrams forwarded untouched).
    let (relay, tap) = TestRelay::start_tapped_with(|_| {}).await;
    assert!(relay.relay().packet_addr().is_some());
    ciphertext_only(relay, tap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_packet_port_tunnels_ride_relayed_streams_still_encrypted() {
    let (relay, tap) = TestRelay::start_tapped_with(|c| c.packet_listen = None).await;
    assert!(relay.relay().packet_addr().is_none());
    ciphertext_only(relay, tap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_packet_port_is_named_in_the_error() {
    // The relay tells the broker a port nothing listens on, as if a
    // firewall dropped its datagrams to the real one.
    let closed_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = TestRelay::start_with(|c| c.misdirect_client_packets = Some(closed_port)).await;
    let _svc = CloudService::start(&relay, "SN-BLOCKED", &[]).await;
    let broker = broker_for_with(&relay, &[("SWITCHYARD_BROKER__CONNECT_TIMEOUT_SECS", "2")]).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-BLOCKED", None).await;
    let err = wait(&mut client, &session, &service, 6.0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("packet port 127.0.0.1:{closed_port}"))
            && err.message().contains("--packet-listen off"),
        "{}",
        err.message()
    );
}

/// An exec through `relay`, whose `tap` must then hold the forwarded bytes
/// with neither the command, the output nor the caller's identity in them.
async fn ciphertext_only(relay: TestRelay, mut tap: tokio::sync::mpsc::Receiver<bytes::Bytes>) {
    let _svc = CloudService::start(&relay, "SN-E2E", &[]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-E2E", None).await;
    wait(&mut client, &session, &service, 15.0).await.unwrap();
    let command = "show running-config";
    let out = run_exec(
        &mut client,
        in_session(&session, &service),
        &["core-1"],
        &[command],
    )
    .await
    .unwrap();
    let output = out[0].ok_output();
    assert!(output.contains("hostname core-1"), "{output}");
    let seen = assert_ciphertext_only(&mut tap, command, "hostname core-1", ALICE);
    assert!(seen > output.len(), "the relay forwarded {seen} bytes");
}

/// The prompt line `switchyard login sso` prints for scripts.
async fn read_prompt(
    child: &mut tokio::process::Child,
) -> (
    serde_json::Value,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) {
    use tokio::io::AsyncBufReadExt;
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = within(20, "SSO prompt", lines.next_line())
        .await
        .unwrap()
        .expect("a prompt line");
    (serde_json::from_str(&line).unwrap(), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_one_sso_login_and_another_uid_cannot_use_it() {
    // Checked first, so a run that cannot test isolation says so at once.
    let as_root = common::root_or_opted_out("uid isolation (another uid uses the login)");
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-SSO", &[]).await;
    let broker = broker_for(&relay).await;
    let mut children = Vec::new();
    for _ in 0..4 {
        let mut cmd = broker.command();
        cmd.args(["login", "sso", ALICE])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        children.push(cmd.spawn().unwrap());
    }
    let mut codes = Vec::new();
    let mut outputs = Vec::new();
    for child in &mut children {
        let (prompt, lines) = read_prompt(child).await;
        codes.push(prompt["user_code"].as_str().unwrap().to_string());
        assert!(
            prompt["verification_uri"]
                .as_str()
                .unwrap()
                .starts_with(&relay.url())
        );
        outputs.push(lines);
    }
    assert!(
        codes.iter().all(|c| c == &codes[0]),
        "one prompt for all: {codes:?}"
    );
    assert_eq!(
        relay.relay().grants_started(),
        1,
        "the relay saw one device grant"
    );
    let page = relay
        .decide(&codes[0], ALICE, ALICE_SSO_PASSWORD, true)
        .await;
    assert!(page.contains("Approved"), "{page}");
    for (child, lines) in children.iter_mut().zip(outputs.iter_mut()) {
        let status = within(20, "login finishes", child.wait()).await.unwrap();
        assert!(status.success());
        let done = lines.next_line().await.unwrap().expect("a result line");
        assert!(done.contains(&format!("as {ALICE} (sso)")), "{done}");
    }
    assert_eq!(relay.relay().grants_started(), 1);

    // The login is this user's: a named cloud service works from the CLI...
    let out = broker
        .command()
        .args(["connect", "cloud", "lab", "--serial", "SN-SSO"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = broker
        .command()
        .args(["exec", "lab", "core-1", "-c", "show clock"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clock = String::from_utf8_lossy(&out.stdout);
    assert!(clock.contains("UTC"), "{clock}");

    // ...and another local user cannot use it.
    if as_root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(broker.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
        std::fs::set_permissions(broker.dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let out = tokio::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(common::switchyard_bin())
            .args(["--socket"])
            .arg(broker.socket())
            .args(["connect", "cloud", "theirs", "--serial", "SN-SSO"])
            .env("HOME", "/nonexistent")
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "another uid connected: {err}");
        assert!(err.contains("not logged in"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_denied_and_wrong_password_on_the_page() {
    let relay = TestRelay::start().await;
    let broker = broker_for(&relay).await;
    let mut child = broker.command();
    child
        .args(["login", "sso", ALICE])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = child.spawn().unwrap();
    let (prompt, _lines) = read_prompt(&mut child).await;
    let code = prompt["user_code"].as_str().unwrap();
    let page = relay.decide(code, ALICE, "not-the-password", true).await;
    assert!(page.contains("Wrong email or password"), "{page}");
    let page = relay.decide(code, CAROL, "carol-password", true).await;
    assert!(
        page.contains("this login is for alice@example.com"),
        "{page}"
    );
    let page = relay.decide(code, ALICE, ALICE_SSO_PASSWORD, false).await;
    assert!(page.contains("Denied"), "{page}");
    let out = within(20, "login fails", child.wait_with_output())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_code_that_expires_fails_the_login() {
    let relay = TestRelay::start_with(|c| c.device_flow.lifetime = Duration::from_secs(2)).await;
    let broker = broker_for(&relay).await;
    let mut client = broker.client().await;
    let mut events = client
        .sso_login(pb::SsoLoginRequest {
            identity: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = within(10, "prompt", events.message())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(pb::sso_login_event::Event::Prompt(_))
    ));
    let err = within(20, "expiry", events.message()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_slows_down_clients_that_poll_too_fast() {
    let relay = TestRelay::start_with(|c| c.device_flow.interval = Duration::from_secs(5)).await;
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let http = switchyard::tls::http_client(roots).unwrap();
    let grant: serde_json::Value = http
        .post(format!("{}/oauth/device_authorization", relay.url()))
        .form(&[("client_id", "test")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let poll = || async {
        http.post(format!("{}/oauth/token", relay.url()))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", grant["device_code"].as_str().unwrap()),
                ("client_id", "test"),
            ])
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    assert_eq!(poll().await["error"], "authorization_pending");
    assert_eq!(poll().await["error"], "slow_down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_login_end_to_end_and_a_wrong_key_password() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-CERT", &[]).await;
    let broker = broker_for(&relay).await;
    let mut client = broker.client().await;
    let enrolled = common::cloud::enroll_alice_cert(&mut client, &relay).await;
    assert_eq!(enrolled.identity, ALICE);
    assert!(
        !enrolled
            .encrypted_key
            .windows(11)
            .any(|w| w == b"PRIVATE KEY")
    );
    let logged_out = client
        .logout(pb::LogoutRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(logged_out.logged_out, 1);

    let (session, _attach) = open_attached(&mut client).await;
    let login = |password: &str| pb::CertificateLoginRequest {
        session_id: session.clone(),
        identity: ALICE.into(),
        cert_pem: enrolled.cert_pem.clone(),
        encrypted_key: enrolled.encrypted_key.clone(),
        key_password: password.into(),
        relay: None,
    };
    let err = client.certificate_login(login("wrong")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("wrong key password"),
        "{}",
        err.message()
    );
    let ok = client
        .certificate_login(login(common::cloud::KEY_PASSWORD))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.method, "certificate");
    let service = cloud_service(&mut client, &session, "SN-CERT", None).await;
    wait(&mut client, &session, &service, 15.0).await.unwrap();
    assert_show_version(&mut client, &session, &service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_and_revoked_tokens_are_refused_saying_which() {
    let relay = TestRelay::start().await;
    let broker = broker_for(&relay).await;
    let mut client = broker.client().await;
    let err = token_login(&mut client, "", "not-a-token")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("not valid"), "{}", err.message());

    let (expired, _) = relay.token_until(ALICE, unix_now() - 10);
    let err = token_login(&mut client, "", &expired).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());

    let (revoked, id) = relay.token_until(ALICE, unix_now() + 3600);
    relay.revoke(&id);
    let err = token_login(&mut client, "", &revoked).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains(&format!("token {id} was revoked")),
        "{}",
        err.message()
    );
    assert!(
        status(&broker).await.logins.is_empty(),
        "refused logins are not kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_otps_work_once_and_expire() {
    let relay = TestRelay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut inv = common::service::make_inventory(&dir.path().join("inv.db"), &[]);
    let enroll = |otp: String| switchyard::service::enroll::EnrollOptions {
        relay_url: relay.url(),
        otp: switchyard::secret::Secret::new(otp),
        roots: switchyard::tls::root_store(Some(&relay.ca_file())).unwrap(),
        advertise: None,
    };
    let otp = relay.otp("SN-OTP");
    switchyard::service::enroll::enroll(&mut inv, enroll(otp.clone()))
        .await
        .unwrap();
    let err = switchyard::service::enroll::enroll(&mut inv, enroll(otp))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    let old = relay.otp_until("SN-OTP2", unix_now() - 1);
    let err = switchyard::service::enroll::enroll(&mut inv, enroll(old))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let err = switchyard::service::enroll::enroll(&mut inv, enroll("made-up".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_the_service_does_not_list_is_refused() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-SCOPE", &[]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(CAROL)).await;
    let service = cloud_service(&mut client, &session, "SN-SCOPE", None).await;
    let err = wait(&mut client, &session, &service, 10.0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("carol@example.com is not a remote user"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_serial_is_not_found_and_the_login_carries_on() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-KNOWN", &[]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let unknown = cloud_service(&mut client, &session, "SN-TYPO", None).await;
    let said = "service SN-TYPO (relayed by https://127.0.0.1:";
    let why = "cannot be reached: no service with serial SN-TYPO is enrolled with this relay";
    let err = within(20, "wait", wait(&mut client, &session, &unknown, 10.0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().starts_with(said), "{}", err.message());
    assert!(err.message().ends_with(why), "{}", err.message());
    // Final, not retried: a call fails at once with the same answer.
    let err = within(10, "exec", show_version(&mut client, &session, &unknown))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().ends_with(why), "{}", err.message());
    // The same login reaches the service that is enrolled.
    let known = cloud_service(&mut client, &session, "SN-KNOWN", None).await;
    within(20, "wait", wait(&mut client, &session, &known, 15.0))
        .await
        .unwrap();
    assert_show_version(&mut client, &session, &known).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_blocks_until_an_offline_service_comes_online() {
    let relay = TestRelay::start().await;
    // A real process: its stop ends with the process, as in production.
    let mut svc = ServiceProcess::enrolled(
        None,
        &relay,
        "SN-WAIT",
        "",
        &[],
        &["--relay-transport", "quic", "--name", "cloud-service"],
    )
    .await;
    common::eventually(20, "the service online at the relay", || {
        relay.relay().services_online() == 1
    })
    .await;
    svc.terminate().await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-WAIT", None).await;
    // The relay took the service offline at its goodbye, before the
    // process exited (without it, the close the exiting process sent was
    // often lost — quinn #2785 — and the relay showed the service online
    // until its 30 s idle timeout): each try is a bounded 1 s wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let err = wait(&mut client, &session, &service, 1.0)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        if err.message().contains("service SN-WAIT is offline") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not offline: {}",
            err.message()
        );
    }
    let waiting = {
        let mut client = client.clone();
        let (session, service) = (session.clone(), service.clone());
        tokio::spawn(async move { wait(&mut client, &session, &service, 20.0).await })
    };
    svc.start().await;
    let name = within(25, "wait", waiting).await.unwrap().unwrap();
    assert_eq!(name, "cloud-service");
    assert_show_version(&mut client, &session, &service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restart_fails_calls_fast_and_everything_reconnects() {
    let sshd = common::sshd::Sshd::start(10).await;
    let slow = common::service::sshd_device("slow-1", sshd.port);
    let mut relay = TestRelay::start().await;
    let svc = CloudService::start(&relay, "SN-RST", &[slow]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-RST", None).await;
    wait(&mut client, &session, &service, 15.0).await.unwrap();

    // The broker answers an exec with its first event, so the call is
    // awaited beside the test, which sees it running at the service.
    let mut caller = client.clone();
    let request = pb::ExecRequest {
        service: in_session(&session, &service),
        devices: vec!["slow-1".into()],
        commands: vec!["sleep 60; echo never".into()],
        timeout_ms: 0,
        max_output_bytes: 0,
        ..Default::default()
    };
    let call = tokio::spawn(async move {
        let mut stream = caller.exec(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    });
    common::eventually(10, "exec running", || {
        svc.server.as_ref().unwrap().running_requests() == 1
    })
    .await;
    relay.stop().await;
    let err = within(10, "in-flight call fails fast", call)
        .await
        .unwrap()
        .expect_err("the exec finished instead of failing");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("SN-RST"), "{}", err.message());

    relay.restart().await;
    within(
        20,
        "service back online",
        svc.agent
            .as_ref()
            .unwrap()
            .wait_online(Duration::from_secs(20)),
    )
    .await;
    wait(&mut client, &session, &service, 20.0).await.unwrap();
    assert_show_version(&mut client, &session, &service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_survives_a_broker_restart() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-KEEP", &[]).await;
    let config = relay.broker_config(relay.dir.path());
    let config = config.to_str().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let state_env = [(
        "SWITCHYARD_BROKER__STATE_DIR",
        state.path().to_str().unwrap(),
    )];
    let broker = TestBroker::start_with(&state_env, &["--config", &config])
        .await
        .0;
    let mut client = broker.client().await;
    let token = relay.token(ALICE);
    token_login(&mut client, "", &token).await.unwrap();
    drop(client);
    drop(broker);
    // The token is stored sealed, never in the clear.
    let stored: Vec<_> = std::fs::read_dir(state.path().join("logins"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1, "one stored login: {stored:?}");
    for path in stored {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes
                .windows(20)
                .any(|w| token.as_bytes().windows(20).next() == Some(w))
        );
    }
    let broker = TestBroker::start_with(&state_env, &["--config", &config])
        .await
        .0;
    let s = status(&broker).await;
    assert!(
        s.logins
            .iter()
            .any(|l| l.identity == ALICE && l.method == "token"),
        "{:?}",
        s.logins
    );
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let service = cloud_service(&mut client, &session, "SN-KEEP", None).await;
    wait(&mut client, &session, &service, 15.0).await.unwrap();
    assert_show_version(&mut client, &session, &service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_with_sso_skips_the_relay_for_data() {
    let (relay, mut tap) = TestRelay::start_tapped_with(|_| {}).await;
    let svc = CloudService::start(&relay, "SN-DSSO", &[]).await;
    let (broker, metrics) = broker_with_metrics(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = direct_sso(&mut client, &session, "SN-DSSO", &svc).await;
    wait(&mut client, &session, &service, 15.0).await.unwrap();
    assert_show_version(&mut client, &session, &service).await;
    assert_eq!(
        tap.try_recv(),
        Err(tokio::sync::mpsc::error::TryRecvError::Empty),
        "no tunnel was used (and the tap is still connected)"
    );
    let s = status(&broker).await;
    assert!(
        s.links
            .iter()
            .any(|l| l.transport == "direct-sso" && l.state == "up")
    );
    assert_links_by_transport(&metrics, 0.0, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_access_tokens_are_refreshed_before_they_expire() {
    let relay = TestRelay::start_with(|c| c.access_ttl = Duration::from_secs(3)).await;
    let svc = CloudService::start(&relay, "SN-REFRESH", &[]).await;
    let broker = broker_for(&relay).await;
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let mut events = client
        .sso_login(pb::SsoLoginRequest {
            session_id: session.clone(),
            identity: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::sso_login_event::Event::Prompt(prompt)) = within(10, "prompt", events.message())
        .await
        .unwrap()
        .unwrap()
        .event
    else {
        panic!("expected a prompt first");
    };
    relay
        .decide(&prompt.user_code, ALICE, ALICE_SSO_PASSWORD, true)
        .await;
    let Some(pb::sso_login_event::Event::LoggedIn(login)) = within(20, "login", events.message())
        .await
        .unwrap()
        .unwrap()
        .event
    else {
        panic!("expected the login");
    };
    let first_expiry = login.expires_unix;
    assert!(first_expiry > 0);
    // The broker refreshes ahead of expiry; status shows the new expiry.
    within(20, "refresh", async {
        loop {
            let s = status(&broker).await;
            if s.logins.iter().any(|l| l.expires_unix > first_expiry) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Past the first token's expiry, the relay still serves this login
    // (its connection was re-authenticated): a fresh assertion works.
    within(10, "first token expired", async {
        while unix_now() <= first_expiry {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let service = direct_sso(&mut client, &session, "SN-REFRESH", &svc).await;
    wait(&mut client, &session, &service, 15.0).await.unwrap();
    assert_show_version(&mut client, &session, &service).await;
}

/// The relay's HTTPS side faces the internet. A client that connects and
/// then says nothing is cut off at the header timeout; connections past
/// the limit are closed as they arrive (before the silent one's timeout
/// frees its slot); the page is served again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_excess_https_clients_are_cut_off() {
    use futures::FutureExt;
    use tokio::io::AsyncReadExt;
    let relay = TestRelay::start_with(|c| {
        c.http_limits.max_connections = 1;
        c.http_limits.header_timeout = Duration::from_secs(5);
    })
    .await;
    let addr = relay.url().trim_start_matches("https://").to_string();
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let http = switchyard::tls::http_client(roots).unwrap();
    let well_known = format!("{}/.well-known/switchyard-relay", relay.url());

    // A client that completes TLS, then sends no request: it holds the
    // only slot until the header timeout closes it.
    let mut silent = tls_connect(&relay).await;
    // Meanwhile another connection is closed at once, unanswered: while
    // the silent one still holds its slot (a relay that queued it until
    // the slot freed would close the silent one first).
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut byte = [0u8; 1];
    let excess = within(5, "excess connection closed", extra.read(&mut byte)).await;
    assert!(
        matches!(&excess, Ok(0)) || is_kind(&excess, std::io::ErrorKind::ConnectionReset),
        "{excess:?}"
    );
    assert!(
        silent.read(&mut byte).now_or_never().is_none(),
        "the silent client was cut off before the excess one"
    );
    let cut = within(15, "silent client cut off", silent.read(&mut byte)).await;
    assert!(
        matches!(&cut, Ok(0))
            || is_kind(&cut, std::io::ErrorKind::UnexpectedEof)
            || is_kind(&cut, std::io::ErrorKind::ConnectionReset),
        "{cut:?}"
    );

    // Its slot is free again once the relay has finished closing it.
    within(10, "the page is served again", async {
        loop {
            match http.get(&well_known).send().await {
                Ok(r) if r.status().is_success() => return,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await;
}

/// Whether an I/O result is an error of `kind`.
fn is_kind<T>(result: &std::io::Result<T>, kind: std::io::ErrorKind) -> bool {
    matches!(result, Err(e) if e.kind() == kind)
}

/// A kept-alive HTTPS connection is closed once it has been idle for the
/// header timeout after its last answer (not at once after an answer: two
/// pipelined requests are both answered on it first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_https_connections_close_when_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start_with(|c| {
        c.http_limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    let mut conn = tls_connect(&relay).await;
    let request = b"GET /.well-known/switchyard-relay HTTP/1.1\r\nHost: relay\r\n\r\n";
    conn.write_all(&[&request[..], &request[..]].concat())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let end = within(5, "idle connection closed", conn.read_to_end(&mut seen)).await;
    // A close without TLS close_notify reads as UnexpectedEof.
    assert!(
        end.is_ok() || is_kind(&end, std::io::ErrorKind::UnexpectedEof),
        "{end:?}"
    );
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(seen.matches("HTTP/1.1 200").count(), 2, "{seen}");
    assert!(seen.contains("quic"), "{seen}");
}

/// A TLS connection to the relay's HTTPS port that verifies its certificate.
async fn tls_connect(relay: &TestRelay) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = relay.url().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap()
}
