//! Networks that block UDP, for real: a broker and a service (real
//! processes) inside a network namespace of the test's own, where an
//! nftables rule drops every UDP packet. A direct link given the service's
//! host falls back to TLS/TCP on the service's TCP listener, says so in
//! `status`, and moves back to QUIC once the rule is gone — with one new
//! connection, not a reconnect storm. Skipped (loudly) only where network
//! namespaces cannot be made; CI runs as root and makes them.
//!
//! The same for the relay: a relay, a relay-enrolled service and a broker
//! (three real processes) in such a namespace log in, come online and
//! exec through a tunnel over TLS/TCP.

mod common;

use std::time::Instant;

use common::broker::{TestBroker, in_session, named, run_exec, status};
use common::cloud::{ALICE, TestRelay, assert_show_version, cloud_service, token_session};
use common::process::{Netns, ServiceProcess};
use common::{eventually, eventually_some, within};
use switchyard::api::pb;

/// nftables table holding the UDP drop inside the test's namespace.
const TABLE: &str = "udp_blocked";

fn block_udp(ns: &Netns) {
    ns.run(&["nft", "add", "table", "inet", TABLE]);
    ns.run(&[
        "nft",
        "add",
        "chain",
        "inet",
        TABLE,
        "out",
        "{ type filter hook output priority 0 ; }",
    ]);
    ns.run(&[
        "nft", "add", "rule", "inet", TABLE, "out", "meta", "l4proto", "udp", "drop",
    ]);
}

fn unblock_udp(ns: &Netns) {
    ns.run(&["nft", "delete", "table", "inet", TABLE]);
}

/// The link to `target` in the broker's status.
async fn link(broker: &TestBroker, target: &str) -> pb::LinkStatus {
    status(broker)
        .await
        .links
        .into_iter()
        .find(|l| l.target == target)
        .unwrap_or_else(|| panic!("no link to {target}"))
}

async fn show_version(client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>) {
    let reports = run_exec(client, named("lab"), &["core-1"], &["show version"])
        .await
        .expect("exec");
    assert!(reports[0].ok_output().contains("core-1 uptime"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_link_falls_back_to_tcp_when_udp_is_blocked_and_returns_to_quic() {
    let Some(ns) = Netns::create() else {
        return;
    };
    block_udp(&ns);
    let mut svc = ServiceProcess::new(Some(ns.0.clone()));
    svc.start().await;
    let tcp_port = svc.tcp_addr.expect("the service's TCP listener").port();
    let (broker, _) = TestBroker::start_via(
        &ns.prefix(),
        // Probe QUIC often, so its return is seen quickly here.
        &[("SWITCHYARD_BROKER__QUIC_PROBE_SECS", "0.5")],
        &[],
    )
    .await;
    let mut client = broker.client().await;
    let mut request = svc.service_ref("lab");
    request.tcp_port = tcp_port.into();
    let target = format!("127.0.0.1:{}", svc.addr.unwrap().port());

    // UDP blocked: the login and the first exec go over TCP. (Without the
    // fallback the login fails after the 10 s connect timeout.)
    let first_try = Instant::now();
    within(30, "service_direct", client.service_direct(request))
        .await
        .unwrap_or_else(|e| panic!("login with UDP blocked: {e}\n{}", broker.log()));
    show_version(&mut client).await;
    eprintln!(
        "first exec with UDP blocked after {:?}",
        first_try.elapsed()
    );
    let on_tcp = link(&broker, &target).await;
    assert_eq!(on_tcp.carrier, "tcp", "{on_tcp:?}");
    let connects_on_tcp = on_tcp.connects;
    // Probes keep failing while UDP is blocked: the link stays on TCP and
    // calls keep working.
    eventually(30, "a failed QUIC probe", || {
        broker.log().contains("QUIC still unreachable")
    })
    .await;
    show_version(&mut client).await;
    assert_eq!(link(&broker, &target).await.carrier, "tcp");

    // UDP back: new calls move to QUIC, on one new connection.
    unblock_udp(&ns);
    let moved = eventually_some(30, "the link back on QUIC", || async {
        Some(link(&broker, &target).await).filter(|l| l.carrier == "quic")
    })
    .await;
    assert_eq!(
        moved.connects,
        connects_on_tcp + 1,
        "one QUIC connection replaced TCP: {moved:?}"
    );
    for _ in 0..5 {
        show_version(&mut client).await;
    }
    let after = link(&broker, &target).await;
    assert_eq!(
        (after.carrier.as_str(), after.connects),
        ("quic", moved.connects)
    );
}

/// `[broker] transport = "quic"` pins QUIC: with UDP blocked the login
/// fails (naming the service) instead of falling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_quic_pins_quic_and_fails_when_udp_is_blocked() {
    let Some(ns) = Netns::create() else {
        return;
    };
    block_udp(&ns);
    let mut svc = ServiceProcess::new(Some(ns.0.clone()));
    svc.start().await;
    let (broker, _) = TestBroker::start_via(
        &ns.prefix(),
        &[
            ("SWITCHYARD_BROKER__TRANSPORT", "quic"),
            ("SWITCHYARD_BROKER__CONNECT_TIMEOUT_SECS", "2"),
        ],
        &[],
    )
    .await;
    let mut client = broker.client().await;
    let mut request = svc.service_ref("lab");
    request.tcp_port = svc.tcp_addr.unwrap().port().into();
    let err = within(30, "service_direct", client.service_direct(request))
        .await
        .expect_err("QUIC pinned: no fallback to TCP");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("127.0.0.1"), "{err}");
}

/// A service process in `ns`, enrolled with `relay` as `serial`, and
/// started.
async fn enrolled_service_in(ns: &Netns, relay: &TestRelay, serial: &str) -> ServiceProcess {
    ServiceProcess::enrolled(Some(ns), relay, serial, "", &[], &[]).await
}

/// A relay, a service enrolled with it and a broker, all in a namespace
/// whose UDP is dropped: the service comes online over TCP, the broker's
/// token login connects over TCP (`status` says `tcp`), and a relayed exec
/// works through a tunnel carried in an HTTP/2 stream. Once UDP is back,
/// the login's probe moves it to QUIC and calls keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_logins_and_relayed_exec_work_over_tcp_when_udp_is_blocked() {
    let Some(ns) = Netns::create() else {
        return;
    };
    block_udp(&ns);
    let relay = TestRelay::start_process_via(&ns.prefix(), &[]).await;
    let svc = enrolled_service_in(&ns, &relay, "SN-TCP").await;
    let config = relay.broker_config(relay.dir.path());
    let (broker, _) = TestBroker::start_via(
        &ns.prefix(),
        // Probe QUIC often, so its return is seen quickly here.
        &[("SWITCHYARD_BROKER__QUIC_PROBE_SECS", "0.5")],
        &["--config", config.to_str().unwrap()],
    )
    .await;

    // Without the fallback the login fails after QUIC's connect timeout.
    let first_try = Instant::now();
    let (mut client, session, _attach) = within(
        30,
        "a token login",
        token_session(&broker, &relay.token(ALICE)),
    )
    .await;
    let service = cloud_service(&mut client, &session, "SN-TCP", None).await;
    within(
        25,
        "the service reachable through the relay",
        client.wait(pb::WaitRequest {
            service: in_session(&session, &service),
            timeout_secs: 20.0,
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nrelay:\n{}\nservice:\n{}", relay.log(), svc.log()));
    assert_show_version(&mut client, &session, &service).await;
    eprintln!(
        "first relayed exec with UDP blocked after {:?}",
        first_try.elapsed()
    );
    let logins = status(&broker).await.logins;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0].carrier, "tcp", "{logins:?}");
    let text = broker.command().arg("status").output().await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("(token, tcp) logged in"), "{text}");
    assert!(
        svc.log().contains("online at the relay") && svc.log().contains("carrier=tcp"),
        "the service is online over TCP:\n{}",
        svc.log()
    );
    // A second call rides the same login and tunnel.
    assert_show_version(&mut client, &session, &service).await;
    eventually(30, "a failed QUIC probe of the relay", || {
        broker.log().contains("QUIC to the relay still unreachable")
    })
    .await;
    assert_eq!(status(&broker).await.logins[0].carrier, "tcp");

    // UDP back: the login moves to QUIC; the running tunnel keeps its TCP
    // connection, and calls keep working.
    unblock_udp(&ns);
    eventually_some(30, "the login back on QUIC", || async {
        Some(status(&broker).await.logins).filter(|l| l[0].carrier == "quic")
    })
    .await;
    assert_show_version(&mut client, &session, &service).await;
}

/// `serial` through the relay for `session`, once reachable: its handle.
async fn reachable(client: &mut common::cloud::Client, session: &str, serial: &str) -> String {
    let service = cloud_service(client, session, serial, None).await;
    within(
        25,
        "the service reachable through the relay",
        client.wait(pb::WaitRequest {
            service: in_session(session, &service),
            timeout_secs: 20.0,
        }),
    )
    .await
    .unwrap();
    service
}

/// `show bulk N` on core-1 through `service`, started: the stream of its
/// events (the caller reads it at its own pace).
async fn start_bulk(
    client: &mut common::cloud::Client,
    session: &str,
    service: &str,
    bytes: usize,
) -> tonic::Streaming<pb::ExecEvent> {
    client
        .exec(pb::ExecRequest {
            service: in_session(session, service),
            devices: vec!["core-1".into()],
            commands: vec![format!("show bulk {bytes}")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Reads `events` to its end: output bytes, and whether the device's
/// command exited 0 without error.
async fn finish_bulk(
    events: &mut tonic::Streaming<pb::ExecEvent>,
    mut bytes: usize,
) -> (usize, bool) {
    let mut ok = false;
    while let Some(event) = within(60, "exec event", events.message()).await.unwrap() {
        match event.event {
            Some(pb::exec_event::Event::Output(o)) => bytes += o.data.len(),
            Some(pb::exec_event::Event::DeviceResult(r)) => {
                bytes += r.commands.iter().map(|c| c.output.len()).sum::<usize>();
                ok = r.error.is_empty()
                    && r.commands
                        .iter()
                        .all(|c| c.exit_status == Some(0) && c.error.is_empty());
            }
            _ => {}
        }
    }
    (bytes, ok)
}

/// The service's relay agent in a namespace whose UDP is dropped comes up
/// on TCP; its config file's `[relay_agent] quic_probe_secs = 0.5` has it
/// try QUIC every 0.5 s. Once the rule is gone it moves to QUIC on exactly
/// one new connection (the relay saw two service connections in all, the
/// service one QUIC one), gracefully: a 64 MiB exec streaming through the
/// tunnel on the TCP connection at the move (the caller holds it back, so
/// most of it crosses after) completes in full, the TCP connection stays
/// until that tunnel ends (its session closed), and is then closed; a new
/// session's tunnel goes over QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_agent_moves_back_to_quic_and_drains_its_tcp_tunnels() {
    let Some(ns) = Netns::create() else {
        return;
    };
    block_udp(&ns);
    let relay = TestRelay::start_process_via(&ns.prefix(), &[]).await;
    let svc = ServiceProcess::enrolled(
        Some(&ns),
        &relay,
        "SN-MOVE",
        "[relay_agent]\nquic_probe_secs = 0.5\n",
        &[],
        &[],
    )
    .await;
    let config = relay.broker_config(relay.dir.path());
    let (broker, _) = TestBroker::start_via(
        &ns.prefix(),
        // A link closes as soon as no session holds it.
        &[("SWITCHYARD_BROKER__IDLE_TIMEOUT_SECS", "0")],
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let (mut client, session, attach) = within(
        30,
        "a token login",
        token_session(&broker, &relay.token(ALICE)),
    )
    .await;
    let service = reachable(&mut client, &session, "SN-MOVE").await;
    let online = |log: &str, carrier: &str| {
        log.lines()
            .filter(|l| l.contains("online at the relay") && l.contains(carrier))
            .count()
    };
    assert_eq!(online(&svc.log(), "carrier=tcp"), 1, "{}", svc.log());
    assert!(
        svc.log().contains("trying QUIC again every 500ms"),
        "the config file's probe interval:\n{}",
        svc.log()
    );

    // A bulk exec through the TCP connection, held back by its reader.
    const BULK: usize = 64 * 1024 * 1024;
    let mut events = start_bulk(&mut client, &session, &service, BULK).await;
    let mut got = 0;
    while got == 0 {
        let event = within(30, "the first output", events.message())
            .await
            .unwrap()
            .expect("output before the end");
        if let Some(pb::exec_event::Event::Output(o)) = event.event {
            got += o.data.len();
        }
    }

    unblock_udp(&ns);
    eventually(30, "the agent online over QUIC", || {
        online(&svc.log(), "carrier=quic") == 1
    })
    .await;
    assert!(svc.log().contains("moving off TCP"), "{}", svc.log());
    let (total, ok) = finish_bulk(&mut events, got).await;
    assert_eq!((total, ok), (BULK, true), "the exec through TCP completed");
    // Its tunnel (the session's link) is still open: so is the TCP
    // connection.
    assert_show_version(&mut client, &session, &service).await;
    assert!(!svc.log().contains("old TCP connection"), "{}", svc.log());

    // The session ends, its link and tunnel with it: the TCP connection is
    // closed.
    drop(attach);
    drop(events);
    eventually(30, "the drained TCP connection closed", || {
        svc.log()
            .contains("the tunnels on the old TCP connection to the relay have ended")
    })
    .await;

    // A new session's tunnel: over QUIC, with no further connection.
    let (mut client, session, _attach) = within(
        30,
        "a second session",
        token_session(&broker, &relay.token(ALICE)),
    )
    .await;
    let service = reachable(&mut client, &session, "SN-MOVE").await;
    assert_show_version(&mut client, &session, &service).await;
    let log = svc.log();
    assert_eq!(
        (online(&log, "carrier=tcp"), online(&log, "carrier=quic")),
        (1, 1),
        "one TCP and one QUIC connection:\n{log}"
    );
    let relay_log = relay.log();
    let at_relay = relay_log
        .lines()
        .filter(|l| l.contains("service online") && l.contains("SN-MOVE"))
        .count();
    assert_eq!(at_relay, 2, "{relay_log}");
}
