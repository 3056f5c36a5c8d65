//! The relay over TLS/TCP (HTTP/2 streams) and through HTTP proxies, with
//! real parts: a relay, a service enrolled with it, a broker process and
//! a real tinyproxy. Tunnels carried in the relay's TCP streams stay end to
//! end encrypted (the relay forwards neither commands nor output in the
//! clear); a cloud login names a proxy (`--proxy`, the API's
//! `RelaySelector.proxy_url`) and the broker reaches the relay through it,
//! over TCP, the proxy's log showing the CONNECTs; wrong proxy
//! credentials are an error naming the proxy and its answer.

mod common;

use common::broker::{TestBroker, open_attached, status};
use common::cloud::{
    ALICE, CloudCaller, CloudService, TestRelay, assert_ciphertext_only, assert_show_version,
    broker_for, broker_for_with, cloud_service,
};
use common::tinyproxy::Tinyproxy;
use common::within;
use switchyard::api::pb;
use switchyard::transport_policy::{TransportMode, TransportPolicy};

fn tcp_only() -> TransportPolicy {
    TransportPolicy {
        mode: TransportMode::Tcp,
        ..Default::default()
    }
}

/// Broker and service both on the relay's TCP listener: the tunnel's inner
/// QUIC rides HTTP/2 streams through the relay, which forwards only
/// ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_through_the_relays_tcp_listener_carry_only_ciphertext() {
    let (relay, mut tap) = TestRelay::start_tapped_with(|_| {}).await;
    assert_eq!(relay.relay().tcp_addr(), Some(relay.relay().quic_addr()));
    let otp = relay.otp("SN-TCPTAP");
    let _svc = CloudService::start_over(&relay, "SN-TCPTAP", &otp, &[], tcp_only())
        .await
        .unwrap();
    let broker = broker_for_with(&relay, &[("SWITCHYARD_BROKER__TRANSPORT", "tcp")]).await;
    let mut caller = CloudCaller::start(&broker, &relay.token(ALICE), "SN-TCPTAP").await;
    let logins = status(&broker).await.logins;
    assert_eq!(logins[0].carrier, "tcp", "{logins:?}");

    let command = "show running-config";
    let out = caller.exec("core-1", &[command]).await.unwrap();
    assert!(out[0].ok_output().contains("hostname core-1"));
    let seen = assert_ciphertext_only(&mut tap, command, "hostname core-1", ALICE);
    assert!(seen > 1000, "the tunnel crossed the relay: {seen} bytes");
}

/// A token login naming a real tinyproxy (with Basic authentication):
/// the broker's HTTPS requests and its relay connection (then TLS/TCP) go
/// through it, `status` says `tcp via proxy HOST:PORT`, a relayed exec
/// works; wrong proxy credentials (the CLI's `--proxy`) fail naming the
/// proxy and its answer, never echoing the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_login_and_relayed_exec_go_through_a_real_http_proxy() {
    let (relay, _svc, proxy, broker) = proxy_lab("SN-PROXY").await;

    // Wrong credentials, from the CLI.
    let dir = broker.dir.path();
    let token_file = dir.join("token");
    std::fs::write(&token_file, relay.token(ALICE)).unwrap();
    let wrong = dir.join("wrong-proxy-pw");
    std::fs::write(&wrong, "wr0ng-pr0xy\n").unwrap();
    let out = within(
        30,
        "a login with wrong proxy credentials",
        broker
            .command()
            .args(["login", "token", "--token-file"])
            .arg(&token_file)
            .args(["--proxy", &proxy.url(Some("bob"))])
            .arg("--proxy-password-file")
            .arg(&wrong)
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    let proxy_addr = proxy.url(None).trim_start_matches("http://").to_string();
    assert!(
        stderr.contains(&format!("the proxy {proxy_addr} refused CONNECT")),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 40"), "{stderr}");
    assert!(!stderr.contains("wr0ng-pr0xy"), "{stderr}");

    // The right ones, through the API.
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    within(
        30,
        "a login through the proxy",
        client.access_token_login(pb::AccessTokenLoginRequest {
            session_id: session.clone(),
            token: relay.token(ALICE),
            relay: through(&proxy),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    assert_login_went_through(&broker, &relay, &proxy, &mut client, &session, "SN-PROXY").await;
    let text = String::from_utf8_lossy(
        &broker
            .command()
            .arg("status")
            .output()
            .await
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        text.contains(&format!("tcp via proxy {proxy_addr}")),
        "{text}"
    );
    assert!(!text.contains("pr0xy-s3cret") && !broker.log().contains("pr0xy-s3cret"));
}

/// What a login through `proxy` must show: a relayed exec works, then
/// `status` says `tcp via proxy HOST:PORT`, and the proxy's log holds
/// CONNECTs to the relay's HTTPS port and to its relay (TLS/TCP) port.
async fn assert_login_went_through(
    broker: &TestBroker,
    relay: &TestRelay,
    proxy: &Tinyproxy,
    client: &mut common::cloud::Client,
    session: &str,
    serial: &str,
) {
    let service = cloud_service(client, session, serial, Some(10.0)).await;
    assert_show_version(client, session, &service).await;
    let proxy_addr = proxy.url(None).trim_start_matches("http://").to_string();
    let logins = status(broker).await.logins;
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(
        logins[0].carrier,
        format!("tcp via proxy {proxy_addr}"),
        "{logins:?}"
    );
    let log = proxy.log();
    let https = format!("CONNECT 127.0.0.1:{}", relay.http_addr().port());
    let tcp = format!("CONNECT 127.0.0.1:{}", relay.relay().quic_addr().port());
    assert!(log.contains(&https), "the login's HTTPS requests: {log}");
    assert!(log.contains(&tcp), "the relay connection: {log}");
    assert!(!broker.log().contains("pr0xy-s3cret"));
}

/// A relay with `serial` enrolled and online, a real tinyproxy asking for
/// bob's Basic credentials, and a broker for the relay.
async fn proxy_lab(serial: &str) -> (TestRelay, CloudService, Tinyproxy, TestBroker) {
    let relay = TestRelay::start().await;
    let svc = CloudService::start(&relay, serial, &[]).await;
    let proxy = Tinyproxy::start(Some(("bob", "pr0xy-s3cret"))).await;
    let broker = broker_for(&relay).await;
    (relay, svc, proxy, broker)
}

/// The proxy as a login names it: tinyproxy's URL with user bob and his
/// password.
fn through(proxy: &Tinyproxy) -> Option<pb::RelaySelector> {
    Some(pb::RelaySelector {
        proxy_url: proxy.url(Some("bob")),
        proxy_password: "pr0xy-s3cret".into(),
        ..Default::default()
    })
}

/// A certificate login (the client certificate enrolled beforehand, with
/// a token login that does not use the proxy) naming a real tinyproxy with
/// Basic authentication: its relay connection is TLS/TCP through the proxy
/// (the client certificate presented inside the tunnel), `status` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_login_goes_through_a_real_http_proxy() {
    let (relay, _svc, proxy, broker) = proxy_lab("SN-PROXY-CERT").await;
    let mut client = broker.client().await;
    let enrolled = common::cloud::enroll_alice_cert(&mut client, &relay).await;
    client.logout(pb::LogoutRequest::default()).await.unwrap();
    assert!(
        !proxy.log().contains("CONNECT 127.0.0.1:"),
        "{}",
        proxy.log()
    );

    let (session, _attach) = open_attached(&mut client).await;
    let login = within(
        30,
        "a certificate login through the proxy",
        client.certificate_login(pb::CertificateLoginRequest {
            session_id: session.clone(),
            identity: ALICE.into(),
            cert_pem: enrolled.cert_pem.clone(),
            encrypted_key: enrolled.encrypted_key.clone(),
            key_password: common::cloud::KEY_PASSWORD.into(),
            relay: through(&proxy),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()))
    .into_inner();
    assert_eq!(login.method, "certificate");
    assert_login_went_through(
        &broker,
        &relay,
        &proxy,
        &mut client,
        &session,
        "SN-PROXY-CERT",
    )
    .await;
}

/// An SSO login's next event (within `secs`).
async fn next_event(
    events: &mut tonic::Streaming<pb::SsoLoginEvent>,
    broker: &TestBroker,
    secs: u64,
    what: &str,
) -> Option<pb::sso_login_event::Event> {
    within(secs, what, events.message())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()))
        .unwrap()
        .event
}

/// An SSO login (OAuth device grant, approved on the relay's page)
/// naming a real tinyproxy with Basic authentication: the device-grant
/// requests and the relay connection go through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_login_goes_through_a_real_http_proxy() {
    let (relay, _svc, proxy, broker) = proxy_lab("SN-PROXY-SSO").await;
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let mut events = within(
        30,
        "an SSO login through the proxy",
        client.sso_login(pb::SsoLoginRequest {
            session_id: session.clone(),
            identity: ALICE.into(),
            relay: through(&proxy),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()))
    .into_inner();
    let Some(pb::sso_login_event::Event::Prompt(prompt)) =
        next_event(&mut events, &broker, 10, "prompt").await
    else {
        panic!("expected a prompt first");
    };
    relay
        .decide(
            &prompt.user_code,
            ALICE,
            common::cloud::ALICE_SSO_PASSWORD,
            true,
        )
        .await;
    let Some(pb::sso_login_event::Event::LoggedIn(_)) =
        next_event(&mut events, &broker, 20, "login").await
    else {
        panic!("expected the login");
    };
    assert_login_went_through(
        &broker,
        &relay,
        &proxy,
        &mut client,
        &session,
        "SN-PROXY-SSO",
    )
    .await;
}

/// HTTP/2 streams a pre-login peer opens in the window tests, asking
/// each for more than any window.
const GREEDY_STREAMS: usize = 8;
const GREEDY_ASK: usize = 1024 * 1024;

/// A raw HTTP/2 connection (TLS, any certificate) to `addr` that logs in
/// on none of its [`GREEDY_STREAMS`] streams and asks to send
/// [`GREEDY_ASK`] on each: the send credit the listener's flow control
/// grants (bytes it would have to buffer), counted once a PING has come
/// back after its SETTINGS and WINDOW_UPDATEs.
async fn h2_prelogin_credit(addr: std::net::SocketAddr) -> usize {
    use switchyard::wire::pin::PinnedServerVerifier;
    let tls = switchyard::wire::tcp::client_tls(PinnedServerVerifier::new(None));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let (client, mut connection) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(tls)
        .await
        .unwrap();
    let mut ping = connection.ping_pong().unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut streams = Vec::new();
    for _ in 0..GREEDY_STREAMS {
        let mut ready = client.clone().ready().await.unwrap();
        let request = http::Request::post(format!("https://{addr}/rpc"))
            .body(())
            .unwrap();
        let (response, mut send) = ready.send_request(request, false).unwrap();
        send.reserve_capacity(GREEDY_ASK);
        streams.push((send, response));
    }
    // The listener's SETTINGS and window updates came before its answer.
    within(10, "a PING answered", ping.ping(h2::Ping::opaque()))
        .await
        .unwrap();
    let credit = streams.iter().map(|(send, _)| send.capacity()).sum();
    driver.abort();
    credit
}

/// A raw QUIC connection to `addr` (any certificate) that logs in on
/// none of its streams: a first stream left empty (where a login would
/// go), then [`GREEDY_STREAMS`] streams each writing up to [`GREEDY_ASK`].
/// The bytes written once the writers have stalled on the listener's flow
/// control (quinn buffers no more than the peer's windows allow).
async fn quic_prelogin_credit(addr: std::net::SocketAddr, alpn: &[u8]) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchyard::wire::pin::PinnedServerVerifier;
    let mut tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .dangerous()
        .with_custom_certificate_verifier(PinnedServerVerifier::new(None))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let limits = switchyard::wire::conn::TransportLimits::default();
    let transport = std::sync::Arc::new(switchyard::wire::conn::transport_config(&limits));
    let config = switchyard::wire::conn::quic_client_config(tls, transport).unwrap();
    let endpoint = switchyard::wire::conn::client_endpoint(addr).unwrap();
    let conn = endpoint
        .connect_with(config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (_login_send, _login_recv) = conn.open_bi().await.unwrap();
    let written = std::sync::Arc::new(AtomicUsize::new(0));
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..GREEDY_STREAMS {
        let (conn, written) = (conn.clone(), written.clone());
        writers.spawn(async move {
            let (mut send, _recv) = conn.open_bi().await.unwrap();
            let chunk = vec![0x55u8; 16 * 1024];
            let mut sent = 0;
            while sent < GREEDY_ASK {
                let n = send.write(&chunk).await.unwrap();
                sent += n;
                written.fetch_add(n, Ordering::Relaxed);
            }
        });
    }
    // Some bytes get through at once; then the writers stall for as long
    // as nobody logs in (a bound, not a synchronisation: a listener with
    // full windows takes all 8 MiB well within it).
    common::eventually(10, "the first bytes written", || {
        written.load(Ordering::Relaxed) > 0
    })
    .await;
    // (Every writer done: no flow control held them; the count says so.)
    let _all_done = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while writers.join_next().await.is_some() {}
    })
    .await;
    writers.shutdown().await;
    written.load(Ordering::Relaxed)
}

/// A peer that has not logged in gets small receive windows on every
/// listener a stranger can reach: the relay's TCP and QUIC listeners and a
/// service's TCP and QUIC listeners let it send at most
/// `PRELOGIN_CONNECTION_WINDOW` (256 KiB) per connection, not the 32 MiB a
/// logged-in peer gets (with full windows each would take all 8 MiB).
/// That logins grow them again: every relayed and direct test moves bulk
/// output; the README's bulk figures measure the speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_have_not_logged_in_get_small_receive_windows() {
    use switchyard::wire::conn::PRELOGIN_CONNECTION_WINDOW;
    let cap = PRELOGIN_CONNECTION_WINDOW as usize;
    let relay = TestRelay::start().await;
    let mut svc = common::process::ServiceProcess::new(None);
    let svc_quic = svc.start().await;
    let svc_tcp = svc.tcp_addr.expect("the service's TCP listener");
    let credits = [
        (
            "relay TCP",
            h2_prelogin_credit(relay.relay().tcp_addr().unwrap()).await,
        ),
        ("service TCP", h2_prelogin_credit(svc_tcp).await),
        (
            "relay QUIC",
            quic_prelogin_credit(
                relay.relay().quic_addr(),
                switchyard::wire::relay::RELAY_ALPN,
            )
            .await,
        ),
        (
            "service QUIC",
            quic_prelogin_credit(svc_quic, switchyard::wire::messages::ALPN).await,
        ),
    ];
    for (what, credit) in &credits {
        eprintln!("{what}: a pre-login peer may send {credit} bytes");
    }
    for (what, credit) in credits {
        assert!(
            credit > 0 && credit <= cap,
            "{what}: {credit} bytes before login"
        );
    }
}
