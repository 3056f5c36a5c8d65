//! Networks that block UDP, for real: a broker and a service (real
//! processes) inside a network namespace of the test's own, where an
//! nftables rule drops every UDP packet. A direct link given the service's
//! host falls back to TLS/TCP on the service's TCP listener, says so in
//! `status`, and moves back to QUIC once the rule is gone — with one new
//! connection, not a reconnect storm. Skipped (loudly) only where network
//! namespaces cannot be made; CI runs as root and makes them.

mod common;

use std::time::{Duration, Instant};

use common::broker::{TestBroker, named, run_exec, status};
use common::process::{Netns, ServiceProcess};
use common::within;
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
    within(30, "a failed QUIC probe", async {
        while !broker.log().contains("QUIC still unreachable") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    show_version(&mut client).await;
    assert_eq!(link(&broker, &target).await.carrier, "tcp");

    // UDP back: new calls move to QUIC, on one new connection.
    unblock_udp(&ns);
    let moved = within(30, "the link back on QUIC", async {
        loop {
            let l = link(&broker, &target).await;
            if l.carrier == "quic" {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
