//! The broker's SOCKS5 proxy with real processes: `curl --socks5-hostname`
//! to a `python3 -m http.server` "device" through a direct link, the reply
//! codes a raw SOCKS5 client gets for a refused port, an unknown device and
//! an IP address (and the broker's log lines saying why), username and
//! password (RFC 1929), hostile handshakes closing only their own
//! connection, and the same proxy over a relayed and an integrated link.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::broker::{TestBroker, status};
use common::http::{ServedPage, curl};
use common::service::{ADMIN_PASSWORD, TestService, ssh_device, start_service};
use common::within;
use switchyard::secret::Secret;
use switchyard::service::inventory::{ForwardPorts, Inventory};
use switchyard::service::rpc::RpcConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A site with one page, served as device `web-1` (its SSH port 22 and its
/// web port listed in `forward_ports`), and a broker with the service
/// connected as `lab`.
struct Lab {
    web: ServedPage,
    _svc: TestService,
    broker: TestBroker,
}

impl Lab {
    async fn start() -> Self {
        let web = ServedPage::start().await;
        let svc = start_service(&[ssh_device("web-1", 22)], RpcConfig::default());
        let mut inv =
            Inventory::open(&svc.dir.path().join("inv.db"), &Secret::new(ADMIN_PASSWORD)).unwrap();
        inv.set_forward_ports("web-1", &ForwardPorts::Listed(vec![22, web.http.port]))
            .unwrap();
        drop(inv);
        let broker = TestBroker::start(&[]).await;
        let out = broker.connect_direct(&svc, "lab", &[]).await;
        assert!(out.status.success(), "{out:?}");
        Self {
            web,
            _svc: svc,
            broker,
        }
    }

    async fn cli(&self, args: &[&str]) -> std::process::Output {
        within(30, "switchyard", self.broker.command().args(args).output())
            .await
            .unwrap()
    }

    /// `socks-proxy start lab --listen 127.0.0.1:0 EXTRA...`: (id, address).
    async fn start_proxy(&self, extra: &[&str]) -> (String, SocketAddr) {
        let mut args = vec!["socks-proxy", "start", "lab", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let out = self.cli(&args).await;
        assert!(out.status.success(), "{out:?}");
        let line = String::from_utf8(out.stdout).unwrap();
        let (id, addr) = line.trim().split_once("  ").expect("ID  ADDRESS");
        (id.to_string(), addr.parse().unwrap())
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/page.bin", self.web.http.port)
    }
}

/// What a raw SOCKS5 client asks for.
enum Dest<'a> {
    Name(&'a str),
    V4([u8; 4]),
}

/// Greets (offering no-auth, or username/password when `login` is given),
/// logs in, sends a CONNECT and returns the stream and the reply code
/// (`Err` with the bytes got if the exchange stopped before a reply).
async fn socks_connect(
    proxy: SocketAddr,
    login: Option<(&str, &str)>,
    dest: Dest<'_>,
    port: u16,
) -> (TcpStream, Result<u8, Vec<u8>>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let got = within(20, "SOCKS5 exchange", async {
        let method = if login.is_some() { 2 } else { 0 };
        s.write_all(&[5, 1, method]).await.unwrap();
        let mut answer = [0u8; 2];
        if s.read_exact(&mut answer).await.is_err() || answer != [5, method] {
            return Err(answer.to_vec());
        }
        if let Some((user, password)) = login {
            let mut msg = vec![1, user.len() as u8];
            msg.extend_from_slice(user.as_bytes());
            msg.push(password.len() as u8);
            msg.extend_from_slice(password.as_bytes());
            s.write_all(&msg).await.unwrap();
            if s.read_exact(&mut answer).await.is_err() || answer != [1, 0] {
                return Err(answer.to_vec());
            }
        }
        let mut msg = vec![5, 1, 0];
        match dest {
            Dest::Name(name) => {
                msg.extend_from_slice(&[3, name.len() as u8]);
                msg.extend_from_slice(name.as_bytes());
            }
            Dest::V4(ip) => {
                msg.push(1);
                msg.extend_from_slice(&ip);
            }
        }
        msg.extend_from_slice(&port.to_be_bytes());
        s.write_all(&msg).await.unwrap();
        let mut reply = [0u8; 10];
        match s.read_exact(&mut reply).await {
            Ok(_) => Ok(reply[1]),
            Err(_) => Err(Vec::new()),
        }
    })
    .await;
    (s, got)
}

/// Whether the peer closed `s` (end of file or reset) within 20 s.
async fn closed(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 64];
    within(20, "closed", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_a_device_by_name_and_refusals_get_socks_replies() {
    let lab = Lab::start().await;
    let (id, proxy) = lab.start_proxy(&[]).await;
    assert!(id.starts_with("socks-"), "{id}");

    // curl resolves nothing itself: the device's name goes to the service.
    let got = curl(&["--socks5-hostname", &proxy.to_string(), &lab.url("web-1")]).await;
    lab.web.assert_served(&got, &lab.broker.log());

    // A port not in the device's forward_ports: 02, not allowed.
    let (_, code) = socks_connect(proxy, None, Dest::Name("web-1"), 443).await;
    assert_eq!(code, Ok(2));
    // A device the service does not have: 04, host unreachable.
    let (_, code) = socks_connect(proxy, None, Dest::Name("nowhere"), 80).await;
    assert_eq!(code, Ok(4));
    // An IP address: 08, address type not supported.
    let (_, code) = socks_connect(proxy, None, Dest::V4([127, 0, 0, 1]), lab.web.http.port).await;
    assert_eq!(code, Ok(8));
    // curl sees the refusal as a failure too.
    let got = curl(&["--socks5-hostname", &proxy.to_string(), "http://web-1:443/"]).await;
    assert!(!got.status.success(), "{got:?}");

    // The broker's log says why, naming the device and the setting.
    let log = lab.broker.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SOCKS5 CONNECT refused") || l.contains("SOCKS5 client turned away"))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("port 443 of device web-1") && l.contains("forward_ports")),
        "{refused:#?}"
    );
    assert!(
        refused.iter().any(|l| l.contains("nowhere")),
        "{refused:#?}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("127.0.0.1") && l.contains("--socks5-hostname")),
        "{refused:#?}"
    );

    // Listed with forwards (kind socks5) and in `status`.
    let out = lab.cli(&["forward", "list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["forward_id"], id.as_str());
    assert_eq!(list[0]["kind"], "socks5");
    assert_eq!(list[0]["connections_total"], 5);
    assert_eq!(list[0]["connections_failed"], 4);
    assert!(list[0]["bytes_from_device"].as_u64().unwrap() > lab.web.page.len() as u64);
    let text = String::from_utf8(lab.cli(&["status"]).await.stdout).unwrap();
    assert!(
        text.contains(&format!("{id}  {proxy} -> lab SOCKS5")),
        "{text}"
    );

    // Stopped: the port no longer answers.
    let out = lab.cli(&["socks-proxy", "stop", &id]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(TcpStream::connect(proxy).await.is_err(), "still listening");
    assert!(status(&lab.broker).await.forwards.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_a_password_admits_only_the_right_one() {
    let lab = Lab::start().await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("socks-password");
    let password = "SocksPw-6f1c2e";
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let (id, proxy) = lab
        .start_proxy(&[
            "--username",
            "alice",
            "--password-file",
            password_file.to_str().unwrap(),
        ])
        .await;

    let right = format!("socks5h://alice:{password}@{proxy}");
    let got = curl(&["-x", &right, &lab.url("web-1")]).await;
    assert!(got.status.success(), "{got:?}\n{}", lab.broker.log());
    assert!(got.stdout == lab.web.page);

    let wrong = format!("socks5h://alice:not-it@{proxy}");
    let got = curl(&["-x", &wrong, &lab.url("web-1")]).await;
    assert!(
        !got.status.success(),
        "a wrong password got {} bytes through",
        got.stdout.len()
    );
    // The raw exchange: RFC 1929 status 01, then closed.
    let (s, code) = socks_connect(proxy, Some(("alice", "not-it")), Dest::Name("web-1"), 22).await;
    assert_eq!(code, Err(vec![1, 1]));
    assert!(closed(s).await);
    let (_, code) =
        socks_connect(proxy, Some(("mallory", password)), Dest::Name("web-1"), 22).await;
    assert_eq!(code, Err(vec![1, 1]), "the username counts too");
    // No authentication offered: no acceptable method.
    let (_, code) = socks_connect(proxy, None, Dest::Name("web-1"), 22).await;
    assert_eq!(code, Err(vec![5, 0xFF]));

    let out = lab.cli(&["forward", "list", "--json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["username"], "alice");
    assert_eq!(list[0]["connections_failed"], 4);
    let log = lab.broker.log();
    assert!(log.contains("wrong SOCKS5 username or password"), "{log}");
    assert!(!log.contains(password), "the password reached the log");
    // A username without a password file is a usage error.
    let out = lab
        .cli(&["socks-proxy", "start", "lab", "--username", "alice"])
        .await;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        lab.cli(&["socks-proxy", "stop", &id])
            .await
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_handshakes_close_only_their_own_connection() {
    let lab = Lab::start().await;
    let (_, proxy) = lab.start_proxy(&[]).await;
    // A good connection, open before the hostile ones and used after.
    let (mut held, code) = socks_connect(proxy, None, Dest::Name("web-1"), lab.web.http.port).await;
    assert_eq!(code, Ok(0));

    // Not SOCKS at all.
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed(s).await, "HTTP on the SOCKS port");
    // A megabyte of noise after a valid greeting (the request's version
    // byte is wrong); the proxy stops reading at the first bad byte.
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let noise: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let _ = within(20, "noise", s.write_all(&noise)).await;
    assert!(closed(s).await, "noise");
    // A name length pointing past what is sent, then the client goes.
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0, 5, 1, 0, 3, 255, b'w'])
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    assert!(closed(s).await, "cut short");
    // A client that says half a greeting and nothing more is given up on
    // after the handshake bound (10 s).
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5]).await.unwrap();
    assert!(closed(s).await, "silent client");

    // The held connection still works, and so do new ones.
    held.write_all(b"GET /page.bin HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within(20, "held response", held.read_to_end(&mut response))
        .await
        .unwrap();
    assert!(
        response.ends_with(&lab.web.page),
        "{} bytes",
        response.len()
    );
    let got = curl(&["--socks5-hostname", &proxy.to_string(), &lab.url("web-1")]).await;
    assert!(got.stdout == lab.web.page, "{got:?}");
    drop(held);
    let s = status(&lab.broker).await;
    assert_eq!(s.forwards[0].connections_failed, 4, "{:?}", s.forwards[0]);
    within(20, "every connection ended", async {
        while status(&lab.broker).await.forwards[0].connections_open != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// `web` as device `core-web`, whose SSH port is the page's server's (a
/// device's own SSH port may be forwarded to by default, so no
/// `forward_ports` setting is needed on either link).
fn web_device(web: &ServedPage) -> switchyard::service::inventory::NewDevice {
    ssh_device("core-web", web.http.port)
}

/// curl through `proxy` to `web`'s page by the device's name: its bytes,
/// then a refused port's SOCKS5 reply (02, not allowed).
async fn check_through(web: &ServedPage, proxy: SocketAddr) {
    let url = format!("http://core-web:{}/page.bin", web.http.port);
    let got = curl(&["--socks5-hostname", &proxy.to_string(), &url]).await;
    web.assert_served(&got, "");
    let (_, code) = socks_connect(proxy, None, Dest::Name("core-web"), 1).await;
    assert_eq!(code, Ok(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_a_device_through_a_relayed_link() {
    use common::broker::in_session;
    use common::cloud::{ALICE, CloudService, TestRelay, broker_for, cloud_service, token_session};
    use switchyard::api::pb;
    let web = ServedPage::start().await;
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-SOCKS", &[web_device(&web)]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-SOCKS", Some(30.0)).await;
    let proxy = client
        .socks_proxy_start(pb::SocksProxyStartRequest {
            service: in_session(&session, &service),
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proxy.kind, "socks5");
    check_through(&web, proxy.address.parse().unwrap()).await;
    let s = status(&broker).await;
    let relayed = s.links.iter().filter(|l| l.transport == "relayed").count();
    assert_eq!(relayed, 1, "{:?}", s.links);
    assert_eq!(s.forwards[0].connections_total, 2, "{:?}", s.forwards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_a_device_through_an_integrated_link() {
    let web = ServedPage::start().await;
    let broker = TestBroker::start(&[]).await;
    let out = broker.connect_integrated("lab", &[web_device(&web)]).await;
    assert!(out.status.success(), "{out:?}");
    let out = within(
        30,
        "socks-proxy start",
        broker
            .command()
            .args(["socks-proxy", "start", "lab", "--listen", "127.0.0.1:0"])
            .output(),
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let (_, addr) = line.trim().split_once("  ").expect("ID  ADDRESS");
    check_through(&web, addr.parse().unwrap()).await;
    let s = status(&broker).await;
    assert_eq!(s.links[0].transport, "integrated", "{:?}", s.links);
}
