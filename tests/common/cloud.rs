//! The cloud in tests: a real relay (its actors in this process, on
//! loopback port 0), services enrolled with it over its real HTTPS
//! endpoint, and broker configs that name it.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use switchyard::relay::device_flow::DeviceFlowConfig;
use switchyard::relay::{Relay, RelayConfig, state};
use switchyard::secret::Secret;
use switchyard::service::drivers::Drivers;
use switchyard::service::drivers::ssh::SshDriverConfig;
use switchyard::service::enroll::{EnrollOptions, enroll};
use switchyard::service::inventory::{DeviceScope, Inventory, NewDevice, NewRemoteUser};
use switchyard::service::ops::ServiceOps;
use switchyard::service::relay_agent::RelayAgent;
use switchyard::service::rpc::{RpcConfig, RpcServer};
use tokio::sync::mpsc;

use super::service::{ADMIN_PASSWORD, make_inventory};
use super::within;

pub const ALICE: &str = "alice@example.com";
pub const ALICE_SSO_PASSWORD: &str = "alice-sso-password";
pub const CAROL: &str = "carol@example.com";
/// A second ordinary relay user, who wants what is alice's (added by
/// [`TestRelay::add_user`] where a test needs him).
pub const MALLORY: &str = "mallory@example.com";

pub struct TestRelay {
    pub dir: tempfile::TempDir,
    pub relay: Option<Relay>,
    config: RelayConfig,
}

impl TestRelay {
    /// A relay with users alice and carol (carol is not a remote user of
    /// the test services).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut RelayConfig)) -> Self {
        super::init();
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("relay");
        state::init(&state_dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let loaded = state::load(&state_dir).unwrap();
        loaded
            .store
            .add_user(ALICE, &Secret::new(ALICE_SSO_PASSWORD))
            .unwrap();
        loaded
            .store
            .add_user(CAROL, &Secret::new("carol-password"))
            .unwrap();
        drop(loaded);
        let mut config = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            device_flow: DeviceFlowConfig {
                interval: Duration::from_secs(1),
                ..Default::default()
            },
            ..Default::default()
        };
        adjust(&mut config);
        let relay = Relay::start(state::load(&state_dir).unwrap(), config.clone())
            .await
            .unwrap();
        // Restarts come back on the same ports.
        config.listen = relay.quic_addr();
        config.http_listen = relay.http_addr();
        Self {
            dir,
            relay: Some(relay),
            config,
        }
    }

    /// Records every byte the relay forwards through tunnels.
    /// A relay (adjusted by `adjust`) that copies what it forwards to the
    /// returned receiver.
    pub async fn start_tapped_with(
        adjust: impl FnOnce(&mut RelayConfig),
    ) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(1 << 20);
        let relay = Self::start_with(|c| {
            c.tap = Some(tx);
            adjust(c);
        })
        .await;
        (relay, rx)
    }

    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("relay running")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.config.http_listen.port())
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("relay")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.state_dir().join("ca.pem")
    }

    pub async fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.shutdown().await;
        }
    }

    /// Stops and starts the relay on the same ports. The old sockets are
    /// released when `stop` returns, but the kernel may take a moment to
    /// let a UDP port go after quinn's driver drops it: bounded retries.
    pub async fn restart(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Relay::start(state::load(&self.state_dir()).unwrap(), self.config.clone()).await {
                Ok(relay) => {
                    self.relay = Some(relay);
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("relay restart: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("relay restart: {e}"),
            }
        }
    }

    /// An access token for `email` expiring at unix time `exp` (what
    /// `switchyard relay token issue` does), and its id.
    pub fn token_until(&self, email: &str, exp: u64) -> (String, String) {
        let state = state::load(&self.state_dir()).unwrap();
        let (claims, token) = state.issue_api_token(email, exp).unwrap();
        (token, claims.jti)
    }

    pub fn token(&self, email: &str) -> String {
        self.token_until(email, switchyard::relay::unix_now() + 3600)
            .0
    }

    pub fn revoke(&self, id: &str) {
        state::load(&self.state_dir())
            .unwrap()
            .store
            .revoke_token(id)
            .unwrap();
    }

    /// An enrollment one-time password for `serial`, expiring at `exp`.
    pub fn otp_until(&self, serial: &str, exp: u64) -> String {
        self.otp_by(serial, ALICE, exp)
    }

    /// An enrollment one-time password for `serial` minted by `created_by`
    /// (who will own the serial), expiring at `exp`.
    pub fn otp_by(&self, serial: &str, created_by: &str, exp: u64) -> String {
        let otp = format!("otp-{}", rand_hex());
        self.admin()
            .store
            .add_otp(&Secret::new(otp.as_str()), serial, created_by, exp)
            .unwrap();
        otp
    }

    /// The relay's state as an administrator's command opens it (its own
    /// database connection, like `switchyard relay ...`).
    pub fn admin(&self) -> state::RelayState {
        state::load(&self.state_dir()).unwrap()
    }

    /// Adds a relay user (`switchyard relay user add`).
    pub fn add_user(&self, email: &str, password: &str) {
        self.admin()
            .store
            .add_user(email, &Secret::new(password))
            .unwrap();
    }

    /// Disables a relay user (`switchyard relay user disable`).
    pub fn disable(&self, email: &str) {
        self.admin().store.set_user_enabled(email, false).unwrap();
    }

    /// Runs `switchyard relay --state DIR ARGS...` (the real binary) and
    /// returns its stdout; fails the test if it fails.
    pub async fn admin_command(&self, args: &[&str]) -> String {
        let out = within(
            30,
            "relay admin command",
            tokio::process::Command::new(super::switchyard_bin())
                .arg("relay")
                .arg("--state")
                .arg(self.state_dir())
                .args(args)
                .output(),
        )
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "switchyard relay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn otp(&self, serial: &str) -> String {
        self.otp_until(serial, switchyard::relay::unix_now() + 600)
    }

    /// A broker config file naming this relay as the default domain `test`.
    pub fn broker_config(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join(format!("broker-{}.toml", rand_hex()));
        std::fs::write(
            &path,
            format!(
                "[domains.test]\nurl = \"{}\"\nca_file = \"{}\"\ndefault = true\n",
                self.url(),
                self.ca_file().display()
            ),
        )
        .unwrap();
        path
    }

    /// Approves (or denies) a pending SSO login on the relay's page, as a
    /// person would submit the form.
    pub async fn decide(
        &self,
        user_code: &str,
        email: &str,
        password: &str,
        approve: bool,
    ) -> String {
        let roots = switchyard::tls::root_store(Some(&self.ca_file())).unwrap();
        let http = switchyard::tls::http_client(roots).unwrap();
        let response = http
            .post(format!("{}/device", self.url()))
            .form(&[
                ("user_code", user_code),
                ("email", email),
                ("password", password),
                ("decision", if approve { "approve" } else { "deny" }),
            ])
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A service (in this process) enrolled with the relay as `serial`, running
/// its RPC socket and its relay agent.
pub struct CloudService {
    pub dir: tempfile::TempDir,
    pub serial: String,
    pub server: Option<RpcServer>,
    pub agent: Option<RelayAgent>,
}

impl CloudService {
    /// Enrolls (over the relay's HTTPS API) and starts. Alice's cloud
    /// identity may reach `core-*`.
    pub async fn start(relay: &TestRelay, serial: &str, extra: &[NewDevice]) -> Self {
        Self::start_with_otp(relay, serial, &relay.otp(serial), extra)
            .await
            .unwrap()
    }

    /// Enrolls with `otp` (which must name `serial`) and starts; the
    /// relay's refusal as an error.
    pub async fn start_with_otp(
        relay: &TestRelay,
        serial: &str,
        otp: &str,
        extra: &[NewDevice],
    ) -> Result<Self, switchyard::service::enroll::EnrollError> {
        super::init();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("inv.db");
        let mut inv = make_inventory(&db, extra);
        inv.add_user(&NewRemoteUser {
            name: ALICE.into(),
            password: None,
            devices: DeviceScope::parse("core-*,slow-*").unwrap(),
            enabled: true,
            cloud: true,
        })
        .unwrap();
        let roots = switchyard::tls::root_store(Some(&relay.ca_file())).unwrap();
        let enrolled = enroll(
            &mut inv,
            EnrollOptions {
                relay_url: relay.url(),
                otp: Secret::new(otp),
                roots,
                advertise: None,
            },
        )
        .await?;
        assert_eq!(enrolled, serial);
        drop(inv);
        let mut svc = Self {
            dir,
            serial: serial.into(),
            server: None,
            agent: None,
        };
        svc.run();
        within(10, "service online at the relay", async {
            assert!(
                svc.agent
                    .as_ref()
                    .unwrap()
                    .wait_online(Duration::from_secs(10))
                    .await
            );
        })
        .await;
        Ok(svc)
    }

    /// The SHA-256 fingerprint of the service's own TLS identity (what
    /// the relay publishes as its end-to-end pin).
    pub fn fingerprint(&self) -> [u8; 32] {
        let inv = Inventory::open(
            &self.dir.path().join("inv.db"),
            &Secret::new(ADMIN_PASSWORD),
        )
        .unwrap();
        switchyard::wire::pin::Fingerprint::of(&inv.tls_identity().unwrap().cert_der).0
    }

    /// Whether the relay agent is connected now.
    /// The relay agent's state now.
    pub fn agent_state(&self) -> switchyard::service::relay_agent::AgentState {
        self.agent.as_ref().unwrap().state()
    }

    pub fn online(&self) -> bool {
        self.agent.as_ref().unwrap().state() == switchyard::service::relay_agent::AgentState::Online
    }

    /// Starts the RPC socket and the relay agent (again).
    pub fn run(&mut self) {
        let inv = Inventory::open(
            &self.dir.path().join("inv.db"),
            &Secret::new(ADMIN_PASSWORD),
        )
        .unwrap();
        let identity = inv.tls_identity().unwrap();
        let enrollment = inv.relay_enrollment().unwrap().expect("enrolled");
        let ops = ServiceOps::new(
            "cloud-service",
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
        let agent =
            RelayAgent::start(enrollment, server.tunnel_acceptor(), Default::default()).unwrap();
        self.server = Some(server);
        self.agent = Some(agent);
    }

    pub fn rpc_addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    /// Stops the service (relay connection and RPC socket).
    pub async fn stop(&mut self) {
        self.agent = None;
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::ZERO).await;
        }
    }
}
