//! A relay tier: three real `switchyard relay run` processes on one
//! PostgreSQL database (a private cluster per test, tests/common/postgres.rs).
//! Tokens and certificates issued by one node are valid on all; a
//! revocation on one node ends sessions on another within the documented
//! bound; a one-time password redeemed at once on two nodes is won by
//! exactly one.

mod common;

use std::time::{Duration, Instant};

use common::broker::{TestBroker, in_session, open_attached, run_exec};
use common::cloud::{ALICE, CloudService};
use common::postgres::{PgCluster, TierNode, enroll_service, init_tier_state, run_service_on};
use common::within;
use switchyard::api::pb;
use switchyard::relay::db::Database;
use switchyard::relay::live::REVOCATION_BOUND;
use switchyard::relay::unix_now;
use switchyard::secret::Secret;

type Client = pb::broker_client::BrokerClient<tonic::transport::Channel>;

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
        common::init();
        let cluster = PgCluster::start();
        let database = cluster.create_database();
        let work = tempfile::tempdir().unwrap();
        let state = init_tier_state(work.path());
        let (a, b, c) = tokio::join!(
            TierNode::start("a", work.path(), &state, &database),
            TierNode::start("b", work.path(), &state, &database),
            TierNode::start("c", work.path(), &state, &database),
        );
        let admin = Database::open(&state, Some(&database)).await.unwrap();
        admin
            .add_user(ALICE, &Secret::new("alice-password"))
            .await
            .unwrap();
        Self {
            work,
            cluster,
            database,

            nodes: vec![a, b, c],
            admin,
        }
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

    /// A broker whose default domain is `node`.
    async fn broker_on(&self, node: &str) -> TestBroker {
        let config = self.node(node).broker_config(self.work.path());
        TestBroker::start_with(&[], &["--config", config.to_str().unwrap()])
            .await
            .0
    }
}

/// A caller on an attached session of `broker`, logged in with `token`.
async fn token_session(
    broker: &TestBroker,
    token: &str,
) -> (Client, String, tonic::Streaming<pb::SessionEvent>) {
    let mut client = broker.client().await;
    let (session, attach) = open_attached(&mut client).await;
    client
        .access_token_login(pb::AccessTokenLoginRequest {
            session_id: session.clone(),
            token: token.into(),
            relay: None,
        })
        .await
        .unwrap();
    (client, session, attach)
}

/// `serial` through the broker's relay node, once reachable.
async fn cloud_service(client: &mut Client, session: &str, serial: &str) -> String {
    let service = client
        .service_cloud(pb::ServiceCloudRequest {
            session_id: session.into(),
            serial: serial.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .service_id;
    within(
        20,
        "service reachable",
        client.wait(pb::WaitRequest {
            service: in_session(session, &service),
            timeout_secs: 15.0,
        }),
    )
    .await
    .unwrap();
    service
}

/// `show version` on core-1 through `service`.
async fn show_version(
    client: &mut Client,
    session: &str,
    service: &str,
) -> Result<String, tonic::Status> {
    let out = run_exec(
        client,
        in_session(session, service),
        &["core-1"],
        &["show version"],
    )
    .await?;
    let text = out[0].ok_output();
    assert!(text.contains("Simulated Network OS"), "{text}");
    Ok(text)
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
    let broker = tier.broker_on("b").await;
    let (mut client, session, _attach) = token_session(&broker, &token).await;
    let service = cloud_service(&mut client, &session, "SN-TIER").await;
    show_version(&mut client, &session, &service)
        .await
        .expect("an exec through node B");

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
    let otp = tier.otp("SN-REV").await;
    let (dir, enrolled) = enroll_service(tier.node("a"), &otp, &[]).await;
    enrolled.unwrap();
    let _svc = run_service_on(dir, "SN-REV", tier.node("a")).await;
    let (token, id) = tier.token_on("a").await;
    let broker = tier.broker_on("a").await;
    let (mut client, session, _attach) = token_session(&broker, &token).await;
    let service = cloud_service(&mut client, &session, "SN-REV").await;
    show_version(&mut client, &session, &service).await.unwrap();

    let (out, _) = tier.admin_command_on("c", &["token", "revoke", &id]).await;
    assert!(out.contains("revoked"), "{out}");
    let revoked_at = Instant::now();
    let bound = REVOCATION_BOUND + SLACK;
    within(
        bound.as_secs() + 10,
        "an exec on node A fails saying revoked",
        async {
            loop {
                match show_version(&mut client, &session, &service).await {
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
/// both requests are held at the database (the test locks the table) until
/// both wait, then released together. Exactly one enrolls; the other is
/// told the password was already used. Three rounds.
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
        lock.batch_execute("LOCK TABLE otps IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        let both = async {
            tokio::join!(
                enroll_service(tier.node("a"), &otp, &[]),
                enroll_service(tier.node("b"), &otp, &[]),
            )
        };
        let release = async {
            within(30, "both redemptions wait at the database", async {
                loop {
                    let waiting: i64 = lock
                        .query_one(
                            "SELECT count(*) FROM pg_locks \
                             WHERE NOT granted AND relation = 'otps'::regclass",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    if waiting >= 2 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            lock.commit().await.unwrap();
        };
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
    let otp = tier.otp("SN-HERE").await;
    let (dir, enrolled) = enroll_service(tier.node("a"), &otp, &[]).await;
    enrolled.unwrap();
    let svc = run_service_on(dir, "SN-HERE", tier.node("a")).await;
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
