//! What strangers can make the service and the broker spend, and whom
//! they can lock out: login-failure keys, parallel guesses, connections
//! that never log in, labels that reach logs, per-user caps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::broker::{TestBroker, direct};
use common::cloud::{ALICE, CAROL, CloudService, TestRelay};
use common::service::{ALICE_PASSWORD, TestService, make_inventory, start_service};
use common::within;
use switchyard::api::pb;
use switchyard::broker::direct_client::{DirectConnection, login};
use switchyard::broker::link::LinkError;
use switchyard::service::drivers::Drivers;
use switchyard::service::drivers::ssh::SshDriverConfig;
use switchyard::service::ops::ServiceOps;
use switchyard::service::ratelimit::LimiterConfig;
use switchyard::service::rpc::{RpcConfig, RpcServer};
use switchyard::wire::conn::{
    self, TransportLimits, client_endpoint, read_frame, transport_config, write_frame,
};
use switchyard::wire::messages::{AuthRequest, AuthResponse, Credentials, ErrorCode};
use switchyard::wire::pin::PinnedServerVerifier;
use tonic::Code;

/// Logs in to `addr` with `credentials` (connect, handshake, login).
async fn login_with(
    addr: std::net::SocketAddr,
    credentials: Credentials,
) -> Result<DirectConnection, LinkError> {
    let limits = TransportLimits::default();
    let endpoint = client_endpoint(addr).unwrap();
    within(
        30,
        "login",
        login(
            &endpoint,
            addr,
            &addr.to_string(),
            credentials,
            None,
            Arc::new(transport_config(&limits)),
            &limits,
        ),
    )
    .await
}

fn password(user: &str, password: &str) -> Credentials {
    Credentials::Password {
        username: user.into(),
        password: password.into(),
    }
}

/// The code a refused login got.
fn refused(result: Result<DirectConnection, LinkError>) -> ErrorCode {
    match result {
        Err(LinkError::Rejected { error, .. }) => error.code,
        Err(other) => panic!("not a refusal: {other}"),
        Ok(_) => panic!("login accepted"),
    }
}

/// A QUIC connection to the service with the handshake done and no login
/// sent yet.
async fn handshaken(svc: &TestService) -> quinn::Connection {
    let limits = TransportLimits::default();
    let endpoint = client_endpoint(svc.addr()).unwrap();
    let verifier = PinnedServerVerifier::new(Some(svc.fingerprint));
    let config = conn::client_config_with(verifier, Arc::new(transport_config(&limits))).unwrap();
    let connecting = endpoint
        .connect_with(config, svc.addr(), "switchyard-service")
        .unwrap();
    let conn = within(20, "handshake", connecting).await.unwrap();
    // The endpoint must outlive the connection's use in the test.
    std::mem::forget(endpoint);
    conn
}

/// Sends one login on an open connection and reads the answer.
async fn send_login(conn: &quinn::Connection, credentials: Credentials) -> AuthResponse {
    let max = TransportLimits::default().max_frame;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let request = AuthRequest {
        credentials,
        client: "limits-test".into(),
    };
    write_frame(&mut send, &request, max).await.unwrap();
    let _ = send.finish();
    within(30, "login answer", read_frame(&mut recv, max))
        .await
        .unwrap()
        .expect("an answer")
}

fn three_failures() -> RpcConfig {
    RpcConfig {
        login_limiter: LimiterConfig {
            max_failures: 3,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Bad relay assertions (garbage, another service's, a verified identity
/// that is no remote user) sent from one address, many more times than
/// the failure limit, lock nobody out: a cloud caller with a valid
/// assertion and a password user from the very same address get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_assertions_from_one_source_do_not_lock_out_cloud_callers() {
    let relay = TestRelay::start().await;
    let svc = CloudService::start(&relay, "SN-LIMITS", &[]).await;
    let state = switchyard::relay::state::load(&relay.state_dir()).unwrap();
    let assertion = |sub: &str, serial: &str| Credentials::Assertion {
        token: state.signer.assert(sub, serial, 60).unwrap(),
    };
    for round in 0..4 {
        for bad in [
            Credentials::Assertion {
                token: "not.a.jwt".into(),
            },
            assertion(ALICE, "SN-SOMEONE-ELSE"),
            assertion(CAROL, "SN-LIMITS"),
        ] {
            let code = refused(login_with(svc.rpc_addr(), bad).await);
            assert_ne!(
                code,
                ErrorCode::ResourceExhausted,
                "round {round}: the bad assertions locked something"
            );
        }
    }
    let alice = login_with(svc.rpc_addr(), assertion(ALICE, "SN-LIMITS")).await;
    assert_eq!(alice.unwrap().service_name, "cloud-service");
    let password_user = login_with(svc.rpc_addr(), password("alice", ALICE_PASSWORD)).await;
    assert!(password_user.is_ok(), "{:?}", password_user.err());
}

/// N wrong passwords sent at once (every connection's handshake done
/// first, so the logins race): exactly `max_failures` are checked, every
/// other one is refused as locked — and so is the right password then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_are_all_counted() {
    let svc = start_service(&[], three_failures());
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(handshaken(&svc).await);
    }
    let answers = futures::future::join_all(
        conns
            .iter()
            .map(|c| send_login(c, password("alice", "wrong"))),
    )
    .await;
    let codes: Vec<ErrorCode> = answers
        .into_iter()
        .map(|a| match a {
            AuthResponse::Rejected(e) => e.code,
            AuthResponse::Accepted { .. } => panic!("a wrong password was accepted"),
        })
        .collect();
    let checked = codes
        .iter()
        .filter(|c| **c == ErrorCode::Unauthenticated)
        .count();
    let locked = codes
        .iter()
        .filter(|c| **c == ErrorCode::ResourceExhausted)
        .count();
    assert_eq!((checked, locked), (3, 7), "{codes:?}");
    let right = login_with(svc.addr(), password("alice", ALICE_PASSWORD)).await;
    assert_eq!(refused(right), ErrorCode::ResourceExhausted);
}

/// Parallel logins with the right password all get in: waiting for the
/// attempts in flight is not a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_right_passwords_all_get_in() {
    let svc = start_service(&[], three_failures());
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(handshaken(&svc).await);
    }
    let answers = futures::future::join_all(
        conns
            .iter()
            .map(|c| send_login(c, password("alice", ALICE_PASSWORD))),
    )
    .await;
    for a in answers {
        assert!(matches!(a, AuthResponse::Accepted { .. }), "{a:?}");
    }
}

/// Guesses at other users from one address are not forgiven when a valid
/// user logs in from it: the address locks at the limit all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_success_does_not_reset_the_address() {
    let svc = start_service(&[], three_failures());
    for user in ["bob", "mallory"] {
        let code = refused(login_with(svc.addr(), password(user, "guess")).await);
        assert_eq!(code, ErrorCode::Unauthenticated);
    }
    assert!(
        login_with(svc.addr(), password("alice", ALICE_PASSWORD))
            .await
            .is_ok()
    );
    let code = refused(login_with(svc.addr(), password("eve", "guess")).await);
    assert_eq!(code, ErrorCode::Unauthenticated);
    // Three failures from this address: it is locked, for alice too.
    let code = refused(login_with(svc.addr(), password("alice", ALICE_PASSWORD)).await);
    assert_eq!(code, ErrorCode::ResourceExhausted);
}

/// Connections that never log in hold at most `max_unauthenticated`
/// slots: the next one is refused at once; a slot frees when one of them
/// goes (or its login deadline passes), and a real login then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_log_in_are_bounded() {
    let svc = start_service(
        &[],
        RpcConfig {
            max_unauthenticated: 2,
            auth_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let idle = [handshaken(&svc).await, handshaken(&svc).await];
    let refused = login_with(svc.addr(), password("alice", ALICE_PASSWORD)).await;
    assert!(
        matches!(refused, Err(LinkError::Unreachable { .. })),
        "a third unauthenticated connection was let in: {:?}",
        refused.map(|c| c.service_name)
    );
    // The login deadline closes the idle ones, saying why.
    for conn in &idle {
        let reason = within(15, "idle connection closed", conn.closed()).await;
        let quinn::ConnectionError::ApplicationClosed(close) = reason else {
            panic!("unexpected close: {reason}");
        };
        assert_eq!(
            close.error_code,
            quinn::VarInt::from_u32(switchyard::wire::messages::close_code::UNAUTHENTICATED)
        );
    }
    let ok = login_with(svc.addr(), password("alice", ALICE_PASSWORD)).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
}

/// A user name over the inventory's limit is refused before any hashing;
/// a name with a newline and a huge client string are refused as usual,
/// and what reaches the log is escaped and bounded (checked in
/// `service_log_lines_stay_one_bounded_line`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_user_names_are_refused_before_hashing() {
    let svc = start_service(&[], three_failures());
    for _ in 0..5 {
        let code = refused(login_with(svc.addr(), password(&"u".repeat(300), "x")).await);
        assert_eq!(code, ErrorCode::InvalidArgument);
    }
    // Not counted: the address is not locked.
    assert!(
        login_with(svc.addr(), password("alice", ALICE_PASSWORD))
            .await
            .is_ok()
    );
}

/// The name a service gives itself is a label: a control character in it
/// never reaches the broker's status or logs raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_naming_itself_with_control_characters_is_tidied() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let inv = make_inventory(&dir.path().join("inv.db"), &[]);
    let identity = inv.tls_identity().unwrap();
    let ops = ServiceOps::new(
        "evil\nINFO forged line\u{1b}[31m",
        inv,
        Drivers::new(SshDriverConfig::default()),
    );
    let server = RpcServer::start(
        ops,
        identity,
        RpcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    let c = login_with(server.local_addr(), password("alice", ALICE_PASSWORD))
        .await
        .unwrap();
    assert_eq!(c.service_name, "evil\\nINFO forged line\\u{1b}[31m");
}

/// Links and named services per local user are capped like sessions,
/// and the refusal names the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_named_services_per_user_are_capped() {
    let a = start_service(&[], RpcConfig::default());
    let b = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[
        ("SWITCHYARD_BROKER__MAX_LINKS_PER_USER", "1"),
        ("SWITCHYARD_BROKER__MAX_NAMED_PER_USER", "1"),
    ])
    .await;
    let mut client = broker.client().await;
    client
        .service_direct(direct(&a, "", "first", ALICE_PASSWORD))
        .await
        .unwrap();
    // The same name again (same link) is a replacement, not a second one.
    client
        .service_direct(direct(&a, "", "first", ALICE_PASSWORD))
        .await
        .unwrap();
    let e = client
        .service_direct(direct(&a, "", "second", ALICE_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("broker.max_named_per_user"), "{e:?}");
    let session = client
        .open_session(pb::OpenSessionRequest {
            client_name: "caps".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_id;
    let e = client
        .service_direct(direct(&b, &session, "", ALICE_PASSWORD))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("broker.max_links_per_user"), "{e:?}");
    // The link already held is shared, not counted twice.
    client
        .service_direct(direct(&a, &session, "", ALICE_PASSWORD))
        .await
        .unwrap();
}

/// A password login inside a tunnel the relay opened for `token`'s
/// identity (what a custom client could do; the broker uses assertions).
async fn relayed_password_login(
    relay: &TestRelay,
    token: &str,
    serial: &str,
    credentials: Credentials,
) -> Result<DirectConnection, LinkError> {
    use switchyard::broker::cloud_login::{Credential, connect};
    use switchyard::broker::relay_client::{RelayInfo, open_tunnel};
    use switchyard::wire::tunnel::{TunnelEndpoint, TunnelRole};
    let limits = TransportLimits::default();
    let ca = std::fs::read_to_string(relay.ca_file()).unwrap();
    let info = RelayInfo::new(&relay.url(), Some(ca)).unwrap();
    let credential = Credential::Token {
        token: switchyard::secret::Secret::new(token),
    };
    let relay_conn = within(20, "relay hello", connect(&info, &credential, &limits))
        .await
        .unwrap();
    let open = within(20, "tunnel", open_tunnel(&relay_conn.conn, serial, &limits))
        .await
        .unwrap();
    let tunnel = TunnelEndpoint::start(
        TunnelRole::Client,
        open.send,
        open.recv,
        None,
        open.carrier,
        &limits,
    )
    .unwrap();
    within(
        30,
        "relayed login",
        login(
            &tunnel.endpoint,
            tunnel.peer,
            "relayed",
            credentials,
            Some(switchyard::wire::pin::Fingerprint(open.facts.fingerprint)),
            tunnel.transport.clone(),
            &limits,
        ),
    )
    .await
}

/// Every relayed connection comes from the relay's address; password
/// failures inside tunnels count against the identity the relay
/// authenticated instead. Carol's guesses lock carol's tunnels out, and
/// alice, through the same relay, still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guesses_through_the_relay_lock_out_only_their_sender() {
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-RELAYED-PW", &[]).await;
    let carol = relay.token(CAROL);
    for i in 0..5 {
        let guess = password(&format!("user-{i}"), "guess");
        let code = refused(relayed_password_login(&relay, &carol, "SN-RELAYED-PW", guess).await);
        assert_eq!(code, ErrorCode::Unauthenticated, "guess {i}");
    }
    let locked = relayed_password_login(
        &relay,
        &carol,
        "SN-RELAYED-PW",
        password("bob", "bob-password"),
    )
    .await;
    assert_eq!(refused(locked), ErrorCode::ResourceExhausted);
    let alice = relayed_password_login(
        &relay,
        &relay.token(ALICE),
        "SN-RELAYED-PW",
        password("alice", ALICE_PASSWORD),
    )
    .await;
    assert_eq!(alice.unwrap().service_name, "cloud-service");
}
