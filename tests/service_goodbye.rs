//! A relay-enrolled service (a real `switchyard service run` process)
//! stopped gracefully says goodbye to the relay, which shows it offline at
//! once, on QUIC and on TCP; one killed says nothing and is found gone by
//! the relay's idle timeout (see `service::relay_agent`, `relay::quic`).

mod common;

use std::time::Duration;

use common::cloud::{ALICE, Client, TestRelay, broker_for, cloud_service, token_session};
use common::process::ServiceProcess;
use common::{eventually, within};
use switchyard::api::pb;
use tonic::Code;

/// What the goodbye guarantees, with generous slack: its bound
/// (`relay_agent::GOODBYE_BOUND`, 1 s) is far below the relay's idle
/// timeout (30 s), which is what tells it otherwise.
const OFFLINE_BOUND: u64 = 5;

/// A broker's `wait` for `service`, `secs` at most.
async fn wait(client: &mut Client, session: &str, service: &str, secs: f64) -> Result<(), String> {
    client
        .wait(pb::WaitRequest {
            service: common::broker::in_session(session, service),
            timeout_secs: secs,
        })
        .await
        .map(|_| ())
        .map_err(|e| {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            e.message().to_string()
        })
}

/// A broker for `relay` with a caller logged in as alice, and `serial`
/// through the relay once reachable: broker, client, session, service
/// handle, and the session's attach stream.
async fn reach(
    relay: &TestRelay,
    serial: &str,
) -> (
    common::broker::TestBroker,
    Client,
    String,
    String,
    tonic::Streaming<pb::SessionEvent>,
) {
    let broker = broker_for(relay).await;
    let (mut client, session, attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, serial, None).await;
    within(25, "the service reachable", async {
        wait(&mut client, &session, &service, 20.0).await.unwrap()
    })
    .await;
    (broker, client, session, service, attach)
}

/// SIGTERM to `svc`; returns once `relay` shows it offline (within the
/// bound, failing otherwise), with the task stopping it.
async fn terminate_until_offline(
    mut svc: ServiceProcess,
    relay: &TestRelay,
) -> tokio::task::JoinHandle<ServiceProcess> {
    let stopping = tokio::spawn(async move {
        svc.terminate().await;
        svc
    });
    eventually(
        OFFLINE_BOUND,
        "the relay showing the service offline",
        || relay.relay().services_online() == 0,
    )
    .await;
    stopping
}

/// The stopped `svc` said goodbye and the relay answered it.
fn assert_said_goodbye(svc: &ServiceProcess) {
    assert!(
        svc.log()
            .contains("said goodbye: the relay shows us offline"),
        "{}",
        svc.log()
    );
}

/// A service on `transport` (`quic` or `tcp`) reachable through the relay
/// by a broker; SIGTERM; the relay shows it offline within the bound,
/// before the service has even finished stopping, and a broker asking is
/// told so.
async fn sigterm_takes_a_service_offline_at_once(transport: &str, serial: &str) {
    let relay = TestRelay::start().await;
    let svc = ServiceProcess::enrolled(
        None,
        &relay,
        serial,
        "",
        &[],
        &["--relay-transport", transport],
    )
    .await;
    let online = format!("online at the relay serial={serial} carrier={transport}");
    eventually(20, "the service online at the relay", || {
        relay.relay().services_online() == 1 && svc.log().contains(&online)
    })
    .await;
    let (_broker, mut client, session, service, _attach) = reach(&relay, serial).await;

    let stopping = terminate_until_offline(svc, &relay).await;
    let svc = within(30, "the service stopped", stopping).await.unwrap();
    assert_said_goodbye(&svc);
    // A broker asking now is told the service is offline (its link may
    // first see its old connection end).
    let offline = format!("service {serial} is offline");
    within(OFFLINE_BOUND + 10, "the broker told it is offline", async {
        loop {
            let err = wait(&mut client, &session, &service, 1.0)
                .await
                .expect_err("the stopped service answered");
            if err.contains(&offline) {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_with_sigterm_is_offline_at_the_relay_at_once_over_quic() {
    sigterm_takes_a_service_offline_at_once("quic", "SN-BYE-QUIC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stopped_with_sigterm_is_offline_at_the_relay_at_once_over_tcp() {
    sigterm_takes_a_service_offline_at_once("tcp", "SN-BYE-TCP").await;
}

/// SIGKILL: no goodbye; the relay finds the service gone by its idle
/// timeout (shortened here to 3 s) as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_is_offline_at_the_relay_after_its_idle_timeout() {
    let idle = Duration::from_secs(3);
    let relay = TestRelay::start_with(|c| c.limits.idle_timeout = idle).await;
    let mut svc = ServiceProcess::enrolled(None, &relay, "SN-KILLED", "", &[], &[]).await;
    eventually(20, "the service online at the relay", || {
        relay.relay().services_online() == 1
    })
    .await;
    svc.kill().await;
    eventually(
        idle.as_secs() + 10,
        "the relay showing the service offline",
        || relay.relay().services_online() == 0,
    )
    .await;
    assert!(!svc.log().contains("said goodbye"), "{}", svc.log());
}

/// A service connection spoken by hand: `serial`'s enrollment (from its
/// inventory in `dir`), hello sent, welcome read; the hello stream's
/// halves (the control stream).
async fn raw_service_conn(
    dir: &std::path::Path,
) -> (
    switchyard::wire::mux::Conn,
    switchyard::wire::mux::SendHalf,
    switchyard::wire::mux::RecvHalf,
) {
    use switchyard::secret::Secret;
    use switchyard::service::inventory::Inventory;
    use switchyard::wire::conn::{read_frame, write_frame};
    use switchyard::wire::relay::{HelloReply, RelayHello};
    let inv = Inventory::open(
        &dir.join("inv.db"),
        &Secret::new(common::service::ADMIN_PASSWORD),
    )
    .unwrap();
    let e = inv.relay_enrollment().unwrap().unwrap();
    let limits = switchyard::wire::conn::TransportLimits::default();
    let roots = switchyard::tls::root_store_of(&e.ca_der).unwrap();
    let config = switchyard::wire::conn::relay_client_config(
        roots,
        Some((e.cert_der.clone(), &e.key_der)),
        &limits,
    )
    .unwrap();
    let addr: std::net::SocketAddr = e.quic.parse().unwrap();
    let endpoint = switchyard::wire::conn::client_endpoint(addr).unwrap();
    let host = switchyard::service::relay_agent::relay_host(&e.url).unwrap();
    let quic = endpoint
        .connect_with(config, addr, &host)
        .unwrap()
        .await
        .unwrap();
    let conn = switchyard::wire::mux::Conn::Quic(quic);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = RelayHello::Service { advertise: None };
    write_frame(&mut send, &hello, limits.max_frame)
        .await
        .unwrap();
    let welcome = read_frame::<HelloReply>(&mut recv, limits.max_frame).await;
    assert!(
        matches!(welcome, Ok(Some(HelloReply::Welcome { .. }))),
        "{welcome:?}"
    );
    (conn, send, recv)
}

/// The relay finished its side of the control stream without answering
/// ("not understood"), and the service is online on `conn`, still open.
async fn answered_not_understood(
    relay: &TestRelay,
    conn: &switchyard::wire::mux::Conn,
    recv: &mut switchyard::wire::mux::RecvHalf,
) {
    use switchyard::wire::relay::NoticeReply;
    let max = switchyard::wire::conn::TransportLimits::default().max_frame;
    let answer = within(
        5,
        "the relay's side finished",
        switchyard::wire::conn::read_frame::<NoticeReply>(recv, max),
    )
    .await;
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    assert_eq!(relay.relay().services_online(), 1);
    assert!(!conn.is_closed());
}

/// Either side may be older: a service that finishes its hello stream
/// (as every service before the goodbye did) stays online, and gets the
/// stream finished back; a notice the relay cannot read is answered the
/// same way ("not understood"), the connection untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_service_or_an_unknown_notice_leaves_the_connection_alone() {
    let relay = TestRelay::start().await;
    let mut svc = common::cloud::CloudService::start(&relay, "SN-OLD", &[]).await;
    svc.stop().await;
    assert_eq!(relay.relay().services_online(), 0);

    // An older service: hello, then the stream finished.
    let (conn, mut send, mut recv) = raw_service_conn(svc.dir.path()).await;
    send.finish().unwrap();
    answered_not_understood(&relay, &conn, &mut recv).await;
    conn.close(0, b"done");
    eventually(5, "the older service offline", || {
        relay.relay().services_online() == 0
    })
    .await;

    // A newer service's notice this relay cannot decode.
    let (conn, mut send, mut recv) = raw_service_conn(svc.dir.path()).await;
    let unknown = switchyard::wire::relay::RelayHello::Node {
        id: "not-a-notice".into(),
    };
    let max = switchyard::wire::conn::TransportLimits::default().max_frame;
    switchyard::wire::conn::write_frame(&mut send, &unknown, max)
        .await
        .unwrap();
    answered_not_understood(&relay, &conn, &mut recv).await;
    conn.close(0, b"done");
}

/// A call running through the relay when the service is stopped finishes
/// (the service drains it, and the relay keeps carrying its tunnel after
/// the goodbye), while the relay already shows the service offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_call_running_at_sigterm_finishes_after_the_goodbye() {
    let sshd = common::sshd::Sshd::start(10).await;
    let relay = TestRelay::start().await;
    let slow = common::service::sshd_device("core-slow", sshd.port);
    let svc = ServiceProcess::enrolled(None, &relay, "SN-DRAIN", "", &[slow], &[]).await;
    eventually(20, "the service online at the relay", || {
        relay.relay().services_online() == 1
    })
    .await;
    let (broker, client, session, service, _attach) = reach(&relay, "SN-DRAIN").await;
    let call = {
        let (mut client, service) = (
            client.clone(),
            common::broker::in_session(&session, &service),
        );
        tokio::spawn(async move {
            common::broker::run_exec(
                &mut client,
                service,
                &["core-slow"],
                &["sleep 4; echo drained"],
            )
            .await
        })
    };
    eventually(20, "the call at the device", || sshd.accepted() >= 1).await;

    let log_path = svc.dir.path().join("service.log");
    let stopping = terminate_until_offline(svc, &relay).await;
    assert!(
        !call.is_finished(),
        "the call has ended: it must run on after the goodbye"
    );
    let reports = within(30, "the running call", call)
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the running call failed: {e}\nservice:\n{}\nbroker:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default(),
                broker.log()
            )
        });
    assert!(reports[0].ok_output().contains("drained"), "{reports:?}");
    let svc = within(30, "the service stopped", stopping).await.unwrap();
    assert_said_goodbye(&svc);
}
