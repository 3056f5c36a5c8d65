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

/// A plain TCP connection to `svc`'s TCP listener that has sent `bytes`.
async fn sending(svc: &TestService, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(tcp_addr(svc)).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
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
    let mut plain = sending(&svc, b"GET /rpc HTTP/1.1\r\nHost: x\r\n\r\n").await;
    closed_by_service(&mut plain, "closing a plain-text connection").await;
    assert_works(&ch, "after plain text").await;

    // A TLS client that starts a ClientHello and never finishes it: ended
    // by the login deadline (2 s here), not held for ever.
    let mut stalled = sending(&svc, &[0x16, 0x03, 0x01, 0x02, 0x00]).await;
    closed_by_service(&mut stalled, "closing a stalled handshake").await;
    assert_works(&ch, "after a stalled handshake").await;

    // Half-open: the caller sends its FIN mid-handshake and keeps its
    // socket; the service closes its side.
    let mut half = sending(&svc, &[0x16, 0x03, 0x01]).await;
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

/// A hand-written HTTP/2 peer (RFC 9113) on TLS to the service's
/// listener: it sends frames no well-behaved client would, and reads what
/// the service answers frame by frame.
mod raw_h2 {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use switchyard::wire::pin::{Fingerprint, PinnedServerVerifier};
    use switchyard::wire::tcp::client_tls;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::client::TlsStream;

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const ACK: u8 = 0x1;
    /// Error codes (RFC 9113 §7).
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    /// The service's answer to an accepted stream: `:status 200`, HPACK
    /// static index 8, and nothing else.
    pub const STATUS_200: [u8; 1] = [0x88];

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or a GOAWAY (RFC 9113 §6.4,
        /// §6.8); `None` for other frames.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            let code = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes(code.try_into().ok()?))
        }
    }

    pub struct Peer(TlsStream<tokio::net::TcpStream>);

    /// An HPACK integer (RFC 7541 §5.1) with a `prefix`-bit prefix.
    fn hpack_int(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// `POST /rpc` as an HPACK block (static-table names, no Huffman, no
    /// indexing), with one more header `x-pad` of `pad` bytes when not 0.
    pub fn post_rpc(pad: usize) -> Vec<u8> {
        // :method POST (static 3), :scheme https (static 7).
        let mut block = vec![0x83, 0x87];
        // :path (static name 4) and :authority (static name 1), literal
        // without indexing (RFC 7541 §6.2.2).
        for (name, value) in [(4u8, &b"/rpc"[..]), (1, b"x")] {
            block.push(name);
            hpack_int(&mut block, 0, 7, value.len());
            block.extend_from_slice(value);
        }
        if pad > 0 {
            block.push(0);
            hpack_int(&mut block, 0, 7, 5);
            block.extend_from_slice(b"x-pad");
            hpack_int(&mut block, 0, 7, pad);
            block.extend(std::iter::repeat_n(b'a', pad));
        }
        block
    }

    /// A frame's bytes: 9-byte header (24-bit length), then the payload.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    impl Peer {
        /// TLS (ALPN h2, the service pinned) and the HTTP/2 preface, both
        /// ends' SETTINGS acknowledged (so the service's limits apply).
        pub async fn connect(addr: SocketAddr, fp: Fingerprint) -> Self {
            let tls = client_tls(PinnedServerVerifier::new(Some(fp)));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let mut peer = Self(tls);
            let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            hello.extend(frame(SETTINGS, 0, 0, &[]));
            peer.send(&hello).await;
            let (mut theirs, mut ours_acked) = (false, false);
            while !(theirs && ours_acked) {
                let f = peer.next().await.expect("the service's SETTINGS");
                if f.kind == SETTINGS {
                    if f.flags & ACK != 0 {
                        ours_acked = true;
                    } else {
                        theirs = true;
                    }
                }
            }
            peer
        }

        /// Writes `bytes`; a service that has already closed is no error
        /// here (what it answered is read afterwards).
        pub async fn send(&mut self, bytes: &[u8]) {
            let _ = self.0.write_all(bytes).await;
            let _ = self.0.flush().await;
        }

        /// The next frame; `None` once the service has closed the
        /// connection. The service's SETTINGS are acknowledged on the way.
        pub async fn next(&mut self) -> Option<Frame> {
            let mut head = [0u8; 9];
            self.0.read_exact(&mut head).await.ok()?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            self.0.read_exact(&mut payload).await.ok()?;
            let f = Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
                payload,
            };
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                self.send(&frame(SETTINGS, ACK, 0, &[])).await;
            }
            Some(f)
        }

        /// Frames up to and including the first `want` matches; panics if
        /// the connection ends first.
        pub async fn until(&mut self, what: &str, want: impl Fn(&Frame) -> bool) -> Frame {
            loop {
                match self.next().await {
                    Some(f) if want(&f) => return f,
                    Some(_) => {}
                    None => panic!("the connection ended before {what}"),
                }
            }
        }

        /// The GOAWAY the service ends with, then the end of the
        /// connection; panics on a PING answer (the connection went on).
        pub async fn goaway_then_closed(&mut self) -> Frame {
            let goaway = loop {
                match self.next().await {
                    Some(f) if f.kind == GOAWAY => break f,
                    Some(f) if f.kind == PING => panic!("the service went on: {f:?}"),
                    Some(_) => {}
                    None => panic!("closed without a GOAWAY"),
                }
            };
            while self.next().await.is_some() {}
            goaway
        }

        /// A PING, and its answer: the connection is still served.
        pub async fn ping(&mut self) {
            self.send(&frame(PING, 0, 0, b"are-you?")).await;
            let f = self
                .until("a PING answer", |f| f.kind == PING || f.kind == GOAWAY)
                .await;
            assert_eq!((f.kind, f.flags), (PING, ACK), "{f:?}");
        }
    }
}

/// A good caller on its own connection, and a check that it still works.
async fn good_caller(svc: &TestService) -> (DirectConnection, LinkChannel) {
    let good = login_tcp(svc).await;
    let ch = channel(&good);
    assert_works(&ch, "at first").await;
    (good, ch)
}

/// A real TLS 1.3 client that sends its ClientHello, reads the service's
/// whole first flight and never sends its Finished: the service ends the
/// connection at the login deadline (`auth_timeout`, 4 s here; 10 s by
/// default), while a good caller keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_finishes_its_handshake_is_closed_at_the_login_deadline() {
    let svc = tcp_service(RpcConfig {
        auth_timeout: Duration::from_secs(4),
        ..Default::default()
    });
    let (good, ch) = good_caller(&svc).await;
    let verifier = switchyard::wire::pin::PinnedServerVerifier::new(Some(svc.fingerprint));
    let mut tls = rustls::ClientConnection::new(
        std::sync::Arc::new(switchyard::wire::tcp::client_tls(verifier)),
        rustls::pki_types::ServerName::IpAddress(tcp_addr(&svc).ip().into()),
    )
    .unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let mut stalled = sending(&svc, &hello).await;
    // The service's answer (ServerHello … Finished) comes, then nothing
    // until the deadline closes the connection.
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    within(20, "closing a handshake left unfinished", async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answered += n,
            }
        }
    })
    .await;
    assert!(answered > 0, "the service never answered the ClientHello");
    assert!(!good.conn.is_closed(), "the good connection was closed");
    assert_works(&ch, "after an unfinished handshake").await;
}

/// A TCP service with `limits`, a good caller of it, and a raw HTTP/2
/// peer connected to it that never logs in (the login deadline is far
/// beyond the test).
async fn raw_peer_beside_a_good_caller(
    limits: TransportLimits,
) -> (TestService, DirectConnection, LinkChannel, raw_h2::Peer) {
    let svc = tcp_service(RpcConfig {
        limits,
        auth_timeout: Duration::from_secs(120),
        ..Default::default()
    });
    let (good, ch) = good_caller(&svc).await;
    let peer = raw_h2::Peer::connect(tcp_addr(&svc), svc.fingerprint).await;
    (svc, good, ch, peer)
}

/// An HTTP/2 frame longer than the service's SETTINGS_MAX_FRAME_SIZE
/// (64 KiB) ends that connection with GOAWAY FRAME_SIZE_ERROR (RFC 9113
/// §4.2), before its payload is buffered; a good caller keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_http2_frame_closes_only_that_connection() {
    use raw_h2::*;
    let (_svc, good, ch, mut peer) =
        raw_peer_beside_a_good_caller(TransportLimits::default()).await;
    peer.ping().await;
    // An extension frame type (ignored by a peer that accepts its size),
    // one byte over the limit, then a PING that only a connection still
    // served would answer.
    let mut bytes = frame(0xfa, 0, 0, &vec![0u8; 64 * 1024 + 1]);
    bytes.extend(frame(PING, 0, 0, b"still-up"));
    peer.send(&bytes).await;
    let goaway = within(
        10,
        "GOAWAY after an oversized frame",
        peer.goaway_then_closed(),
    )
    .await;
    assert_eq!(goaway.error_code(), Some(FRAME_SIZE_ERROR), "{goaway:?}");
    assert!(!good.conn.is_closed(), "the good connection was closed");
    assert_works(&ch, "after an oversized HTTP/2 frame").await;
}

/// A request header block over the service's SETTINGS_MAX_HEADER_LIST_SIZE
/// (16 KiB) is refused (431 and REFUSED_STREAM) without ending the
/// connection; a header block that keeps coming in CONTINUATION frames
/// ends the connection; a good caller keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_is_refused_and_a_continuation_flood_closes_the_connection() {
    use raw_h2::*;
    let (_svc, good, ch, mut peer) =
        raw_peer_beside_a_good_caller(TransportLimits::default()).await;
    // 20 KB of one header, in one HEADERS frame (under the frame limit).
    let block = post_rpc(20_000);
    peer.send(&frame(HEADERS, END_HEADERS, 1, &block)).await;
    let answer = within(
        10,
        "an answer to the oversized request",
        peer.until("an answer on stream 1", |f| {
            (f.stream == 1 && [HEADERS, RST_STREAM].contains(&f.kind)) || f.kind == GOAWAY
        }),
    )
    .await;
    // h2 answers 431 and ends the stream (or resets it): anything but the
    // service's 200 that keeps the stream open.
    let refused = match answer.kind {
        RST_STREAM => true,
        HEADERS => answer.flags & END_STREAM != 0 && answer.payload != STATUS_200,
        _ => false,
    };
    assert!(refused, "the oversized request was not refused: {answer:?}");
    within(10, "a PING answer after the refusal", peer.ping()).await;

    // A header block that never ends: HEADERS, then CONTINUATION frames
    // without END_HEADERS, 4 KiB each.
    let block = post_rpc(64 * 1024);
    let mut parts = block.chunks(4096);
    let mut bytes = frame(HEADERS, 0, 3, parts.next().unwrap());
    for part in parts {
        bytes.extend(frame(CONTINUATION, 0, 3, part));
    }
    peer.send(&bytes).await;
    let goaway = within(
        10,
        "GOAWAY after a CONTINUATION flood",
        peer.goaway_then_closed(),
    )
    .await;
    assert!(
        [Some(ENHANCE_YOUR_CALM), Some(COMPRESSION_ERROR)].contains(&goaway.error_code()),
        "{goaway:?}"
    );
    assert!(!good.conn.is_closed(), "the good connection was closed");
    assert_works(&ch, "after oversized header blocks").await;
}

/// A peer opening more streams than `max_concurrent_streams` (4 here;
/// 1024 by default) gets REFUSED_STREAM for each one over; one that keeps
/// opening them anyway (over 1024 refusals, h2's default) loses its
/// connection (GOAWAY ENHANCE_YOUR_CALM); a good caller keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_concurrent_streams_are_refused_and_a_flood_closes_only_that_connection() {
    use raw_h2::*;
    let limits = TransportLimits {
        max_concurrent_streams: 4,
        ..Default::default()
    };
    let (_svc, good, ch, mut peer) = raw_peer_beside_a_good_caller(limits).await;
    let block = post_rpc(0);
    // Four open streams (no END_STREAM): each answered 200 and kept.
    let mut bytes = Vec::new();
    for id in [1, 3, 5, 7] {
        bytes.extend(frame(HEADERS, END_HEADERS, id, &block));
    }
    peer.send(&bytes).await;
    for _ in 0..4 {
        let f = within(
            10,
            "a response",
            peer.until("a response", |f| f.kind == HEADERS || f.kind == RST_STREAM),
        )
        .await;
        assert_eq!(
            (f.kind, f.payload.as_slice()),
            (HEADERS, &STATUS_200[..]),
            "stream {} not answered: {f:?}",
            f.stream
        );
    }
    // Two more while four are open: refused, the connection goes on.
    let mut bytes = frame(HEADERS, END_HEADERS, 9, &block);
    bytes.extend(frame(HEADERS, END_HEADERS, 11, &block));
    peer.send(&bytes).await;
    for id in [9, 11] {
        let f = within(
            10,
            "a refusal",
            peer.until("a refusal", |f| {
                [HEADERS, RST_STREAM, GOAWAY].contains(&f.kind)
            }),
        )
        .await;
        assert_eq!(
            (f.kind, f.stream, f.error_code()),
            (RST_STREAM, id, Some(REFUSED_STREAM)),
            "{f:?}"
        );
    }
    within(10, "a PING answer after refusals", peer.ping()).await;
    // Keep opening streams: the connection is ended.
    let mut bytes = Vec::new();
    for n in 0..1100u32 {
        bytes.extend(frame(HEADERS, END_HEADERS, 13 + 2 * n, &block));
    }
    bytes.extend(frame(PING, 0, 0, b"still-up"));
    peer.send(&bytes).await;
    let goaway = within(10, "GOAWAY after a stream flood", peer.goaway_then_closed()).await;
    assert_eq!(goaway.error_code(), Some(ENHANCE_YOUR_CALM), "{goaway:?}");
    assert!(!good.conn.is_closed(), "the good connection was closed");
    assert_works(&ch, "after a stream flood").await;
}
