//! A relay tier: three real `switchyard relay run` processes on one
//! PostgreSQL database (a private cluster per test, tests/common/postgres.rs).
//! Tokens and certificates issued by one node are valid on all; a
//! revocation on one node ends sessions on another within the documented
//! bound; a one-time password redeemed at once on two nodes is won by
//! exactly one.

mod common;

use std::time::{Duration, Instant};

use common::broker::{TestBroker, open_attached, status};
use common::cloud::{
    ALICE, CloudCaller, CloudService, OauthAt, assert_ciphertext_only, assert_show_version,
    broker_at, cloud_service, decide_at, show_version,
};
use common::postgres::{
    PgCluster, TierNode, enroll_service, enrolled_quic, init_tier_state, run_service,
    run_service_on,
};
use common::within;
use switchyard::api::pb;
use switchyard::relay::db::Database;
use switchyard::relay::live::REVOCATION_BOUND;
use switchyard::relay::nodes::{NodeError, NodeIdentity};
use switchyard::relay::unix_now;
use switchyard::secret::Secret;

/// Slack on top of a documented bound, for a loaded test machine.
const SLACK: Duration = Duration::from_secs(3);

/// A cluster, a database, the state directory every node copies, and
/// nodes A, B and C started at once (so they race to migrate).
struct Tier {
    work: tempfile::TempDir,
    cluster: PgCluster,
    database: String,

    nodes: Vec<TierNode>,
    /// An administrator's handle on the shared database.
    admin: Database,
}

impl Tier {
    async fn start() -> Self {
        Self::start_with(&["a", "b", "c"], None).await.0
    }

    /// Nodes `names` as real processes started at once, and node `tapped`
    /// (if any) inside the test process, copying what it forwards to the
    /// returned receiver.
    async fn start_with(
        names: &[&str],
        tapped: Option<&str>,
    ) -> (Self, Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>) {
        Self::start_with_args(names, tapped, &[]).await
    }

    /// As [`Tier::start_with`], the processes with `extra` arguments to
    /// `relay run`.
    async fn start_with_args(
        names: &[&str],
        tapped: Option<&str>,
        extra: &[&str],
    ) -> (Self, Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>) {
        Self::start_bin(common::switchyard_bin(), names, tapped, extra).await
    }

    /// As [`Tier::start_with_args`], the processes running relay binary
    /// `bin`.
    async fn start_bin(
        bin: &str,
        names: &[&str],
        tapped: Option<&str>,
        extra: &[&str],
    ) -> (Self, Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>) {
        common::init();
        let cluster = PgCluster::start();
        let database = cluster.create_database();
        let work = tempfile::tempdir().unwrap();
        let state = init_tier_state(work.path());
        let mut nodes = futures::future::join_all(
            names
                .iter()
                .map(|name| TierNode::start_bin(bin, name, work.path(), &state, &database, extra)),
        )
        .await;
        let mut tap = None;
        if let Some(name) = tapped {
            let (node, rx) = TierNode::start_tapped(name, work.path(), &state, &database).await;
            nodes.insert(0, node);
            tap = Some(rx);
        }
        let admin = Database::open(&state, Some(&database)).await.unwrap();
        admin
            .add_user(ALICE, &Secret::new("alice-password"))
            .await
            .unwrap();
        let tier = Self {
            work,
            cluster,
            database,
            nodes,
            admin,
        };
        (tier, tap)
    }

    fn node(&self, name: &str) -> &TierNode {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    /// `switchyard relay --state <node's copy> ARGS...` on the shared
    /// database (what an administrator runs on that node's host).
    async fn admin_command_on(&self, node: &str, args: &[&str]) -> (String, String) {
        let out = within(
            30,
            "relay admin command",
            tokio::process::Command::new(common::switchyard_bin())
                .arg("relay")
                .arg("--state")
                .arg(&self.node(node).state)
                .args(args)
                .env("SWITCHYARD_RELAY_DATABASE", &self.database)
                .output(),
        )
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "switchyard relay {args:?} on {node} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// An access token for alice issued on `node` (`relay token issue`),
    /// and its id.
    async fn token_on(&self, node: &str) -> (String, String) {
        let (stdout, stderr) = self
            .admin_command_on(node, &["token", "issue", ALICE, "--lifetime", "1h"])
            .await;
        let id = stderr
            .lines()
            .find_map(|l| l.strip_prefix("token "))
            .and_then(|l| l.split_whitespace().next())
            .expect("`token issue` names the token's id")
            .to_string();
        (stdout.trim().to_string(), id)
    }

    /// An enrollment one-time password for `serial` minted by alice.
    async fn otp(&self, serial: &str) -> String {
        let otp = format!("otp-{:016x}", rand::random::<u64>());
        self.admin
            .add_otp(&Secret::new(otp.as_str()), serial, ALICE, unix_now() + 600)
            .await
            .unwrap();
        otp
    }

    /// A broker whose default domain is the tier of nodes `names` (their
    /// URLs in that order).
    async fn broker_knowing(&self, names: &[&str]) -> TestBroker {
        let urls: Vec<&str> = names.iter().map(|n| self.node(n).url.as_str()).collect();
        let ca = self.node(names[0]).ca_file();
        broker_at(self.work.path(), &urls, &ca, &[]).await
    }

    /// The live node serial `serial` is present on (its QUIC address).
    async fn present_on(&self, serial: &str) -> Option<String> {
        self.admin
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .find(|n| n.alive && n.serials.iter().any(|s| s == serial))
            .map(|n| n.quic)
    }

    /// A broker whose default domain is `node`.
    async fn broker_on(&self, node: &str) -> TestBroker {
        self.broker_knowing(&[node]).await
    }

    /// Service `serial` enrolled through node `via` (with a one-time
    /// password of alice's) and running connected to node `on`.
    async fn service(&self, serial: &str, via: &str, on: &str) -> CloudService {
        let otp = self.otp(serial).await;
        let (dir, enrolled) = enroll_service(self.node(via), &otp, &[]).await;
        assert_eq!(enrolled.unwrap(), serial);
        run_service_on(dir, serial, self.node(on)).await
    }

    /// A broker on node `node` and its caller logged in with `token`,
    /// holding `serial` (reachable).
    async fn caller_on(&self, node: &str, token: &str, serial: &str) -> (TestBroker, CloudCaller) {
        let broker = self.broker_on(node).await;
        let caller = CloudCaller::start(&broker, token, serial).await;
        (broker, caller)
    }
}

/// A service enrolled through node A (its certificate issued there) runs
/// connected to node B; a broker logs in through B with a token issued on
/// node C; its exec reaches the device. Every node and the admin command
/// on any node see the same enrollment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_enrolled_through_a_serves_a_broker_logged_in_through_b() {
    let tier = Tier::start().await;
    let otp = tier.otp("SN-TIER").await;
    let (dir, enrolled) = enroll_service(tier.node("a"), &otp, &[]).await;
    assert_eq!(enrolled.unwrap(), "SN-TIER");
    let _svc = run_service_on(dir, "SN-TIER", tier.node("b")).await;

    let (token, _) = tier.token_on("c").await;
    let (_broker, mut caller) = tier.caller_on("b", &token, "SN-TIER").await;
    caller.assert_show_version().await;

    let (listed, _) = tier.admin_command_on("c", &["service", "list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.contains("SN-TIER") && l.contains(ALICE)),
        "{listed}"
    );
    // The redeemed password is spent on every node.
    let (_, again) = enroll_service(tier.node("c"), &otp, &[]).await;
    let err = again.unwrap_err().to_string();
    assert!(err.contains("already used"), "{err}");
}

/// A broker logged in through node A with a token; the token is revoked
/// with node C's admin command; node A closes the broker's connection
/// within the documented bound (notified by PostgreSQL, not by its 30 s
/// re-check), the broker's next exec fails saying so, and node B refuses
/// the token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_node_c_is_refused_on_node_a_within_the_bound() {
    let tier = Tier::start().await;
    let _svc = tier.service("SN-REV", "a", "a").await;
    let (token, id) = tier.token_on("a").await;
    let (_broker, mut caller) = tier.caller_on("a", &token, "SN-REV").await;
    caller.assert_show_version().await;

    let (out, _) = tier.admin_command_on("c", &["token", "revoke", &id]).await;
    assert!(out.contains("revoked"), "{out}");
    let revoked_at = Instant::now();
    let bound = REVOCATION_BOUND + SLACK;
    within(
        bound.as_secs() + 10,
        "an exec on node A fails saying revoked",
        async {
            loop {
                match caller.show_version().await {
                    Err(e) if e.message().contains("revoked") => return,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        },
    )
    .await;
    let took = revoked_at.elapsed();
    eprintln!("revocation on C refused on A after {took:?}");
    assert!(
        took <= bound,
        "node A refused the revoked token only after {took:?} (bound {REVOCATION_BOUND:?} + slack)"
    );

    let other = tier.broker_on("b").await;
    let mut client = other.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let refused = client
        .access_token_login(pb::AccessTokenLoginRequest {
            session_id: session,
            token: token.clone(),
            relay: None,
        })
        .await
        .expect_err("node B refuses the revoked token");
    assert!(refused.message().contains("revoked"), "{refused:?}");
}

/// One password, redeemed over HTTPS on nodes A and B at the same moment:
/// both requests are held at the database until both wait, then released
/// together. The test holds the password's row lock (not the table): a
/// redemption that locks the row to read it (`FOR UPDATE`) waits there,
/// and so does one that read it unlocked and then writes; only the first
/// is right (the second would then redeem it twice). Exactly one enrolls;
/// the other is told the password was already used. Three rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otp_redeemed_at_once_on_two_nodes_is_won_by_exactly_one() {
    let tier = Tier::start().await;
    let (mut gate, conn) = tokio_postgres::connect(&tier.database, tokio_postgres::NoTls)
        .await
        .unwrap();
    let _driver = switchyard::task::AbortOnDrop::new(tokio::spawn(conn));
    for round in 0..3 {
        let serial = format!("SN-RACE-{round}");
        let otp = tier.otp(&serial).await;
        let lock = gate.transaction().await.unwrap();
        let held = lock
            .execute(
                "SELECT 1 FROM otps WHERE serial = $1 FOR UPDATE",
                &[&serial],
            )
            .await
            .unwrap();
        assert_eq!(held, 1, "the password's row");
        let both = async {
            tokio::join!(
                enroll_service(tier.node("a"), &otp, &[]),
                enroll_service(tier.node("b"), &otp, &[]),
            )
        };
        let release = commit_once_two_wait(
            lock,
            "both redemptions wait at the database",
            "SELECT count(*) FROM pg_locks WHERE NOT granted",
        );
        let (((_a_dir, a), (_b_dir, b)), ()) = tokio::join!(both, release);
        let outcomes = [a, b];
        let won = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {outcomes:?}");
        let lost = outcomes.into_iter().find_map(|r| r.err()).unwrap();
        assert!(lost.to_string().contains("already used"), "{lost}");
        let audit = tier.admin.enrollment_audit(Some(&serial)).await.unwrap();
        assert_eq!(audit.len(), 1, "one enrollment recorded: {audit:?}");
    }
    drop(tier.cluster.log());
}

/// `relay nodes` rows for the node at `quic`: (alive, serials).
fn node_row(listing: &str, quic: &str) -> Option<(bool, String)> {
    listing.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(1) == Some(&quic)).then(|| {
            let alive = cols[2] == "yes";
            (
                alive,
                if alive {
                    cols.last().unwrap().to_string()
                } else {
                    String::new()
                },
            )
        })
    })
}

/// Each node records the services connected to it, with a heartbeat:
/// `relay nodes` shows the service on node A; once A is SIGKILLed it owns
/// nothing within the node timeout (plus slack), and the service, started
/// again on B, is listed there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_stops_owning_its_services_within_the_timeout() {
    use switchyard::relay::pg::presence::NODE_TIMEOUT;
    let mut tier = Tier::start().await;
    let svc = tier.service("SN-HERE", "a", "a").await;
    let a_quic = tier.node("a").quic.clone();
    let (listing, _) = tier.admin_command_on("b", &["nodes"]).await;
    assert_eq!(
        node_row(&listing, &a_quic),
        Some((true, "SN-HERE".to_string())),
        "{listing}"
    );
    assert_eq!(listing.lines().count(), 4, "three nodes: {listing}");

    tier.nodes[0].kill().await;
    let killed_at = Instant::now();
    let bound = NODE_TIMEOUT + SLACK;
    within(bound.as_secs() + 10, "node A owns nothing", async {
        loop {
            let (listing, _) = tier.admin_command_on("b", &["nodes"]).await;
            if node_row(&listing, &a_quic).is_some_and(|(alive, _)| !alive) {
                assert!(!listing.contains("SN-HERE"), "{listing}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let took = killed_at.elapsed();
    eprintln!("node A stopped owning its services {took:?} after SIGKILL");
    assert!(took <= bound, "{took:?} (timeout {NODE_TIMEOUT:?} + slack)");

    let CloudService { dir, .. } = svc;
    let _svc = run_service_on(dir, "SN-HERE", tier.node("b")).await;
    let (listing, _) = tier.admin_command_on("c", &["nodes"]).await;
    assert_eq!(
        node_row(&listing, &tier.node("b").quic),
        Some((true, "SN-HERE".to_string())),
        "{listing}"
    );
}

/// One hop: a broker logged in through node A reaches a service connected
/// only to node B (a real process). A finds B in the presence table and
/// forwards the tunnel over a node-to-node link (mutual TLS) that a second
/// tunnel reuses; the bytes A forwards carry neither the command, the
/// output nor the caller's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_on_node_a_reaches_a_service_on_node_b_in_one_hop() {
    let (tier, tap) = Tier::start_with(&["b"], Some("a")).await;
    let mut tap = tap.unwrap();
    let _svc = tier.service("SN-HOP", "b", "b").await;
    let (token, _) = tier.token_on("b").await;
    let a = tier.node("a").relay.as_ref().unwrap();
    assert_eq!(a.services_online(), 0, "the service is on B only");

    let (_broker, mut caller) = tier.caller_on("a", &token, "SN-HOP").await;
    let command = "show running-config";
    let out = caller.exec("core-1", &[command]).await.unwrap();
    let output = out[0].ok_output();
    assert!(output.contains("hostname core-1"), "{output}");
    let seen = assert_ciphertext_only(&mut tap, command, "hostname core-1", ALICE);
    assert!(seen > output.len(), "node A forwarded {seen} bytes");
    // Both nodes have a packet port: the tunnel crossed as datagrams
    // between them, its stream carried nothing.
    assert!(a.node_datagrams() > 0, "no datagram crossed to node B");
    assert_eq!(a.stream_bytes(), 0, "the tunnel took the stream path");

    // A second broker's tunnel rides the same link.
    let (_other, mut caller2) = tier.caller_on("a", &token, "SN-HOP").await;
    caller2.assert_show_version().await;
    assert_eq!(a.node_links_opened(), 1, "one link from A to B");
    let log = tier.node("b").log();
    assert_eq!(log.matches("relay node connected").count(), 1, "{log}");

    // Per-node load: A counts both tunnels and what it forwarded, and its
    // heartbeat publishes that to the tier (`relay nodes`).
    let load = a.load();
    assert_eq!(load.tunnels_total, 2, "{load:?}");
    assert!(load.tunnel_bytes >= seen as u64, "{load:?} (tapped {seen})");
    let a_id = a.node_id().to_string();
    within(10, "A's heartbeat reports its tunnels", async {
        loop {
            let nodes = tier.admin.nodes().await.unwrap();
            if nodes
                .iter()
                .any(|n| n.id == a_id && n.load.tunnels_total == 2)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// The packet path across nodes, seen from the service's side: a broker
/// logged in through node B (a process) reaches a service connected to
/// node A (in this process, tapped). The tunnel's datagrams cross from B's
/// packet port to A's as plain UDP (with the hop token) and A sends them
/// on to the service
/// (A's tunnel streams carry nothing); what A forwards holds neither the
/// command, the output nor the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_tunnel_takes_the_packet_path_across_nodes() {
    let (tier, tap) = Tier::start_with(&["b"], Some("a")).await;
    let mut tap = tap.unwrap();
    let _svc = tier.service("SN-PKT", "a", "a").await;
    let a = tier.node("a").relay.as_ref().unwrap();
    assert_eq!(a.services_online(), 1, "the service is on A");
    let (token, _) = tier.token_on("a").await;

    let (_broker, mut caller) = tier.caller_on("b", &token, "SN-PKT").await;
    let command = "show running-config";
    let out = caller.exec("core-1", &[command]).await.unwrap();
    let output = out[0].ok_output();
    assert!(output.contains("hostname core-1"), "{output}");
    assert!(
        a.node_datagrams() > 0,
        "no datagram crossed the node link: {}",
        tier.node("b").log()
    );
    assert_eq!(a.stream_bytes(), 0, "the tunnel took the stream path");
    let seen = assert_ciphertext_only(&mut tap, command, "hostname core-1", ALICE);
    assert!(seen > output.len(), "node A forwarded {seen} bytes");
    let log = tier.node("b").log();
    assert!(
        log.contains("tunnel forwarded") && log.contains("packets=true"),
        "{log}"
    );
}

/// A stranger who knows a forwarded tunnel's id (it is in every datagram
/// between an end and its node) but not its hop token (only the two nodes
/// have it) sends to the service's node A: a node hop datagram with a
/// wrong token, and an end datagram claiming the client end (which is
/// across the hop). Both are dropped and counted by reason; the stranger
/// is answered nothing, and the tunnel keeps working (its client end was
/// not moved to the stranger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_inject_into_or_take_over_a_forwarded_tunnel() {
    use switchyard::relay::packets::Dropped;
    use switchyard::wire::packet_relay::{self, Header, HopToken, PeerRole};
    let (tier, tap) = Tier::start_with(&["b"], Some("a")).await;
    let mut tap = tap.unwrap();
    let _svc = tier.service("SN-STRANGER", "a", "a").await;
    let a = tier.node("a").relay.as_ref().unwrap();
    let (token, _) = tier.token_on("a").await;
    let (_broker, mut caller) = tier.caller_on("b", &token, "SN-STRANGER").await;
    caller.assert_show_version().await;
    assert!(a.node_datagrams() > 0, "the tunnel took the packet path");
    // The tunnel's id, from a datagram the service sent to A.
    let mut id = None;
    while let Ok(chunk) = tap.try_recv() {
        if let Ok(Header::End {
            role: PeerRole::Service,
            id: seen,
        }) = packet_relay::classify(&chunk)
        {
            id = Some(seen);
        }
    }
    let id = id.expect("A forwarded a datagram of the service's");

    let port = a.packet_addr().unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = (
        a.packets_dropped(Dropped::UnknownHop),
        a.packets_dropped(Dropped::EndAcrossNodes),
    );
    let payload = [0x40u8; 64];
    for header in [
        packet_relay::hop_header(PeerRole::Client, HopToken::random()),
        packet_relay::header(PeerRole::Client, id),
    ] {
        let mut d = header.to_vec();
        d.extend_from_slice(&payload);
        stranger.send_to(&d, port).await.unwrap();
    }
    // The tunnel still works (so its client end is still across the hop),
    // and by then A has read the stranger's datagrams (sent first).
    let again = tokio::time::timeout(Duration::from_secs(30), caller.assert_show_version());
    again
        .await
        .expect("the tunnel still works after the stranger");
    let after = (
        a.packets_dropped(Dropped::UnknownHop),
        a.packets_dropped(Dropped::EndAcrossNodes),
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 1),
        "each stranger datagram dropped and counted"
    );
    let mut buf = [0u8; 2048];
    assert!(
        stranger.try_recv(&mut buf).is_err(),
        "the stranger was sent a datagram of the tunnel"
    );
}

/// The stream path across nodes: with no packet port on either node, a
/// broker logged in through A reaches a service on B, the tunnel's QUIC
/// riding the streams of the node link (two tunnels, one after the
/// other, on the same link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_packet_ports_a_forwarded_tunnel_rides_the_node_links_streams() {
    let (tier, _) = Tier::start_with_args(&["a", "b"], None, &["--packet-listen", "off"]).await;
    let _svc = tier.service("SN-STREAM", "b", "b").await;
    let (token, _) = tier.token_on("b").await;
    for _ in 0..2 {
        let (_broker, mut caller) = tier.caller_on("a", &token, "SN-STREAM").await;
        caller.assert_show_version().await;
    }
    let log = tier.node("a").log();
    assert!(
        log.contains("tunnel forwarded") && log.contains("packets=false"),
        "{log}"
    );
    assert_eq!(log.matches("link to relay node opened").count(), 1, "{log}");
}

/// Opens a node-to-node link to `node` presenting `identity`.
async fn link_as(node: &TierNode, identity: &NodeIdentity) -> Result<quinn::Connection, NodeError> {
    let keys = switchyard::relay::state::load_keys(&node.state).unwrap();
    let limits = switchyard::wire::conn::TransportLimits::default();
    let addr: std::net::SocketAddr = node.quic.parse().unwrap();
    let endpoint = switchyard::wire::conn::client_endpoint(addr).unwrap();
    let config = identity
        .client_config(&keys.server_cert_der, &limits)
        .unwrap();
    switchyard::relay::nodes::connect(
        &endpoint,
        config,
        &identity.id,
        &node.name,
        addr,
        limits.max_frame,
    )
    .await
}

/// A node is admitted only with the node certificate recorded for the id
/// its hello names: a client certificate of the tier's own CA, a node
/// certificate presented under another node's id, and a node certificate
/// from another CA (recorded in the database, even) are refused; a node
/// certificate issued as every node issues its own is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_presenting_a_wrong_certificate_is_refused() {
    let (tier, _) = Tier::start_with(&["b"], None).await;
    let b = tier.node("b");
    let keys = switchyard::relay::state::load_keys(&b.state).unwrap();
    let fingerprint = |der: &[u8]| switchyard::wire::pin::Fingerprint::of(der).0;

    let (csr, key) = switchyard::tls::new_certificate_request("intruder").unwrap();
    let client_cert = keys.ca.issue_client(&csr, ALICE).unwrap();
    tier.admin
        .record_cert(&fingerprint(&client_cert), "client", ALICE)
        .await
        .unwrap();
    let err = link_as(b, &NodeIdentity::from_parts("intruder", client_cert, key))
        .await
        .expect_err("a client certificate is no node's");
    assert!(
        matches!(&err, NodeError::Refused { reason, .. } if reason.contains("not the node certificate")),
        "{err}"
    );

    let mut borrowed = NodeIdentity::issue(&keys, &tier.admin, "node-x")
        .await
        .unwrap();
    borrowed.id = "node-y".into();
    let err = link_as(b, &borrowed)
        .await
        .expect_err("node-x's certificate does not make anyone node-y");
    assert!(matches!(err, NodeError::Refused { .. }), "{err}");

    let elsewhere = tempfile::tempdir().unwrap();
    let other = init_tier_state(elsewhere.path());
    let other_keys = switchyard::relay::state::load_keys(&other).unwrap();
    let (csr, key) = switchyard::tls::new_certificate_request("node-z").unwrap();
    let foreign = other_keys.ca.issue_node(&csr, "node-z").unwrap();
    tier.admin
        .record_cert(&fingerprint(&foreign), "node", "node-z")
        .await
        .unwrap();
    let err = link_as(b, &NodeIdentity::from_parts("node-z", foreign, key))
        .await
        .expect_err("a certificate of another CA is refused in the handshake");
    assert!(matches!(err, NodeError::Connect { .. }), "{err}");

    let genuine = NodeIdentity::issue(&keys, &tier.admin, "node-ok")
        .await
        .unwrap();
    link_as(b, &genuine)
        .await
        .expect("a node certificate recorded for its id is admitted");
}

/// Failover: a service (its enrollment answer named both nodes) and a
/// broker (its domain lists both nodes' URLs) are on node A; A is
/// SIGKILLed; both move to B on their own, and the broker's exec
/// succeeds again within the target (5 s, plus slack), time reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_node_a_dies_its_service_and_broker_move_to_node_b() {
    let (mut tier, _) = Tier::start_with(&["a", "b"], None).await;
    let otp = tier.otp("SN-MOVE").await;
    let (dir, enrolled) = enroll_service(tier.node("a"), &otp, &[]).await;
    enrolled.unwrap();
    let (a_quic, b_quic) = (tier.node("a").quic.clone(), tier.node("b").quic.clone());
    assert_eq!(enrolled_quic(&dir), format!("{a_quic},{b_quic}"));
    let _svc = run_service(dir, "SN-MOVE").await;
    assert_eq!(tier.present_on("SN-MOVE").await, Some(a_quic.clone()));

    let (token, _) = tier.token_on("b").await;
    let broker = tier.broker_knowing(&["a", "b"]).await;
    let mut caller = CloudCaller::start(&broker, &token, "SN-MOVE").await;
    caller.assert_show_version().await;

    tier.nodes
        .iter_mut()
        .find(|n| n.name == "a")
        .unwrap()
        .kill()
        .await;
    let killed_at = Instant::now();
    within(60, "an exec succeeds again after node A died", async {
        while caller.show_version().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let took = killed_at.elapsed();
    eprintln!("exec through node B {took:?} after node A was SIGKILLed");
    caller.assert_show_version().await;
    assert_eq!(tier.present_on("SN-MOVE").await, Some(b_quic));
    let bound = Duration::from_secs(5) + SLACK;
    assert!(took <= bound, "{took:?} (target 5 s + slack)");
}

/// Starts alice's SSO login on `session`: its events and the prompt
/// (the first event).
async fn sso_prompt(
    client: &mut common::cloud::Client,
    session: &str,
) -> (tonic::Streaming<pb::SsoLoginEvent>, pb::SsoPrompt) {
    let mut events = client
        .sso_login(pb::SsoLoginRequest {
            session_id: session.into(),
            identity: ALICE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let event = within(10, "prompt", events.message()).await.unwrap();
    let Some(pb::sso_login_event::Event::Prompt(prompt)) = event.unwrap().event else {
        panic!("expected a prompt first");
    };
    (events, prompt)
}

/// Waits (30 s) for the login's next event and checks it is the login.
async fn logged_in(events: &mut tonic::Streaming<pb::SsoLoginEvent>) {
    let event = within(30, "login", events.message()).await;
    let Some(pb::sso_login_event::Event::LoggedIn(_)) = event.unwrap().unwrap().event else {
        panic!("expected the login");
    };
}

/// A broker's SSO login survives its node dying mid-approval: the broker
/// (its domain lists A and B) starts the login on A; A is SIGKILLed
/// before the person approves; they approve on B's page; the broker's
/// polling moves to B (the grant is in the shared database) and the
/// login completes; an exec through it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_login_whose_node_dies_mid_approval_finishes_through_another() {
    let (mut tier, _) = Tier::start_with(&["a", "b"], None).await;
    let _svc = tier.service("SN-SSO", "b", "b").await;
    let broker = tier.broker_knowing(&["a", "b"]).await;
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let (mut events, prompt) = sso_prompt(&mut client, &session).await;
    assert!(
        prompt.verification_uri.starts_with(&tier.node("a").url),
        "the login starts on A: {}",
        prompt.verification_uri
    );
    tier.nodes
        .iter_mut()
        .find(|n| n.name == "a")
        .unwrap()
        .kill()
        .await;
    let b = tier.node("b");
    let page = decide_at(
        &b.url,
        &b.ca_file(),
        &prompt.user_code,
        ALICE,
        "alice-password",
        true,
    )
    .await;
    assert!(page.contains("Approved"), "approved on B: {page}");
    logged_in(&mut events).await;
    let service = cloud_service(&mut client, &session, "SN-SSO", Some(15.0)).await;
    assert_show_version(&mut client, &session, &service).await;
}

/// The expiry of the broker's one login's access token (status).
async fn login_expiry(broker: &TestBroker) -> u64 {
    let s = status(broker).await;
    assert_eq!(s.logins.len(), 1, "{:?}", s.logins);
    s.logins[0].expires_unix
}

/// A login outlives the node it was made through. A broker whose domain
/// lists nodes A and B logs in with SSO through A (access tokens live
/// 6 s, refreshed a second before expiry); A is SIGKILLed a second or two
/// before the next refresh is due, so the token expires while A is gone.
/// The refresh reaches B, the next exec succeeds through B, and so does a
/// new `connect cloud` on the same login; times reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_login_node_dies_refresh_and_new_links_go_through_another() {
    let (mut tier, _) =
        Tier::start_with_args(&["a", "b"], None, &["--access-token-lifetime", "6s"]).await;
    let _svc = tier.service("SN-LOGIN", "b", "b").await;
    let broker = tier.broker_knowing(&["a", "b"]).await;
    let mut client = broker.client().await;
    let (session, _attach) = open_attached(&mut client).await;
    let (mut events, prompt) = sso_prompt(&mut client, &session).await;
    let a = tier.node("a");
    assert!(
        prompt.verification_uri.starts_with(&a.url),
        "the login starts on A: {}",
        prompt.verification_uri
    );
    let page = decide_at(
        &a.url,
        &a.ca_file(),
        &prompt.user_code,
        ALICE,
        "alice-password",
        true,
    )
    .await;
    assert!(page.contains("Approved"), "{page}");
    logged_in(&mut events).await;
    let service = cloud_service(&mut client, &session, "SN-LOGIN", Some(15.0)).await;
    assert_show_version(&mut client, &session, &service).await;

    // Wait for the moment 1-2 s before the token's expiry (its refresh is
    // due about a second before it), then kill A.
    let expiry = within(30, "a moment before a refresh", async {
        loop {
            let expiry = login_expiry(&broker).await;
            if unix_now() + 2 == expiry {
                return expiry;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tier.nodes
        .iter_mut()
        .find(|n| n.name == "a")
        .unwrap()
        .kill()
        .await;
    let killed_at = Instant::now();
    within(30, "the token refreshed through node B", async {
        while login_expiry(&broker).await <= expiry {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let refreshed = killed_at.elapsed();
    within(60, "an exec succeeds again after node A died", async {
        while show_version(&mut client, &session, &service).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let exec = killed_at.elapsed();
    let out = within(
        30,
        "connect cloud",
        broker
            .command()
            .args(["connect", "cloud", "again", "--serial", "SN-LOGIN"])
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = within(
        30,
        "exec on the new link",
        broker
            .command()
            .args(["exec", "again", "core-1", "-c", "show clock"])
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("UTC"));
    let connect = killed_at.elapsed();
    eprintln!(
        "after node A (the login's node) was SIGKILLed: token refreshed through B at {refreshed:?}, \
         exec at {exec:?}, new connect cloud + exec done at {connect:?}"
    );
    let bound = Duration::from_secs(5) + SLACK;
    assert!(exec <= bound, "{exec:?} (target 5 s + slack)");
}

impl Tier {
    /// `sql` in the tier's database (psql, tuples only).
    fn sql(&self, sql: &str) -> String {
        let name = self
            .database
            .split('/')
            .nth(3)
            .and_then(|rest| rest.split('?').next())
            .unwrap();
        self.cluster.psql(name, sql)
    }

    /// How many node certificates are recorded for node id `id`.
    fn node_certs(&self, id: &str) -> usize {
        self.sql(&format!(
            "SELECT count(*) FROM certs WHERE kind = 'node' AND subject = '{id}'"
        ))
        .trim()
        .parse()
        .unwrap()
    }

    /// The id of the node listening at `quic` (from the presence table).
    async fn node_id_at(&self, quic: &str) -> String {
        within(10, "the node's first heartbeat", async {
            loop {
                let nodes = self.admin.nodes().await.unwrap();
                if let Some(n) = nodes.into_iter().find(|n| n.quic == quic) {
                    return n.id;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }
}

/// Node certificates do not pile up: each start makes a new node id and
/// certificate, and the certificate of a node dead longer than the
/// presence table's forget bound (60 s; aged here by hand) is deleted
/// with its row by the live nodes' heartbeats; a certificate younger than
/// that with no row yet (a node starting) is kept. A live node the others
/// forgot (its row and certificate deleted, as after a long stall) records
/// its certificate again with its next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_of_long_dead_nodes_are_deleted() {
    let (mut tier, _) = Tier::start_with(&["a", "b"], None).await;
    let a_id = tier.node_id_at(&tier.node("a").quic).await;
    let b_id = tier.node_id_at(&tier.node("b").quic).await;
    assert_eq!((tier.node_certs(&a_id), tier.node_certs(&b_id)), (1, 1));
    tier.sql(
        "INSERT INTO certs (fingerprint, kind, subject, created_at) \
         VALUES ('\\x01', 'node', 'node-starting', extract(epoch from now())::bigint)",
    );

    tier.nodes
        .iter_mut()
        .find(|n| n.name == "a")
        .unwrap()
        .kill()
        .await;
    tier.sql(&format!(
        "UPDATE relay_nodes SET heartbeat_at = now() - interval '2 minutes' WHERE id = '{a_id}'; \
         UPDATE certs SET created_at = created_at - 120 WHERE subject = '{a_id}'"
    ));
    within(10, "node A's certificate deleted", async {
        while tier.node_certs(&a_id) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(tier.node_certs(&b_id), 1, "a live node's certificate stays");
    assert_eq!(tier.node_certs("node-starting"), 1, "a young one stays");

    tier.sql(&format!(
        "DELETE FROM relay_nodes WHERE id = '{b_id}'; DELETE FROM certs WHERE subject = '{b_id}'"
    ));
    within(10, "node B's certificate recorded again", async {
        while tier.node_certs(&b_id) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

impl Tier {
    /// Node `name`'s OAuth endpoints, as a device-login client sees them.
    fn oauth(&self, name: &str) -> OauthAt {
        let node = self.node(name);
        OauthAt::new(&node.url, &node.ca_file())
    }

    /// Device grants stored now (psql), those with `user_code` if given.
    fn grant_rows(&self, user_code: Option<&str>) -> usize {
        let filter = user_code.map_or(String::new(), |c| format!(" WHERE user_code = '{c}'"));
        self.sql(&format!("SELECT count(*) FROM device_grants{filter}"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// Polls `node` at the protocol's pace (the 1 s interval every test node
/// has, 5 s longer after each `slow_down`, RFC 8628 §3.5) until it answers
/// something other than pending, for at most 30 s.
async fn poll_until_decided(node: &OauthAt, device_code: &str) -> (u16, serde_json::Value) {
    within(30, "the device login is decided", async {
        let mut interval = Duration::from_millis(1100);
        loop {
            tokio::time::sleep(interval).await;
            let (status, body) = node.poll(device_code).await;
            match body["error"].as_str() {
                Some("authorization_pending") => {}
                Some("slow_down") => interval += Duration::from_secs(5),
                _ => return (status, body),
            }
        }
    })
    .await
}

/// A device login (RFC 8628) finishes on any node: started on node A (its
/// grant pending on C too), A's approval page opened, then A SIGKILLed
/// mid-approval; the person approves through B and the client's polling
/// through C gets the tokens, which B refreshes; the grant is redeemed
/// once (a second poll is refused) and its row is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_started_on_a_finishes_through_b_and_c_after_a_dies() {
    let mut tier = Tier::start().await;
    let (b, c) = (tier.oauth("b"), tier.oauth("c"));
    let grant = tier.oauth("a").start_device_login(ALICE).await;
    let device_code = grant["device_code"].as_str().unwrap().to_string();
    let user_code = grant["user_code"].as_str().unwrap().to_string();
    assert_eq!(grant["interval"], 1, "{grant}");
    let (status, body) = c.poll(&device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending")),
        "C knows A's grant: {body}"
    );
    let page = tier.oauth("a").device_page(&user_code).await;
    assert!(page.contains(ALICE), "A's page names the login: {page}");
    assert!(
        !tier
            .sql("SELECT encode(device_hash, 'hex') FROM device_grants")
            .contains(&device_code),
        "the device code is stored only hashed"
    );

    tier.nodes
        .iter_mut()
        .find(|n| n.name == "a")
        .unwrap()
        .kill()
        .await;
    let page = b.device_page(&user_code).await;
    assert!(page.contains(ALICE), "B's page names the login: {page}");
    let page = decide_at(
        &b.url,
        &tier.node("b").ca_file(),
        &user_code,
        ALICE,
        "alice-password",
        true,
    )
    .await;
    assert!(page.contains("Approved"), "approved through B: {page}");

    let (status, tokens) = poll_until_decided(&c, &device_code).await;
    assert_eq!(status, 200, "redeemed through C: {tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert!(tokens["access_token"].as_str().is_some(), "{tokens}");
    let (status, refreshed) = b.refresh(refresh).await;
    assert_eq!(status, 200, "B honours the tokens C issued: {refreshed}");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, again) = b.poll(&device_code).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant")),
        "redeemed once: {again}"
    );
    assert_eq!(tier.grant_rows(None), 0);
}

/// A user code is single-use across nodes: approvals submitted through B
/// and C at once are held at the database (the test locks the grant's
/// row) until both wait, then released together; exactly one approves,
/// the other is told the code was already used (two rounds). An expired
/// grant (aged by hand) cannot be approved, its poll says so once and
/// deletes it; a grant expired longer than `EXPIRED_KEPT` is deleted by
/// the next start on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_code_is_approved_once_across_nodes_and_expired_grants_are_deleted() {
    use switchyard::relay::device_flow::EXPIRED_KEPT;
    let tier = Tier::start_with(&["b", "c"], None).await.0;
    let (b, c) = (tier.oauth("b"), tier.oauth("c"));
    let (mut gate, conn) = tokio_postgres::connect(&tier.database, tokio_postgres::NoTls)
        .await
        .unwrap();
    let _driver = switchyard::task::AbortOnDrop::new(tokio::spawn(conn));
    let approve_at = |name: &str, user_code: String| {
        let node = tier.node(name);
        let (url, ca) = (node.url.clone(), node.ca_file());
        async move { decide_at(&url, &ca, &user_code, ALICE, "alice-password", true).await }
    };
    for round in 0..2 {
        let grant = b.start_device_login(ALICE).await;
        let user_code = grant["user_code"].as_str().unwrap().to_string();
        // The gate holds the grant's row: an approval that locks the row
        // to read it waits here, and so does one that read it unlocked
        // and then writes (which would then approve twice).
        let lock = gate.transaction().await.unwrap();
        lock.execute(
            "SELECT 1 FROM device_grants WHERE user_code = $1 FOR UPDATE",
            &[&user_code],
        )
        .await
        .unwrap();
        let both = async {
            tokio::join!(
                approve_at("b", user_code.clone()),
                approve_at("c", user_code.clone())
            )
        };
        let release = commit_once_two_wait(
            lock,
            "both approvals wait at the database",
            "SELECT count(*) FROM pg_locks WHERE NOT granted",
        );
        let ((on_b, on_c), ()) = tokio::join!(both, release);
        let pages = [on_b, on_c];
        let won = pages.iter().filter(|p| p.contains("Approved")).count();
        assert_eq!(won, 1, "round {round}: {pages:?}");
        assert!(
            pages.iter().any(|p| p.contains("already used")),
            "round {round}: {pages:?}"
        );
        let device_code = grant["device_code"].as_str().unwrap();
        let (status, _) = c.poll(device_code).await;
        assert_eq!(status, 200, "round {round}: the approved grant redeems");
    }

    // Expired (aged past its lifetime): refused, told once, deleted.
    let grant = c.start_device_login(ALICE).await;
    let user_code = grant["user_code"].as_str().unwrap().to_string();
    tier.sql(&format!(
        "UPDATE device_grants SET expires_at = expires_at - 601000 WHERE user_code = '{user_code}'"
    ));
    let page = approve_at("b", user_code.clone()).await;
    assert!(page.contains("expired"), "{page}");
    let (status, body) = b.poll(grant["device_code"].as_str().unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("expired_token")),
        "{body}"
    );
    assert_eq!(tier.grant_rows(Some(&user_code)), 0, "told once, deleted");

    // Expired long ago and never polled: the next start deletes it.
    let old = b.start_device_login(ALICE).await;
    let old_code = old["user_code"].as_str().unwrap().to_string();
    let aged = 600_000 + EXPIRED_KEPT.as_millis() as i64 + 1_000;
    tier.sql(&format!(
        "UPDATE device_grants SET expires_at = expires_at - {aged} WHERE user_code = '{old_code}'"
    ));
    assert_eq!(tier.grant_rows(Some(&old_code)), 1);
    c.start_device_login(ALICE).await;
    assert_eq!(tier.grant_rows(Some(&old_code)), 0, "deleted by C's start");
    assert_eq!(tier.grant_rows(None), 1, "only the new grant");
}

/// The median of `samples` (sorted in place).
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Benchmark for the README: exec p50 through two nodes (broker on A,
/// service on B, forwarded) against one node (broker and service on B),
/// alternating one exec each, in one run. With `BENCH_BASE_BIN` (another
/// build's `switchyard`, e.g. main's), a second tier of that build runs
/// interleaved with this one, exec by exec: before/after in one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test relay_tier -- --ignored --nocapture"]
async fn bench_exec_p50_through_two_nodes_vs_one() {
    let rounds: usize = std::env::var("BENCH_ROUNDS").map_or(400, |v| v.parse().unwrap());
    let base = std::env::var("BENCH_BASE_BIN").ok();
    let mut builds = vec![("this build", common::switchyard_bin().to_string())];
    if let Some(base) = base {
        builds.push(("base build", base));
    }
    // Per build: its tier, its service, and (forwarded, local) callers.
    let mut setups = Vec::new();
    for (_, bin) in &builds {
        let (tier, _) = Tier::start_bin(bin, &["a", "b"], None, &[]).await;
        let svc = tier.service("SN-BENCH", "b", "b").await;
        let (token, _) = tier.token_on("b").await;
        let (via_a, two) = tier.caller_on("a", &token, "SN-BENCH").await;
        let (via_b, one) = tier.caller_on("b", &token, "SN-BENCH").await;
        setups.push((tier, svc, [(via_a, two), (via_b, one)]));
    }
    for _ in 0..20 {
        for (_, _, callers) in &mut setups {
            for (_, caller) in callers.iter_mut() {
                caller.assert_show_version().await;
            }
        }
    }
    let mut samples = vec![[Vec::new(), Vec::new()]; setups.len()];
    for _ in 0..rounds {
        for (i, (_, _, callers)) in setups.iter_mut().enumerate() {
            for (k, (_, caller)) in callers.iter_mut().enumerate() {
                let t = Instant::now();
                caller.show_version().await.unwrap();
                samples[i][k].push(t.elapsed());
            }
        }
    }
    for (i, (name, bin)) in builds.iter().enumerate() {
        let [forwarded, local] = &mut samples[i];
        let (f, l) = (median(forwarded), median(local));
        eprintln!(
            "{name} ({bin}): exec p50 over {rounds} rounds: two nodes (forwarded) {f:?}, \
             one node {l:?}, ratio {:.2}",
            f.as_secs_f64() / l.as_secs_f64()
        );
        assert!(
            setups[i]
                .0
                .node("a")
                .log()
                .contains("link to relay node opened")
        );
    }
}

/// Benchmark for the README: the database side of presence at scale.
/// 1,000 simulated services recorded on three nodes (16 at a time, as
/// nodes' pools would), then the 333 of one node moved to the other two
/// (what a killed node's services do when they reconnect), then the tier
/// listed. No QUIC: two cores cannot run 1,000 real services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test relay_tier -- --ignored --nocapture"]
async fn bench_presence_of_1000_services_on_three_nodes() {
    use futures::StreamExt;
    common::init();
    let cluster = PgCluster::start();
    let database = cluster.create_database();
    let work = tempfile::tempdir().unwrap();
    let state = init_tier_state(work.path());
    let db = Database::open(&state, Some(&database)).await.unwrap();
    let nodes = ["sim-a", "sim-b", "sim-c"];
    for node in nodes {
        db.heartbeat(node, "127.0.0.1:1", Default::default())
            .await
            .unwrap();
    }
    let record = |serials: Vec<(String, &'static str)>| {
        let db = &db;
        futures::stream::iter(serials)
            .map(move |(serial, node)| async move { db.set_present(&serial, node).await.unwrap() })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
    };
    let t = Instant::now();
    record(
        (0..1000)
            .map(|i| (format!("SN-{i:04}"), nodes[i % 3]))
            .collect(),
    )
    .await;
    let recorded = t.elapsed();
    let t = Instant::now();
    record(
        (0..1000)
            .filter(|i| i % 3 == 0)
            .map(|i| (format!("SN-{i:04}"), nodes[1 + (i / 3) % 2]))
            .collect(),
    )
    .await;
    let moved = t.elapsed();
    let t = Instant::now();
    let listed = db.nodes().await.unwrap();
    let listing = t.elapsed();
    let on = |id: &str| listed.iter().find(|n| n.id == id).unwrap().serials.len();
    assert_eq!((on("sim-a"), on("sim-b") + on("sim-c")), (0, 1000));
    eprintln!(
        "presence: 1000 services recorded in {recorded:?} ({:.0}/s); node A's 334 moved in {moved:?}; `relay nodes` read in {listing:?}",
        1000.0 / recorded.as_secs_f64()
    );
}

/// (QUIC address, services present) of each live node.
async fn alive_presence(admin: &Database) -> Vec<(String, usize)> {
    admin
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.alive)
        .map(|n| (n.quic, n.serials.len()))
        .collect()
}

/// VmHWM and VmRSS of process `pid`, in KiB (from /proc).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A QUIC connection to the relay node at `addr` that has said `hello`
/// and been welcomed.
async fn hello_to(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: std::net::SocketAddr,
    hello: &switchyard::wire::relay::RelayHello,
) -> Result<quinn::Connection, String> {
    use switchyard::wire::conn::{read_frame, write_frame};
    use switchyard::wire::relay::HelloReply;
    let max = switchyard::wire::conn::TransportLimits::default().max_frame;
    let conn = endpoint
        .connect_with(config, addr, "127.0.0.1")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_frame(&mut send, hello, max)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    match read_frame::<HelloReply>(&mut recv, max).await {
        Ok(Some(HelloReply::Welcome { .. })) => Ok(conn),
        other => Err(format!("{other:?}")),
    }
}

/// A simulated service: only its relay connection (its certificate's
/// hello), to node `first` of `nodes`, moving to the next node when the
/// connection ends or goes silent (the real agent's 2 s liveness bound),
/// at most `gate` connection attempts at once across services.
async fn sim_service(
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    nodes: std::sync::Arc<Vec<std::net::SocketAddr>>,
    first: usize,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
) {
    use switchyard::wire::conn::{Liveness, TransportLimits, watch_liveness};
    let hello = switchyard::wire::relay::RelayHello::Service { advertise: None };
    // The agent's bound by default; SIM_SILENCE (seconds) for a machine
    // too loaded to keep 1,000 connections' keep-alives on time.
    let silence = std::env::var("SIM_SILENCE").map_or(TransportLimits::default().silence, |v| {
        Duration::from_secs(v.parse().unwrap())
    });
    let mut k = first;
    loop {
        let attempt = {
            let _permit = gate.acquire().await.unwrap();
            hello_to(&endpoint, config.clone(), nodes[k % nodes.len()], &hello).await
        };
        match attempt {
            Ok(conn) => {
                let _watch = watch_liveness(conn.clone(), Liveness::always(), silence);
                conn.closed().await;
            }
            Err(e) => {
                if first == 0 {
                    eprintln!("simulated service: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
        k += 1;
    }
}

/// Benchmark for the README: 1,000 enrolled services and 1,000 logged-in
/// brokers on three real relay nodes. The services and brokers are
/// simulated in this process (their relay connections and hellos only:
/// two cores do not run 2,000 real processes): services with their own
/// certificates, brokers with their own access tokens. Reports the
/// presence update rate (services recorded per second until all 1,000
/// are listed), each node's memory (VmHWM / VmRSS, idle and loaded), and
/// how long the services of a SIGKILLed node take to be listed on the
/// other two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test relay_tier -- --ignored --nocapture"]
async fn bench_1000_services_and_1000_brokers_on_three_nodes() {
    use futures::StreamExt;
    use switchyard::task::AbortOnDrop;
    use switchyard::wire::conn::{TransportLimits, client_endpoint, relay_client_config};
    use switchyard::wire::pin::Fingerprint;
    use switchyard::wire::relay::RelayHello;
    #[allow(non_snake_case)]
    let N: usize = std::env::var("SIM_N").map_or(1000, |v| v.parse().unwrap());
    let names = ["a", "b", "c"];
    let (mut tier, _) = Tier::start_with(&names, None).await;
    let keys = switchyard::relay::state::load_keys(&tier.node("a").state).unwrap();
    let nodes: std::sync::Arc<Vec<std::net::SocketAddr>> = std::sync::Arc::new(
        names
            .iter()
            .map(|n| tier.node(n).quic.parse().unwrap())
            .collect(),
    );
    let pids: Vec<u32> = names
        .iter()
        .map(|n| tier.node(n).child.as_ref().unwrap().id().unwrap())
        .collect();
    let idle: Vec<(u64, u64)> = pids.iter().map(|p| memory_kib(*p)).collect();

    let t = Instant::now();
    let mut services = Vec::new();
    for i in 0..N {
        let serial = format!("SIM-{i:04}");
        let (csr, key) = switchyard::tls::new_certificate_request(&serial).unwrap();
        let cert = keys.ca.issue_service(&csr, &serial).unwrap();
        tier.admin
            .record_cert(&Fingerprint::of(&cert).0, "service", &serial)
            .await
            .unwrap();
        services.push((cert, key));
    }
    let mut tokens = Vec::new();
    for _ in 0..N {
        let (_, token) = keys
            .issue_token(&tier.admin, ALICE, "api", unix_now() + 3600)
            .await
            .unwrap();
        tokens.push(token);
    }
    eprintln!(
        "{N} service certificates and {N} tokens issued in {:?}",
        t.elapsed()
    );

    let roots = switchyard::tls::root_store(Some(&tier.node("a").ca_file())).unwrap();
    let limits = TransportLimits::default();
    let endpoint = client_endpoint(nodes[0]).unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let t = Instant::now();
    let _services: Vec<AbortOnDrop<()>> = services
        .iter()
        .enumerate()
        .map(|(i, (cert, key))| {
            let config =
                relay_client_config(roots.clone(), Some((cert.clone(), key.as_slice())), &limits)
                    .unwrap();
            AbortOnDrop::new(tokio::spawn(sim_service(
                endpoint.clone(),
                config,
                nodes.clone(),
                i % 3,
                gate.clone(),
            )))
        })
        .collect();
    within(300, "all services present", async {
        loop {
            let listed = alive_presence(&tier.admin).await;
            if listed.iter().map(|(_, n)| n).sum::<usize>() >= N {
                break;
            }
            if rand::random::<u8>() < 8 {
                eprintln!("present so far: {listed:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let services_up = t.elapsed();

    let t = Instant::now();
    let broker_config = relay_client_config(roots.clone(), None, &limits).unwrap();
    let brokers: Vec<(quinn::Connection, Vec<String>)> =
        futures::stream::iter(tokens.into_iter().enumerate())
            .map(|(i, token)| {
                let (endpoint, config, nodes) = (&endpoint, broker_config.clone(), &nodes);
                async move {
                    let hello = RelayHello::Client { token: Some(token) };
                    let mut failed = Vec::new();
                    loop {
                        match hello_to(endpoint, config.clone(), nodes[i % 3], &hello).await {
                            Ok(conn) => return (conn, failed),
                            Err(e) if failed.len() < 5 => failed.push(e),
                            Err(e) => panic!("broker {i}: {e}; before: {failed:?}"),
                        }
                    }
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
    let brokers_up = t.elapsed();
    assert_eq!(brokers.len(), N);
    let retries: Vec<&String> = brokers.iter().flat_map(|(_, f)| f).collect();
    eprintln!(
        "broker hellos retried: {} (first: {:?})",
        retries.len(),
        retries.first()
    );
    let loaded: Vec<(u64, u64)> = pids.iter().map(|p| memory_kib(*p)).collect();

    tier.nodes
        .iter_mut()
        .find(|n| n.name == "a")
        .unwrap()
        .kill()
        .await;
    let killed_at = Instant::now();
    let a_quic = nodes[0].to_string();
    within(120, "node A's services listed on B and C", async {
        loop {
            let listed = alive_presence(&tier.admin).await;
            let on_a = listed.iter().any(|(q, n)| *q == a_quic && *n > 0);
            if !on_a && listed.iter().map(|(_, n)| n).sum::<usize>() == N {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let moved = killed_at.elapsed();
    let after: Vec<(u64, u64)> = pids[1..].iter().map(|p| memory_kib(*p)).collect();

    eprintln!(
        "{N} services present on 3 nodes after {services_up:?} ({:.0}/s); {N} brokers logged in \
         in {brokers_up:?} ({:.0}/s)",
        N as f64 / services_up.as_secs_f64(),
        N as f64 / brokers_up.as_secs_f64()
    );
    for (i, name) in names.iter().enumerate() {
        let ((_, idle_rss), (hwm, rss)) = (idle[i], loaded[i]);
        eprintln!(
            "node {name}: idle VmRSS {:.1} MiB; with ~{} services + ~{} brokers VmHWM {:.1} MiB, \
             VmRSS {:.1} MiB ({:.1} KiB per connection)",
            idle_rss as f64 / 1024.0,
            N / 3,
            N / 3,
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0,
            (rss.saturating_sub(idle_rss)) as f64 / (2 * N / 3) as f64
        );
    }
    eprintln!(
        "node A SIGKILLed: its services listed on B and C after {moved:?}; then B, C VmHWM \
         {:.1} / {:.1} MiB",
        after[0].0 as f64 / 1024.0,
        after[1].0 as f64 / 1024.0
    );
    drop(brokers);
}

/// Commits `lock` once `waiting` (a count over `pg_locks`) says two
/// sessions wait behind it: both racers are then at the database.
async fn commit_once_two_wait(lock: tokio_postgres::Transaction<'_>, what: &str, waiting: &str) {
    within(30, what, async {
        loop {
            let n: i64 = lock.query_one(waiting, &[]).await.unwrap().get(0);
            if n >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    lock.commit().await.unwrap();
}
