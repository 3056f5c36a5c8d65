//! Port forwarding through the shared link, with real processes: the
//! service's `Forward` streams (direct QUIC), broker-owned forwards driven
//! by the CLI and gRPC, real clients (`curl`, `python3 -m http.server` as
//! the "device"), 100 concurrent 1 MB echoes on direct and relayed links,
//! and every refusal.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::broker::{TestBroker, in_session, named, status};
use common::http::{ServedPage, curl};
use common::service::{ADMIN_PASSWORD, ALICE_PASSWORD, TestService, ssh_device, start_service};
use common::within;
use switchyard::api::pb;
use switchyard::broker::direct_client::{DirectTarget, connect, connect_tcp};
use switchyard::broker::forward::stream::ForwardStream;
use switchyard::broker::link::{LinkChannel, LinkError};
use switchyard::secret::Secret;
use switchyard::service::inventory::{ForwardPorts, Inventory};
use switchyard::service::rpc::RpcConfig;
use switchyard::wire::conn::{Liveness, TransportLimits, client_endpoint};
use switchyard::wire::messages::ErrorCode;
use switchyard::wire::mux::Carrier;
use switchyard::wire::tcp::RpcUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server on loopback: each connection gets back what it sent,
/// then an end of file once it has sent its own.
struct Echo {
    addr: SocketAddr,
    /// Dropped with the server: its thread ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Echo {
    /// Runs on a thread and runtime of its own, so its load never starves
    /// the service this test process also runs.
    async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let mut conns = tokio::task::JoinSet::new();
                let serve = async {
                    loop {
                        let (mut s, _) = listener.accept().await.unwrap();
                        conns.spawn(async move {
                            let (mut r, mut w) = s.split();
                            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                                let _ = w.shutdown().await;
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        Self { addr, _stop: stop }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// `len` bytes that differ per `seed` (so crossed connections show).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends `data` on `stream`, half-closes, and returns all it gets back.
async fn round_trip<S>(stream: S, data: &[u8]) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let (sent, read) = tokio::join!(send, r.read_to_end(&mut back));
    sent?;
    read?;
    Ok(back)
}

/// `n` concurrent connections to `addr`, each echoing `len` bytes of its
/// own pattern (a rotation of one), checked byte for byte; the failures,
/// if any. The clients run on a thread and runtime of their own.
async fn echo_many(addr: SocketAddr, n: u64, len: usize) -> Vec<String> {
    let clients = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let base = std::sync::Arc::new(pattern(1, len));
            let mut all = tokio::task::JoinSet::new();
            for i in 0..n {
                let base = base.clone();
                all.spawn(async move {
                    let mut data = base.to_vec();
                    data.rotate_left((i as usize * 7919) % len);
                    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                    let back = round_trip(stream, &data)
                        .await
                        .map_err(|e| format!("{i}: {e}"))?;
                    if back != data {
                        return Err(format!(
                            "connection {i}: {} bytes back, not its own",
                            back.len()
                        ));
                    }
                    Ok(())
                });
            }
            let mut failures = Vec::new();
            while let Some(done) = all.join_next().await {
                if let Err(e) = done.unwrap() {
                    failures.push(e);
                }
            }
            failures
        })
    });
    within(180, "100 echoes", async {
        loop {
            if clients.is_finished() {
                return clients.join().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

fn set_ports(svc_dir: &std::path::Path, device: &str, ports: ForwardPorts) {
    let mut inv = Inventory::open(&svc_dir.join("inv.db"), &Secret::new(ADMIN_PASSWORD)).unwrap();
    inv.set_forward_ports(device, &ports).unwrap();
}

async fn channel(svc: &TestService, user: &str, password: &str) -> LinkChannel {
    channel_over(svc, user, password, Carrier::Quic).await
}

/// A direct link to `svc` over `carrier` (TCP needs the service's TCP
/// listener: [`tcp_config`]).
async fn channel_over(
    svc: &TestService,
    user: &str,
    password: &str,
    carrier: Carrier,
) -> LinkChannel {
    let (addr, rpc_url) = match carrier {
        Carrier::Quic => (svc.addr(), None),
        Carrier::Tcp => {
            let addr = svc
                .server
                .as_ref()
                .and_then(|s| s.tcp_addr())
                .expect("a TCP listener");
            (
                addr,
                Some(RpcUrl::parse(&format!("https://{addr}/rpc")).unwrap()),
            )
        }
    };
    let target = DirectTarget {
        label: addr.to_string(),
        addr,
        username: user.into(),
        password: Secret::new(password),
        fingerprint: Some(svc.fingerprint),
        rpc_url,
        proxy: None,
    };
    let limits = TransportLimits::default();
    let c = match carrier {
        Carrier::Quic => {
            let endpoint = client_endpoint(svc.addr()).unwrap();
            within(20, "login", connect(&endpoint, &target, &limits)).await
        }
        Carrier::Tcp => within(20, "login", connect_tcp(&target, &limits)).await,
    }
    .unwrap();
    assert_eq!(c.conn.carrier(), carrier);
    LinkChannel::Remote {
        conn: c.conn.clone(),
        target: addr.to_string(),
        max_frame: limits.max_frame,
        liveness: Liveness::on_demand(),
    }
}

/// The service's RPC settings with its TCP listener on a free port too.
fn tcp_config() -> RpcConfig {
    RpcConfig {
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..RpcConfig::default()
    }
}

fn refusal(r: Result<ForwardStream, LinkError>) -> switchyard::wire::messages::WireError {
    match r {
        Err(LinkError::Remote(e)) => e,
        Err(other) => panic!("expected the service's refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a connection"),
    }
}

// ---------------------------------------------------------------------
// The service side: `Forward` streams on a direct QUIC link.
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_stream_carries_bytes_both_ways_with_half_close() {
    for carrier in [Carrier::Quic, Carrier::Tcp] {
        forward_stream_round_trip(carrier).await;
    }
}

/// One forward over `carrier`: bytes both ways, each side's half-close.
async fn forward_stream_round_trip(carrier: Carrier) {
    let echo = Echo::start().await;
    // `echo` allows its own port by default (the device's SSH port).
    let svc = start_service(&[ssh_device("echo", echo.port())], tcp_config());
    let ch = channel_over(&svc, "alice", ALICE_PASSWORD, carrier).await;
    let stream = within(
        10,
        "open",
        ch.open_forward("echo", echo.port(), Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let ForwardStream::Remote { send, recv, .. } = stream else {
        panic!("a remote link gives a link stream")
    };
    let data = pattern(7, 3 << 20);
    let back = within(60, "echo", round_trip(tokio::io::join(recv, send), &data))
        .await
        .unwrap();
    assert!(back == data, "{} bytes back", back.len());

    // The device's end of file reaches the caller even while the caller
    // still has its side open: a server that answers and closes.
    let (port, server) = common::banner_server().await;
    set_ports(
        svc.dir.path(),
        "echo",
        ForwardPorts::Listed(vec![echo.port(), port]),
    );
    let Ok(ForwardStream::Remote {
        mut send, mut recv, ..
    }) = ch.open_forward("echo", port, Duration::from_secs(10)).await
    else {
        panic!("forward to the listed port")
    };
    let mut banner = Vec::new();
    within(
        10,
        "banner and EOF",
        AsyncReadExt::read_to_end(&mut recv, &mut banner),
    )
    .await
    .unwrap();
    assert_eq!(banner, b"banner\n");
    send.write_all(b"still talking").await.unwrap();
    send.shutdown().await.unwrap();
    let rest = within(10, "server reads", server).await.unwrap();
    assert_eq!(rest, b"still talking", "the caller's half still flowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_unlisted_ports_foreign_devices_and_simulators() {
    let echo = Echo::start().await;
    let svc = start_service(
        &[
            ssh_device("edge-web", echo.port()),
            ssh_device("core-web", echo.port()),
        ],
        RpcConfig::default(),
    );
    let alice = channel(&svc, "alice", ALICE_PASSWORD).await;
    let t = Duration::from_secs(10);
    // Not its SSH port, nothing listed: refused, naming device and setting.
    let e = refusal(alice.open_forward("edge-web", 443, t).await);
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert!(e.message.contains("port 443 of device edge-web"), "{e}");
    assert!(e.message.contains("forward_ports"), "{e}");
    assert!(e.message.contains(&format!("only {}", echo.port())), "{e}");
    // The fix named is for the existing device (`set`, not `add`).
    assert!(
        e.message
            .contains("`switchyard service device set edge-web --forward-ports PORT,...`"),
        "{e}"
    );
    // Listed explicitly, the default no longer applies.
    set_ports(svc.dir.path(), "edge-web", ForwardPorts::Listed(vec![443]));
    let e = refusal(alice.open_forward("edge-web", echo.port(), t).await);
    assert!(e.message.contains("allows only 443"), "{e}");
    set_ports(svc.dir.path(), "edge-web", ForwardPorts::Listed(vec![]));
    let e = refusal(alice.open_forward("edge-web", 443, t).await);
    assert!(e.message.contains("allows no ports"), "{e}");
    // A simulated device has no ports at all.
    let e = refusal(alice.open_forward("core-1", 22, t).await);
    assert!(e.message.contains("simulated"), "{e}");
    // Bob may use core-* only: edge-web is as unknown as a missing device.
    let bob = channel(&svc, "bob", "bob-password").await;
    let e = refusal(bob.open_forward("edge-web", echo.port(), t).await);
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.message, "no device \"edge-web\" that you may use");
    let e2 = refusal(bob.open_forward("nowhere", 22, t).await);
    assert_eq!(e2.message, "no device \"nowhere\" that you may use");
    // ...while core-web, in his globs, works.
    assert!(bob.open_forward("core-web", echo.port(), t).await.is_ok());
}

// ---------------------------------------------------------------------
// Broker-owned forwards.
// ---------------------------------------------------------------------

async fn cli(broker: &TestBroker, args: &[&str]) -> std::process::Output {
    within(30, "switchyard", broker.command().args(args).output())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_an_http_device_through_a_cli_forward() {
    let web = ServedPage::start().await;
    let (page, http) = (&web.page, &web.http);
    // The device is reached on SSH port 22; its web UI must be listed.
    let svc = start_service(&[ssh_device("web-1", 22)], RpcConfig::default());
    set_ports(
        svc.dir.path(),
        "web-1",
        ForwardPorts::Listed(vec![http.port]),
    );
    let broker = TestBroker::start(&[]).await;
    let out = broker.connect_direct(&svc, "lab", &[]).await;
    assert!(out.status.success(), "{out:?}");

    let port = http.port.to_string();
    let out = cli(&broker, &["forward", "start", "lab", "web-1", &port]).await;
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let (id, addr) = line.trim().split_once("  ").expect("ID  ADDRESS");
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let got = curl(&[&format!("http://{addr}/page.bin")]).await;
    web.assert_served(&got, "");

    // A Unix socket forward: mode 0600, curl over it.
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("web.sock");
    let listen = format!("unix:{}", sock.display());
    let out = cli(
        &broker,
        &[
            "forward", "start", "lab", "web-1", &port, "--listen", &listen,
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let got = curl(&[
        "--unix-socket",
        sock.to_str().unwrap(),
        "http://web-1/page.bin",
    ])
    .await;
    assert!(got.stdout == *page, "{got:?}");

    // Listed with counts, also in `status`.
    let out = cli(&broker, &["forward", "list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &list[0];
    assert_eq!(first["forward_id"], id);
    assert_eq!(first["connections_total"], 1);
    assert!(first["bytes_from_device"].as_u64().unwrap() > page.len() as u64);
    let s = status(&broker).await;
    assert_eq!(s.forwards.len(), 2);
    let text = String::from_utf8(cli(&broker, &["status"]).await.stdout).unwrap();
    assert!(text.contains("forwards: 2"), "{text}");

    // Stopped: the port no longer answers, and the socket is gone.
    let out = cli(&broker, &["forward", "stop", id]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    assert_eq!(status(&broker).await.forwards.len(), 1);
    // Disconnecting the named service ends the other forward too.
    assert!(cli(&broker, &["disconnect", "lab"]).await.status.success());
    common::eventually(10, "unix forward gone", || !sock.exists()).await;
    assert!(status(&broker).await.forwards.is_empty());
    drop(web);
}

async fn start_forward(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
    service: Option<pb::ServiceRef>,
    device: &str,
    port: u16,
) -> pb::ForwardStatus {
    client
        .forward_start(pb::ForwardStartRequest {
            service,
            device: device.into(),
            port: port.into(),
            listen: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

fn local(f: &pb::ForwardStatus) -> SocketAddr {
    f.address.parse().unwrap()
}

/// No echo failed; else the failures, the forwards' counts and the
/// broker's log (less its line per forwarded connection).
fn assert_no_failures(failures: &[String], s: &pb::StatusResponse, broker: &TestBroker) {
    assert!(
        failures.is_empty(),
        "{failures:?}\n{:?}\n{}",
        s.forwards,
        broker
            .log()
            .lines()
            .filter(|l| !l.contains("forwarded connection"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_connections_echo_a_megabyte_each_over_one_direct_link() {
    let echo = Echo::start().await;
    let svc = start_service(&[ssh_device("echo", echo.port())], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client_with_named(&svc, "lab").await;
    let f = start_forward(&mut client, named("lab"), "echo", echo.port()).await;
    let failures = echo_many(local(&f), 100, 1 << 20).await;
    let s = status(&broker).await;
    assert_no_failures(&failures, &s, &broker);
    assert_eq!(s.links.len(), 1);
    assert_eq!(s.links[0].connects, 1, "one link handshake for all 100");
    let f = &s.forwards[0];
    assert_eq!((f.connections_total, f.connections_failed), (100, 0));
    assert_eq!(f.bytes_to_device, 100 << 20);
    assert_eq!(f.bytes_from_device, 100 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_connections_echo_a_megabyte_each_over_one_relayed_link() {
    use common::cloud::{ALICE, CloudService, TestRelay, broker_for, cloud_service, token_session};
    let echo = Echo::start().await;
    let relay = TestRelay::start().await;
    // Alice's cloud identity may reach core-*.
    let _svc = CloudService::start(&relay, "SN-F", &[ssh_device("core-echo", echo.port())]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-F", None).await;
    let f = start_forward(
        &mut client,
        in_session(&session, &service),
        "core-echo",
        echo.port(),
    )
    .await;
    let failures = echo_many(local(&f), 100, 1 << 20).await;
    let s = status(&broker).await;
    assert_no_failures(&failures, &s, &broker);
    let relayed: Vec<_> = s
        .links
        .iter()
        .filter(|l| l.transport == "relayed")
        .collect();
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].connects, 1, "one link handshake for all 100");
    assert_eq!(s.forwards[0].connections_total, 100);
    assert_eq!(s.forwards[0].bytes_from_device, 100 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_reset_and_say_why() {
    let echo = Echo::start().await;
    let svc = start_service(
        &[ssh_device("edge-echo", echo.port())],
        RpcConfig::default(),
    );
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client_with_named(&svc, "lab").await;
    // Port not listed: the connection is reset, the reason kept.
    let f = start_forward(&mut client, named("lab"), "edge-echo", 443).await;
    let stream = TcpStream::connect(local(&f)).await.unwrap();
    let r = within(20, "refused", round_trip(stream, b"hello")).await;
    assert!(r.is_err() || r.as_ref().unwrap().is_empty(), "{r:?}");
    let s = status(&broker).await;
    assert_eq!(s.forwards[0].connections_failed, 1);
    let why = &s.forwards[0].last_error;
    assert!(
        why.contains("port 443 of device edge-echo") && why.contains("forward_ports"),
        "{why}"
    );
    assert!(
        r.is_err(),
        "a refused connection is reset, not closed: {r:?}"
    );

    // Bob's globs (core-*) leave edge-echo out.
    let mut bob = broker.client().await;
    bob.service_direct(pb::ServiceDirectRequest {
        username: "bob".into(),
        password: "bob-password".into(),
        ..common::broker::direct(&svc, "", "bob-lab", "")
    })
    .await
    .unwrap();
    let f = start_forward(&mut bob, named("bob-lab"), "edge-echo", echo.port()).await;
    let stream = TcpStream::connect(local(&f)).await.unwrap();
    assert!(
        within(20, "refused", round_trip(stream, b"hello"))
            .await
            .is_err()
    );
    let s = status(&broker).await;
    let f = s.forwards.iter().find(|x| x.service == "bob-lab").unwrap();
    assert!(
        f.last_error
            .contains("no device \"edge-echo\" that you may use"),
        "{f:?}"
    );

    // A forward on a service that does not exist is refused at once.
    let e = client
        .forward_start(pb::ForwardStartRequest {
            service: named("nothing"),
            device: "edge-echo".into(),
            port: 22,
            listen: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    // Not loopback: refused.
    let e = client
        .forward_start(pb::ForwardStartRequest {
            service: named("lab"),
            device: "edge-echo".into(),
            port: echo.port().into(),
            listen: "0.0.0.0:0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused_by_tcp_and_unix_forwards() {
    if !common::root_or_opted_out("connecting as another uid") {
        return;
    }
    let echo = Echo::start().await;
    let svc = start_service(&[ssh_device("echo", echo.port())], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client_with_named(&svc, "lab").await;
    let f = start_forward(&mut client, named("lab"), "echo", echo.port()).await;
    // The owner (this test's uid) gets through...
    let back = round_trip(TcpStream::connect(local(&f)).await.unwrap(), b"mine").await;
    assert_eq!(back.unwrap(), b"mine");
    // ...uid 65534 does not, though the port is on loopback.
    let as_nobody = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-sS",
            "--max-time",
            "10",
        ])
        .args(args);
        cmd
    };
    let out = within(
        20,
        "curl as nobody",
        as_nobody(&[&format!("http://{}/", f.address)]).output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let s = status(&broker).await;
    assert_eq!(s.forwards[0].connections_failed, 1);
    assert!(
        s.forwards[0]
            .last_error
            .contains("uid 65534 is not the forward's owner"),
        "{:?}",
        s.forwards[0]
    );
    assert_eq!(s.forwards[0].connections_total, 1, "never reached the link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_resets_its_connections_when_the_link_drops_and_recovers() {
    let echo = Echo::start().await;
    let mut svc = start_service(&[ssh_device("echo", echo.port())], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    let mut client = broker.client_with_named(&svc, "lab").await;
    let f = start_forward(&mut client, named("lab"), "echo", echo.port()).await;
    // An open connection, mid-way.
    let mut open = TcpStream::connect(local(&f)).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    within(10, "echo", open.read_exact(&mut buf)).await.unwrap();
    // The service goes: the open connection is reset (not closed cleanly).
    svc.stop().await;
    let mut rest = Vec::new();
    let r = within(20, "reset", open.read_to_end(&mut rest)).await;
    assert!(r.is_err(), "expected a reset, got {r:?}");
    // While it is down, new connections are reset too.
    // (A reset may already come at connect.)
    let r = within(20, "down", async {
        round_trip(TcpStream::connect(local(&f)).await?, b"x").await
    })
    .await;
    assert!(r.is_err(), "{r:?}");
    // Back: the same forward works again.
    svc.restart();
    within(30, "recovered", async {
        loop {
            // A connection reset while the link comes back is a retry.
            let Ok(s) = TcpStream::connect(local(&f)).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if round_trip(s, b"again")
                .await
                .is_ok_and(|back| back == b"again")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        status(&broker).await.forwards.len(),
        1,
        "the forward survived"
    );
}
