//! The relay over TLS/TCP (HTTP/2 streams) and through HTTP proxies, with
//! real parts: a relay, a service enrolled with it, a broker process and
//! a real tinyproxy. Tunnels carried in the relay's TCP streams stay end to
//! end encrypted (the relay forwards neither commands nor output in the
//! clear); a cloud login names a proxy (`--proxy`, the API's
//! `RelaySelector.proxy_url`) and the broker reaches the relay through it,
//! over TCP, the proxy's log showing the CONNECTs; wrong proxy
//! credentials are an error naming the proxy and its answer.

mod common;

use common::broker::{open_attached, status};
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
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-PROXY", &[]).await;
    let proxy = Tinyproxy::start(Some(("bob", "pr0xy-s3cret"))).await;
    let broker = broker_for(&relay).await;

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
            relay: Some(pb::RelaySelector {
                proxy_url: proxy.url(Some("bob")),
                proxy_password: "pr0xy-s3cret".into(),
                ..Default::default()
            }),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    let service = cloud_service(&mut client, &session, "SN-PROXY", Some(10.0)).await;
    assert_show_version(&mut client, &session, &service).await;
    let logins = status(&broker).await.logins;
    assert_eq!(
        logins[0].carrier,
        format!("tcp via proxy {proxy_addr}"),
        "{logins:?}"
    );
    let log = proxy.log();
    let https = format!("CONNECT 127.0.0.1:{}", relay.http_addr().port());
    let tcp = format!("CONNECT 127.0.0.1:{}", relay.relay().quic_addr().port());
    assert!(log.contains(&https), "the well-known request: {log}");
    assert!(log.contains(&tcp), "the relay connection: {log}");
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
