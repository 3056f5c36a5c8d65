//! The TCP transport (TLS 1.3 + HTTP/2) of the service RPC socket, with
//! real sockets on loopback: logins, calls and pinning as over QUIC, the
//! broker's `connect direct --rpc-url`, one shared login limiter, and bad
//! input on the listener ending only its own connection.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::broker::{TestBroker, named, run_exec};
use common::service::{ALICE_PASSWORD, TestService, start_service};
use common::within;
use switchyard::broker::direct_client::{DirectConnection, DirectTarget, connect, connect_tcp};
use switchyard::broker::link::{LinkChannel, LinkError};
use switchyard::secret::Secret;
use switchyard::service::ratelimit::LimiterConfig;
use switchyard::service::rpc::RpcConfig;
use switchyard::wire::conn::{Liveness, TransportLimits, client_endpoint};
use switchyard::wire::frame::PROTOCOL_VERSION;
use switchyard::wire::messages::{ErrorCode, Request, RequestEnvelope, Response};
use switchyard::wire::mux::{Carrier, Conn};
use switchyard::wire::pin::Fingerprint;
use switchyard::wire::tcp::RpcUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A service with a TCP listener on a free loopback port.
fn tcp_service(config: RpcConfig) -> TestService {
    start_service(
        &[],
        RpcConfig {
            tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..config
        },
    )
}

fn tcp_addr(svc: &TestService) -> SocketAddr {
    svc.server
        .as_ref()
        .and_then(|s| s.tcp_addr())
        .expect("a TCP listener")
}

fn rpc_url(svc: &TestService) -> String {
    format!("https://{}/rpc", tcp_addr(svc))
}

fn target(svc: &TestService, password: &str, fingerprint: Option<Fingerprint>) -> DirectTarget {
    DirectTarget {
        label: rpc_url(svc),
        addr: tcp_addr(svc),
        username: "alice".into(),
        password: Secret::new(password),
        fingerprint,
        rpc_url: Some(RpcUrl::parse(&rpc_url(svc)).unwrap()),
        proxy: None,
    }
}

async fn login_tcp_with(
    svc: &TestService,
    password: &str,
    limits: &TransportLimits,
) -> Result<DirectConnection, LinkError> {
    within(
        20,
        "TCP login",
        connect_tcp(&target(svc, password, Some(svc.fingerprint)), limits),
    )
    .await
}

async fn login_tcp(svc: &TestService) -> DirectConnection {
    let c = login_tcp_with(svc, ALICE_PASSWORD, &TransportLimits::default())
        .await
        .expect("TCP login");
    assert_eq!(c.conn.carrier(), Carrier::Tcp);
    c
}

fn channel(c: &DirectConnection) -> LinkChannel {
    LinkChannel::Remote {
        conn: c.conn.clone(),
        target: "tcp test".into(),
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

async fn collect(ch: &LinkChannel, request: Request) -> Result<Vec<Response>, LinkError> {
    let mut call = ch.call(req(request)).await?;
    let mut out = Vec::new();
    while let Some(r) = within(30, "response", call.next()).await {
        out.push(r?);
    }
    Ok(out)
}

async fn assert_works(ch: &LinkChannel, after: &str) {
    assert_eq!(
        collect(ch, Request::Ping)
            .await
            .unwrap_or_else(|e| panic!("{after}: {e}")),
        vec![Response::Pong],
        "{after}"
    );
}

/// Reads until the service closes the connection (end of file or a reset).
async fn closed_by_service(stream: &mut tokio::net::TcpStream, what: &str) {
    let mut buf = [0u8; 4096];
    within(10, what, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tcp_run_on_their_own_streams_and_the_certificate_is_pinned() {
    let svc = tcp_service(RpcConfig::default());
    let c = login_tcp(&svc).await;
    assert_eq!(c.service_name, "test-service");
    assert_eq!(c.fingerprint, svc.fingerprint);
    let ch = channel(&c);
    let inventory = collect(&ch, Request::Inventory).await.unwrap();
    let Response::Inventory(devices) = &inventory[0] else {
        panic!("{inventory:?}")
    };
    let names: Vec<_> = devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["core-1", "core-2", "edge-1"]);

    // A terminal whose caller reads nothing holds its own stream only:
    // other calls on the same connection go on.
    let mut terminal = ch
        .call(req(Request::Terminal {
            device: "core-1".into(),
            cols: 80,
            rows: 24,
        }))
        .await
        .unwrap();
    for _ in 0..20 {
        assert_works(&ch, "beside an open terminal").await;
    }
    assert_eq!(
        within(10, "terminal ready", terminal.next())
            .await
            .unwrap()
            .unwrap(),
        Response::TerminalReady
    );

    // Pinning: another fingerprint is refused by name, as over QUIC.
    let wrong = Fingerprint([7; 32]);
    match within(
        20,
        "pinned login",
        connect_tcp(
            &target(&svc, ALICE_PASSWORD, Some(wrong)),
            &TransportLimits::default(),
        ),
    )
    .await
    {
        Err(LinkError::FingerprintMismatch { presented, .. }) => {
            assert_eq!(presented, svc.fingerprint.to_string())
        }
        Err(other) => panic!("expected a fingerprint mismatch, got {other}"),
        Ok(_) => panic!("a wrong pin was accepted"),
    }
    // A wrong password is refused as over QUIC.
    match login_tcp_with(&svc, "wrong", &TransportLimits::default()).await {
        Err(LinkError::Rejected { error, .. }) => {
            assert_eq!(error.code, ErrorCode::Unauthenticated)
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
}

/// Many short calls back to back and at once on one TCP link: each stream
/// ends cleanly on both sides, and a stream that ended is never written
/// again (once failed as "HTTP/2: user error: inactive stream").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_quick_calls_in_a_row_and_at_once_all_succeed_over_tcp() {
    let svc = tcp_service(RpcConfig::default());
    let c = login_tcp(&svc).await;
    let ch = channel(&c);
    for i in 0..300 {
        assert_works(&ch, &format!("ping {i} in a row")).await;
    }
    for round in 0..5 {
        let calls = (0..64).map(|_| collect(&ch, Request::Ping));
        for (i, got) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                got.unwrap_or_else(|e| panic!("round {round}, call {i}: {e}")),
                vec![Response::Pong]
            );
        }
    }
    for i in 0..40 {
        let out = collect(
            &ch,
            Request::Exec {
                devices: vec!["core-1".into()],
                commands: vec!["show version".into()],
                timeout_ms: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert!(
            out.iter()
                .any(|r| matches!(r, Response::ExecDevice { error: None, .. })),
            "exec {i}: {out:?}"
        );
    }
}

/// Password failures over TCP and over QUIC from one address count
/// together: TCP is no way around the limiter. (Each guess names another
/// user, so only the address's count can lock alice out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_quic_logins_share_one_failure_limiter() {
    let svc = tcp_service(RpcConfig {
        login_limiter: LimiterConfig {
            max_failures: 3,
            ..Default::default()
        },
        ..Default::default()
    });
    let limits = TransportLimits::default();
    for guess in 0..3 {
        let target = DirectTarget {
            username: format!("mallory-{guess}"),
            ..target(&svc, "wrong", Some(svc.fingerprint))
        };
        match within(20, "TCP guess", connect_tcp(&target, &limits)).await {
            Err(LinkError::Rejected { error, .. }) => {
                assert_eq!(error.code, ErrorCode::Unauthenticated)
            }
            Err(other) => panic!("expected a refusal, got {other}"),
            Ok(_) => panic!("a wrong password was accepted"),
        }
    }
    // The right password, now over QUIC from the same address: locked.
    let endpoint = client_endpoint(svc.addr()).unwrap();
    let quic = DirectTarget {
        label: svc.addr().to_string(),
        addr: svc.addr(),
        rpc_url: None,
        ..target(&svc, ALICE_PASSWORD, Some(svc.fingerprint))
    };
    match within(20, "QUIC login", connect(&endpoint, &quic, &limits)).await {
        Err(LinkError::Rejected { error, .. }) => {
            assert_eq!(error.code, ErrorCode::ResourceExhausted, "{error:?}")
        }
        Err(other) => panic!("expected a lockout, got {other}"),
        Ok(_) => panic!("three failures over TCP did not count for QUIC"),
    }
}

/// Bytes that are not TLS, a TLS client that never finishes its
/// handshake, a caller that half-closes mid-handshake, an oversized frame
/// and a logged-in caller gone silent each end only their own connection;
/// a good caller on the same listener keeps working throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_tcp_listener_closes_only_that_connection() {
    let svc = tcp_service(RpcConfig {
        auth_timeout: Duration::from_secs(2),
        limits: TransportLimits {
            idle_timeout: Duration::from_secs(3),
            ..Default::default()
        },
        ..Default::default()
    });
    let good = login_tcp(&svc).await;
    let ch = channel(&good);
    assert_works(&ch, "at first").await;

    // Not TLS at all.
    let mut plain = tokio::net::TcpStream::connect(tcp_addr(&svc))
        .await
        .unwrap();
    plain
        .write_all(b"GET /rpc HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_by_service(&mut plain, "closing a plain-text connection").await;
    assert_works(&ch, "after plain text").await;

    // A TLS client that starts a ClientHello and never finishes it: ended
    // by the login deadline (2 s here), not held for ever.
    let mut stalled = tokio::net::TcpStream::connect(tcp_addr(&svc))
        .await
        .unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    closed_by_service(&mut stalled, "closing a stalled handshake").await;
    assert_works(&ch, "after a stalled handshake").await;

    // Half-open: the caller sends its FIN mid-handshake and keeps its
    // socket; the service closes its side.
    let mut half = tokio::net::TcpStream::connect(tcp_addr(&svc))
        .await
        .unwrap();
    half.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    half.shutdown().await.unwrap();
    closed_by_service(&mut half, "closing a half-closed connection").await;
    assert_works(&ch, "after a half-closed connection").await;

    // An oversized frame from a logged-in caller: that connection is closed.
    let bad = login_tcp(&svc).await;
    let (mut send, _recv) = bad.conn.open_bi().await.unwrap();
    let header = vec![PROTOCOL_VERSION, 0x04, 0, 0, 0, 0, 0, 0, 0];
    send.write_chunks(&mut [header.into()]).await.unwrap();
    let reason = within(10, "closing an oversized frame", bad.conn.closed()).await;
    assert!(!reason.is_empty());
    assert!(bad.conn.is_closed());
    assert_works(&ch, "after an oversized frame").await;

    // A logged-in caller that goes silent (no keep-alives: it vanished
    // without a FIN) is closed after the idle timeout (3 s here).
    let silent_limits = TransportLimits {
        keep_alive: Duration::from_secs(3600),
        ..Default::default()
    };
    let silent = login_tcp_with(&svc, ALICE_PASSWORD, &silent_limits)
        .await
        .unwrap();
    let reason = within(15, "closing a silent caller", silent.conn.closed()).await;
    assert!(!reason.is_empty());
    // The good caller sends keep-alives: still there, still working.
    assert!(!good.conn.is_closed(), "the good connection was closed");
    assert_works(&ch, "after a silent caller").await;
    assert!(matches!(good.conn, Conn::H2(_)));
}

/// `switchyard connect direct NAME --rpc-url ...` reaches the service over
/// TCP through a real broker, and exec runs over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_direct_with_rpc_url_execs_over_tcp() {
    let svc = tcp_service(RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let pw = broker.dir.path().join("alice-pw");
    std::fs::write(&pw, format!("{ALICE_PASSWORD}\n")).unwrap();
    let url = rpc_url(&svc);
    let out = within(
        30,
        "connect direct --rpc-url",
        broker
            .command()
            .args(["connect", "direct", "tcp-svc", "--rpc-url", &url])
            .args(["--user", "alice", "--password-file"])
            .arg(&pw)
            .args(["--fingerprint", &svc.fingerprint.to_string()])
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&url), "{stdout}");
    let mut client = broker.client().await;
    let reports = run_exec(
        &mut client,
        named("tcp-svc"),
        &["core-1", "edge-1"],
        &["show version"],
    )
    .await
    .unwrap();
    assert!(reports[0].ok_output().contains("core-1 uptime"));
    assert!(reports[1].ok_output().contains("edge-1 uptime"));
    // Calls in quick succession and at once share the one TCP link.
    for i in 0..100 {
        let reports = run_exec(
            &mut client,
            named("tcp-svc"),
            &["core-1"],
            &["show version"],
        )
        .await
        .unwrap_or_else(|e| panic!("exec {i} in a row: {e:?}"));
        assert!(reports[0].ok_output().contains("core-1 uptime"), "exec {i}");
    }
    let at_once = (0..32).map(|_| {
        let mut client = client.clone();
        async move {
            run_exec(
                &mut client,
                named("tcp-svc"),
                &["edge-1"],
                &["show version"],
            )
            .await
        }
    });
    for (i, got) in futures::future::join_all(at_once)
        .await
        .into_iter()
        .enumerate()
    {
        let reports = got.unwrap_or_else(|e| panic!("exec {i} at once: {e:?}"));
        assert!(reports[0].ok_output().contains("edge-1 uptime"), "exec {i}");
    }
    let status = common::broker::status(&broker).await;
    assert!(
        status
            .links
            .iter()
            .any(|l| l.target == url && l.carrier == "tcp"),
        "no link to {url} over tcp: {status:?}"
    );
    // The CLI's status says so too.
    let out = within(30, "status", broker.command().arg("status").output())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(direct, tcp)"), "{text}");

    // A bad rpc_url is the caller's mistake, said plainly.
    let out = within(
        30,
        "connect direct --rpc-url http://",
        broker
            .command()
            .args(["connect", "direct", "bad", "--rpc-url"])
            .arg(url.replace("https", "http"))
            .args(["--user", "alice", "--password-file"])
            .arg(&pw)
            .output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the scheme must be https"), "{stderr}");
}

/// `connect direct --rpc-url URL --proxy P` through a real tinyproxy, with
/// and without Basic authentication: exec runs through it and its log
/// shows the CONNECT; wrong proxy credentials give an error naming the
/// proxy and its 407, and the password appears in no output or log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_direct_through_a_real_http_proxy() {
    let open_svc = tcp_service(RpcConfig::default());
    let auth_svc = tcp_service(RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let dir = broker.dir.path();
    let pw = dir.join("alice-pw");
    std::fs::write(&pw, format!("{ALICE_PASSWORD}\n")).unwrap();
    let connect = |name: &str, svc: &TestService, proxy: String, proxy_pw: Option<&str>| {
        let mut cmd = broker.command();
        cmd.args(["connect", "direct", name, "--rpc-url", &rpc_url(svc)])
            .args(["--user", "alice", "--password-file"])
            .arg(&pw)
            .args(["--fingerprint", &svc.fingerprint.to_string()])
            .args(["--proxy", &proxy]);
        if let Some(secret) = proxy_pw {
            let file = dir.join(format!("{name}-proxy-pw"));
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            cmd.arg("--proxy-password-file").arg(file);
        }
        cmd
    };
    let exec_ok = async |name: &str| {
        let mut client = broker.client().await;
        let reports = run_exec(&mut client, named(name), &["core-1"], &["show version"])
            .await
            .unwrap();
        assert!(reports[0].ok_output().contains("core-1 uptime"));
    };

    // An open proxy.
    let open = common::tinyproxy::Tinyproxy::start(None).await;
    let out = within(
        30,
        "connect via proxy",
        connect("via-open", &open_svc, open.url(None), None).output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exec_ok("via-open").await;
    let connect_line = format!("CONNECT 127.0.0.1:{}", tcp_addr(&open_svc).port());
    assert!(open.log().contains(&connect_line), "{}", open.log());

    // A proxy that wants Basic credentials: wrong ones are refused by name.
    let auth = common::tinyproxy::Tinyproxy::start(Some(("bob", "proxy-s3cret"))).await;
    let out = within(
        30,
        "connect with wrong proxy credentials",
        connect(
            "via-auth",
            &auth_svc,
            auth.url(Some("bob")),
            Some("wrong-pr0xy-pw"),
        )
        .output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 407, or 401 (what tinyproxy answers).
    assert!(
        stderr.contains("HTTP 407") || stderr.contains("HTTP 401"),
        "{stderr}"
    );
    assert!(stderr.contains("refused the ones given"), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", auth.port)),
        "{stderr}"
    );
    // The right ones pass.
    let out = within(
        30,
        "connect with proxy credentials",
        connect(
            "via-auth",
            &auth_svc,
            auth.url(Some("bob")),
            Some("proxy-s3cret"),
        )
        .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exec_ok("via-auth").await;
    let connect_line = format!("CONNECT 127.0.0.1:{}", tcp_addr(&auth_svc).port());
    assert!(auth.log().contains(&connect_line), "{}", auth.log());

    // A password on the command line is refused before anything is sent.
    let out = within(
        30,
        "a proxy password in --proxy",
        connect(
            "leak",
            &auth_svc,
            format!("http://bob:proxy-s3cret@127.0.0.1:{}", auth.port),
            None,
        )
        .output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-password-file"));

    let status = common::broker::status(&broker).await;
    let via =
        |proxy: &common::tinyproxy::Tinyproxy| format!("tcp via proxy 127.0.0.1:{}", proxy.port);
    for (svc, proxy) in [(&open_svc, &open), (&auth_svc, &auth)] {
        assert!(
            status
                .links
                .iter()
                .any(|l| l.target == rpc_url(svc) && l.carrier == via(proxy)),
            "no link via {}: {status:?}",
            via(proxy)
        );
    }
    let everything = format!("{status:?}{}", broker.log());
    for secret in ["proxy-s3cret", "wrong-pr0xy-pw"] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
}
