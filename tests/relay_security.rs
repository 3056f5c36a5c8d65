//! The relay against its own users and against strangers, on loopback:
//! a serial belongs to the user who enrolled it; revocation ends live
//! sessions within the documented bound; the HTTPS port and the QUIC
//! port bound what clients that never log in can hold.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::broker::{TestBroker, open_attached};
use common::cloud::{
    ALICE, Client, CloudService, MALLORY, TestRelay, assert_show_version, broker_for,
    cloud_service, show_version, token_session,
};
use common::{eventually, within};
use switchyard::api::pb;
use switchyard::relay::http::HttpLimits;
use switchyard::relay::live::REVOCATION_BOUND;
use switchyard::relay::quic::PreloginLimits;
use switchyard::relay::unix_now;
use switchyard::service::relay_agent::AgentState;
use switchyard::wire::pin::Fingerprint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const MALLORY_PASSWORD: &str = "mallory-password";

/// Slack on top of a documented bound, for a loaded test machine.
const SLACK: Duration = Duration::from_secs(3);

async fn service_otp(
    client: &mut Client,
    session: &str,
    serial: &str,
) -> Result<String, tonic::Status> {
    client
        .create_service_otp(pb::CreateServiceOtpRequest {
            session_id: session.into(),
            serial: serial.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().otp)
}

// ---------------------------------------------------------------------
// #21 item 1: enrollment bound to ownership.

/// mallory, another ordinary relay user, tries every way to take alice's
/// serial: a one-time password minted before she enrolled, a new one
/// after, and redeeming it from a service of his own. All are refused
/// naming the serial; alice's service keeps its connection, its published
/// fingerprint and its callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_mint_for_enroll_over_or_displace_an_owned_serial() {
    let relay = TestRelay::start().await;
    relay.add_user(MALLORY, MALLORY_PASSWORD);
    let broker = broker_for(&relay).await;
    let (mut mallory, mallory_session, _m) = token_session(&broker, &relay.token(MALLORY)).await;
    // Before anyone owns SN-OWNED, mallory may mint for it...
    let early = service_otp(&mut mallory, &mallory_session, "SN-OWNED")
        .await
        .unwrap();
    // ...but alice enrolls it first.
    let alice_svc = CloudService::start(&relay, "SN-OWNED", &[]).await;
    let (mut alice, alice_session, _a) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut alice, &alice_session, "SN-OWNED", Some(15.0)).await;
    assert_show_version(&mut alice, &alice_session, &service).await;

    // A new password for her serial is refused, naming it.
    let err = service_otp(&mut mallory, &mallory_session, "SN-OWNED")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().contains("SN-OWNED") && err.message().contains("another user"),
        "{}",
        err.message()
    );
    // The early one no longer enrolls anything.
    let err = CloudService::start_with_otp(&relay, "SN-OWNED", &early, &[])
        .await
        .err()
        .expect("enrolling over alice's serial is refused");
    assert!(
        err.to_string().contains("SN-OWNED") && err.to_string().contains("another user"),
        "{err}"
    );
    // Nor can it be tried again.
    let err = CloudService::start_with_otp(&relay, "SN-OWNED", &early, &[])
        .await
        .err()
        .expect("a spent password is refused");
    assert!(err.to_string().contains("already used"), "{err}");
    // His own serial is his to enroll.
    let other = service_otp(&mut mallory, &mallory_session, "SN-MALLORY")
        .await
        .unwrap();
    let _mallory_svc = CloudService::start_with_otp(&relay, "SN-MALLORY", &other, &[])
        .await
        .unwrap();

    // alice's enrollment is untouched and her service still serves.
    let record = relay.admin().store.service("SN-OWNED").unwrap().unwrap();
    assert_eq!(record.owner.as_deref(), Some(ALICE));
    assert_eq!(record.fingerprint, alice_svc.fingerprint());
    assert!(alice_svc.online());
    assert_show_version(&mut alice, &alice_session, &service).await;
    let trail = relay
        .admin()
        .store
        .enrollment_audit(Some("SN-OWNED"))
        .unwrap();
    assert_eq!(trail.len(), 1, "{trail:?}");
    assert_eq!(
        (trail[0].action.as_str(), trail[0].actor.as_str()),
        ("enroll", ALICE)
    );
}

/// An administrator gives alice's serial to mallory with `switchyard relay
/// service transfer`; the audit trail records it; from then on only
/// mallory may enroll it, and his re-enrollment ends the old service's
/// relay connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_transfer_moves_a_serial_and_is_recorded() {
    let relay = TestRelay::start().await;
    relay.add_user(MALLORY, MALLORY_PASSWORD);
    let mut alice_svc = CloudService::start(&relay, "SN-T", &[]).await;
    let broker = broker_for(&relay).await;
    let (mut mallory, mallory_session, _m) = token_session(&broker, &relay.token(MALLORY)).await;
    let (mut alice, alice_session, _a) = token_session(&broker, &relay.token(ALICE)).await;
    assert!(
        service_otp(&mut mallory, &mallory_session, "SN-T")
            .await
            .is_err()
    );

    let out = relay
        .admin_command(&["service", "transfer", "SN-T", "--to", MALLORY])
        .await;
    assert!(
        out.contains(&format!("SN-T now belongs to {MALLORY} (was {ALICE})")),
        "{out}"
    );
    let listed = relay.admin_command(&["service", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("SN-T") && l.contains(MALLORY)),
        "{listed}"
    );

    let err = service_otp(&mut alice, &alice_session, "SN-T")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let otp = service_otp(&mut mallory, &mallory_session, "SN-T")
        .await
        .unwrap();
    let mallory_svc = CloudService::start_with_otp(&relay, "SN-T", &otp, &[])
        .await
        .unwrap();
    // alice's old certificate for SN-T was revoked: the relay ends its
    // connection and refuses it when it tries again.
    within(
        (REVOCATION_BOUND + SLACK).as_secs() + 10,
        "the displaced service is refused",
        async {
            loop {
                if let AgentState::Retrying(why) = alice_svc.agent_state()
                    && why.contains("revoked")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    assert!(mallory_svc.online());
    let record = relay.admin().store.service("SN-T").unwrap().unwrap();
    assert_eq!(record.fingerprint, mallory_svc.fingerprint());
    alice_svc.stop().await;

    let audit = relay
        .admin_command(&["service", "audit", "--serial", "SN-T"])
        .await;
    let rows: Vec<Vec<&str>> = audit
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let actions: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[2], r[3], r[4])).collect();
    assert_eq!(
        actions,
        [
            ("enroll", ALICE, ALICE),
            ("transfer", "admin", MALLORY),
            ("reenroll", MALLORY, MALLORY)
        ],
        "{audit}"
    );
}

// ---------------------------------------------------------------------
// #21 item 3: revocation ends live sessions.

/// A broker caller with a working exec through the relay, and the
/// relay's live connection count with it (service + broker): the broker's
/// token login dialled the relay exactly once (asking the relay whose
/// token it is used the login's own connection).
async fn live_session(
    relay: &TestRelay,
    broker: &TestBroker,
    token: &str,
    serial: &str,
) -> (Client, String, String, tonic::Streaming<pb::SessionEvent>) {
    let (mut client, session, attach) = token_session(broker, token).await;
    assert_eq!(
        relay.relay().clients_admitted(),
        1,
        "relay connections per login"
    );
    let service = cloud_service(&mut client, &session, serial, Some(15.0)).await;
    assert_show_version(&mut client, &session, &service).await;
    assert_eq!(relay.relay().live_connections(), 2);
    assert_eq!(
        relay.relay().clients_admitted(),
        1,
        "relay connections per login"
    );
    (client, session, service, attach)
}

/// Within the documented bound (plus slack), the relay has closed the
/// broker's connection and the broker's next exec fails saying why.
async fn session_ends(
    relay: &TestRelay,
    client: &mut Client,
    session: &str,
    service: &str,
    why: &str,
) {
    let bound = (REVOCATION_BOUND + SLACK).as_secs();
    within(bound, "the relay closes the revoked connection", async {
        while relay.relay().live_connections() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The call in flight when the relay closed the connection fails as a
    // lost link; the broker's next attempt to log in is refused, and says
    // why.
    within(bound + 5, "an exec fails saying why", async {
        loop {
            match show_version(client, session, service).await {
                Ok(_) => {}
                Err(e) if e.message().contains(why) => return,
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_live_relay_session() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-REV", &[]).await;
    let broker = broker_for(&relay).await;
    let (token, id) = relay.token_until(ALICE, unix_now() + 3600);
    let (mut client, session, service, _attach) =
        live_session(&relay, &broker, &token, "SN-REV").await;
    let out = relay.admin_command(&["token", "revoke", &id]).await;
    assert!(out.contains("revoked"), "{out}");
    session_ends(&relay, &mut client, &session, &service, "revoked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_ends_their_live_relay_sessions() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-DIS", &[]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, service, _attach) =
        live_session(&relay, &broker, &relay.token(ALICE), "SN-DIS").await;
    relay.disable(ALICE);
    session_ends(&relay, &mut client, &session, &service, "disabled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_client_certificate_ends_its_certificate_login() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-CREV", &[]).await;
    let broker = broker_for(&relay).await;
    let mut client = broker.client().await;
    let enrolled = common::cloud::enroll_alice_cert(&mut client, &relay).await;
    client.logout(pb::LogoutRequest::default()).await.unwrap();
    let (session, _attach) = open_attached(&mut client).await;
    let login = client
        .certificate_login(pb::CertificateLoginRequest {
            session_id: session.clone(),
            identity: ALICE.into(),
            cert_pem: enrolled.cert_pem.clone(),
            encrypted_key: enrolled.encrypted_key.clone(),
            key_password: common::cloud::KEY_PASSWORD.into(),
            relay: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.method, "certificate");
    let service = cloud_service(&mut client, &session, "SN-CREV", Some(15.0)).await;
    assert_show_version(&mut client, &session, &service).await;
    eventually(10, "only the certificate login is live", || {
        relay.relay().live_connections() == 2
    })
    .await;

    use rustls::pki_types::pem::PemObject;
    let der =
        rustls::pki_types::CertificateDer::from_pem_slice(enrolled.cert_pem.as_bytes()).unwrap();
    let fingerprint = Fingerprint::of(&der).to_string();
    let listed = relay.admin_command(&["cert", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&fingerprint) && l.contains("client") && l.contains(ALICE)),
        "{listed}"
    );
    let out = relay.admin_command(&["cert", "revoke", &fingerprint]).await;
    assert!(out.contains("revoked"), "{out}");
    session_ends(&relay, &mut client, &session, &service, "revoked").await;
}

// ---------------------------------------------------------------------
// #21 item 4: the approval page's sign-in limiter.

/// One HTTP/1.1 request over TLS to the relay from `local` (any loopback
/// address), `Connection: close`; the whole response as text.
/// The request is written while the answer is read, so a relay that
/// answers early (and stops reading) still has its answer seen.
async fn https_from(relay: &TestRelay, local: &str, request: &str) -> String {
    let tls = tls_from(relay, local).await;
    let (mut read, mut write) = tokio::io::split(tls);
    let mut response = Vec::new();
    let writing = async {
        // The relay may close before reading it all (a refused body).
        let _ = write.write_all(request.as_bytes()).await;
        write
    };
    let reading = within(10, "response", read.read_to_end(&mut response));
    let (_write, _) = tokio::join!(writing, reading);
    String::from_utf8_lossy(&response).into_owned()
}

fn form_post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A TCP connection from `local` to the relay's HTTPS port.
async fn tcp_from(relay: &TestRelay, local: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(relay.http_addr()).await.unwrap()
}

async fn tls_from(
    relay: &TestRelay,
    local: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tcp_from(relay, local).await;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_page_limits_failed_sign_ins_per_user_and_per_address() {
    let relay = TestRelay::start().await;
    let decide = |email: &str, password: &str| {
        form_post(
            "/device",
            &format!("user_code=BCDF-GHJK&email={email}&password={password}&decision=approve"),
        )
    };
    // Five wrong guesses at alice, sent at once from one address: all
    // are counted, so the next guess, from anywhere, is refused unchecked.
    let guesses = (0..5).map(|n| {
        let request = decide(ALICE, &format!("guess-{n}"));
        let relay = &relay;
        async move { status_of(&https_from(relay, "127.0.0.2", &request).await) }
    });
    let statuses = futures::future::join_all(guesses).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let limited = https_from(&relay, "127.0.0.3", &decide(ALICE, "guess-6")).await;
    assert_eq!(status_of(&limited), 429, "{limited}");
    assert!(limited.contains("Too many sign-in attempts"), "{limited}");
    // Another user from the first address still gets a real answer.
    let carol = https_from(
        &relay,
        "127.0.0.2",
        &decide("carol@example.com", "carol-password"),
    )
    .await;
    assert_eq!(status_of(&carol), 400, "{carol}");
    assert!(carol.contains("code is not valid"), "{carol}");
    // Wrong passwords for other users use up that address's budget (five
    // left; one more is earned every 6 s, so allow for a slow machine).
    let mut failures = 0;
    for n in 0..10 {
        let r = https_from(&relay, "127.0.0.2", &decide(&format!("u{n}@x"), "pw")).await;
        match status_of(&r) {
            401 => failures += 1,
            429 => break,
            other => panic!("status {other}: {r}"),
        }
        assert!(n < 9, "the address was never limited");
    }
    assert!(
        (5..=7).contains(&failures),
        "{failures} failures before the limit"
    );
}

// ---------------------------------------------------------------------
// #17 item 2: the HTTPS port against strangers.

/// Sends `request` then `body` a byte every 100 ms until the relay ends
/// the connection; returns what it answered. Panics if the relay never
/// does within `secs`.
async fn dribble(relay: &TestRelay, local: &str, request: String, body: bool, secs: u64) -> String {
    let mut tls = tls_from(relay, local).await;
    let (head, rest) = if body {
        (request.as_bytes(), &b"x".repeat(1000)[..])
    } else {
        (&request.as_bytes()[..20], &request.as_bytes()[20..])
    };
    tls.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    within(secs, "the relay cuts a slow client off", async {
        for byte in rest.iter().cycle() {
            let mut buf = [0u8; 1024];
            tokio::select! {
                read = tls.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if tls.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A person's whole device login over HTTPS (start, approve, redeem),
/// retried while the relay is busy; the access token's presence.
async fn legitimate_login(relay: &TestRelay) {
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let http = switchyard::tls::http_client(roots).unwrap();
    let url = relay.url();
    let start: serde_json::Value = loop {
        match http
            .post(format!("{url}/oauth/device_authorization"))
            .form(&[("client_id", "switchyard"), ("login_hint", ALICE)])
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => break r.json().await.unwrap(),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let code = start["user_code"].as_str().unwrap().to_string();
    let device = start["device_code"].as_str().unwrap().to_string();
    loop {
        let page = http
            .post(format!("{url}/device"))
            .form(&[
                ("user_code", code.as_str()),
                ("email", ALICE),
                ("password", common::cloud::ALICE_SSO_PASSWORD),
                ("decision", "approve"),
            ])
            .send()
            .await;
        if let Ok(r) = page {
            let text = r.text().await.unwrap_or_default();
            assert!(!text.contains("Sign-in failed"), "{text}");
            if text.contains("Approved") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let polled = http
            .post(format!("{url}/oauth/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device.as_str()),
                ("client_id", "switchyard"),
            ])
            .send()
            .await;
        if let Ok(r) = polled
            && let Ok(body) = r.json::<serde_json::Value>().await
        {
            if body["access_token"].is_string() {
                return;
            }
            assert_ne!(body["error"], "invalid_grant", "{body}");
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

/// Every connection slot held by clients that send their body (or their
/// headers) a byte at a time: each is cut off at the request deadline,
/// and a person's login goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_and_slow_header_clients_cannot_keep_a_login_out() {
    let relay = TestRelay::start_with(|c| {
        c.http_limits = HttpLimits {
            max_connections: 10,
            max_connections_per_address: 10,
            header_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            ..Default::default()
        };
    })
    .await;
    let slow_body = "POST /oauth/device_authorization HTTP/1.1\r\nHost: relay\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n"
        .to_string();
    let slow_header = form_post("/oauth/device_authorization", "client_id=x");
    let relay = &relay;
    let attackers = (0..10).map(|n| {
        let (request, body) = if n < 8 {
            (slow_body.clone(), true)
        } else {
            (slow_header.clone(), false)
        };
        async move { dribble(relay, "127.0.0.2", request, body, 10).await }
    });
    let (answers, ()) = tokio::join!(
        futures::future::join_all(attackers),
        within(30, "a legitimate login", legitimate_login(relay)),
    );
    let timed_out = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(timed_out, 8, "{answers:?}");
}

/// Connections from one address beyond its share are closed as they
/// arrive; another address is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    let relay = TestRelay::start_with(|c| {
        c.http_limits = HttpLimits {
            max_connections: 16,
            max_connections_per_address: 4,
            header_timeout: Duration::from_secs(60),
            ..Default::default()
        };
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tls_from(&relay, "127.0.0.2").await);
    }
    for _ in 0..6 {
        let mut extra = tcp_from(&relay, "127.0.0.2").await;
        let mut byte = [0u8; 1];
        let read = within(5, "an excess connection is closed", extra.read(&mut byte)).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let served = https_from(
        &relay,
        "127.0.0.3",
        "GET /.well-known/switchyard-relay HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&served), 200, "{served}");
    drop(held);
}

/// The answer to a device-login start from 127.0.0.6 whose `login_hint`
/// is `len` bytes long.
async fn start_with_hint(relay: &TestRelay, len: usize) -> String {
    let hint = "h".repeat(len);
    https_from(
        relay,
        "127.0.0.6",
        &form_post(
            "/oauth/device_authorization",
            &format!("client_id=switchyard&login_hint={hint}"),
        ),
    )
    .await
}

/// Device-login starts are budgeted per address and capped in total, and
/// oversized fields are refused naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_starts_are_bounded_per_address_and_in_total() {
    let relay = TestRelay::start_with(|c| {
        c.http_limits.grant_starts_per_minute = 5;
        c.device_flow.max_pending = 12;
    })
    .await;
    let start = form_post("/oauth/device_authorization", "client_id=switchyard");
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(status_of(&https_from(&relay, "127.0.0.2", &start).await));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(relay.relay().grants_pending().await.unwrap(), 5);
    // Other addresses fill the global cap and no more.
    let mut refused = 0;
    for local in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..5 {
            let r = https_from(&relay, local, &start).await;
            if status_of(&r) == 503 {
                assert!(r.contains("too many device logins"), "{r}");
                refused += 1;
            }
        }
    }
    assert_eq!(relay.relay().grants_pending().await.unwrap(), 12);
    assert_eq!(refused, 8);

    // A 1,000-byte login_hint is refused, naming the field...
    let r = start_with_hint(&relay, 1000).await;
    assert_eq!(status_of(&r), 400, "{r}");
    assert!(r.contains("login_hint is longer than 254 bytes"), "{r}");
    // ...and a 1.9 MB one never reaches a handler.
    let r = start_with_hint(&relay, 1_900_000).await;
    assert_eq!(status_of(&r), 413, "{r}");
    assert_eq!(relay.relay().grants_pending().await.unwrap(), 12);
}

/// README ("Faults and hostile clients"): the memory of a relay process
/// holding the most pending device logins it allows (10,000 by default,
/// each with a 254-byte `login_hint`) under a flood of starts, as its
/// peak resident set (VmHWM).
const GRANT_FLOOD_BOUND: u64 = 96 << 20;

/// `count` device-login starts from `local`, 16 at a time over kept-alive
/// connections, each with the longest `login_hint` allowed: how many got
/// each status, and one answer body per status.
async fn grant_flood(
    relay: &TestRelay,
    local: &str,
    count: usize,
) -> std::collections::BTreeMap<u16, (usize, String)> {
    use futures::StreamExt;
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(local.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{}/oauth/device_authorization", relay.url());
    let hint = format!("{}@example.com", "h".repeat(254 - "@example.com".len()));
    let answers = futures::stream::iter(0..count)
        .map(|_| {
            let request = http
                .post(&url)
                .form(&[("client_id", "switchyard"), ("login_hint", hint.as_str())]);
            async move {
                let response = request.send().await.expect("an answer to every start");
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut by_status = std::collections::BTreeMap::new();
    for (status, body) in answers {
        by_status.entry(status).or_insert((0, body)).0 += 1;
    }
    by_status
}

/// The relay process's resident memory now and at its peak.
fn relay_memory(relay: &TestRelay) -> (u64, u64) {
    let pid = relay.pid();
    (
        common::proc_status_bytes(pid, "VmRSS"),
        common::proc_status_bytes(pid, "VmHWM"),
    )
}

/// 10,000 device-login starts from one address against a real relay
/// process: with the default limits that address's budget answers 429
/// (saying why) and a person's login from another address goes through
/// meanwhile; with the per-address budget lifted, the global cap of
/// pending logins answers 503 once full. Either way the relay's memory
/// stays under [`GRANT_FLOOD_BOUND`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_grant_starts_from_one_address_keep_the_relay_small() {
    let relay = TestRelay::start_process(&[]).await;
    let (flood, ()) = tokio::join!(
        grant_flood(&relay, "127.0.0.2", 10_000),
        within(120, "a legitimate login", legitimate_login(&relay)),
    );
    let (rss, hwm) = relay_memory(&relay);
    eprintln!(
        "per-address budget: {flood:?}; relay VmRSS {} MiB, VmHWM {} MiB",
        rss >> 20,
        hwm >> 20
    );
    let started = flood.get(&200).map_or(0, |s| s.0);
    let limited = flood.get(&429).expect("starts over the budget refused");
    // Ten a minute, plus what refilled while the flood ran.
    assert!((10..100).contains(&started), "{flood:?}");
    assert_eq!(started + limited.0, 10_000, "only 200 and 429: {flood:?}");
    assert!(
        limited
            .1
            .contains("too many device logins started from this address"),
        "{}",
        limited.1
    );
    assert!(
        hwm <= GRANT_FLOOD_BOUND,
        "relay peaked at {} MiB",
        hwm >> 20
    );

    // No per-address budget: the table fills to its cap and no further.
    let relay = TestRelay::start_process(&["--grant-starts-per-minute", "1000000"]).await;
    let flood = grant_flood(&relay, "127.0.0.2", 10_500).await;
    let (rss, hwm) = relay_memory(&relay);
    eprintln!(
        "global cap: {:?}; relay VmRSS {} MiB, VmHWM {} MiB",
        flood.iter().map(|(s, (n, _))| (s, n)).collect::<Vec<_>>(),
        rss >> 20,
        hwm >> 20
    );
    assert_eq!(flood.get(&200).map(|s| s.0), Some(10_000), "{flood:?}");
    let full = flood.get(&503).expect("starts over the cap refused");
    assert_eq!(full.0, 500);
    assert!(full.1.contains("too many device logins"), "{}", full.1);
    assert!(
        hwm <= GRANT_FLOOD_BOUND,
        "relay peaked at {} MiB",
        hwm >> 20
    );
}

// ---------------------------------------------------------------------
// #21 item 7 (relay): QUIC connections that never log in.

/// A QUIC connection to the relay that completes its handshake and then
/// says nothing.
async fn silent_quic(relay: &TestRelay) -> Result<quinn::Connection, String> {
    let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
    let config =
        switchyard::wire::conn::relay_client_config(roots, None, &Default::default()).unwrap();
    let target = relay.relay().quic_addr();
    let endpoint = switchyard::wire::conn::client_endpoint(target).unwrap();
    let connecting = endpoint
        .connect_with(config, target, "127.0.0.1")
        .map_err(|e| e.to_string())?;
    within(10, "QUIC handshake", connecting)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_that_never_log_in_are_capped_and_cut_off() {
    let relay = TestRelay::start_with(|c| {
        c.prelogin = PreloginLimits {
            max_connections: 2,
            hello_timeout: Duration::from_secs(1),
        };
    })
    .await;
    let svc = CloudService::start(&relay, "SN-PRE", &[]).await;
    let first = silent_quic(&relay).await.unwrap();
    let second = silent_quic(&relay).await.unwrap();
    // A third is refused while two wait for their hello.
    let third = silent_quic(&relay).await;
    assert!(third.is_err(), "a third pre-login connection was accepted");
    for conn in [first, second] {
        let reason = within(5, "a silent connection is closed", conn.closed()).await;
        assert!(reason.to_string().contains("no hello in time"), "{reason}");
    }
    // Their slots are free again; the logged-in service was never touched.
    let again = silent_quic(&relay).await;
    assert!(again.is_ok(), "{again:?}");
    assert!(svc.online());
    assert_eq!(relay.relay().services_online(), 1);
}
