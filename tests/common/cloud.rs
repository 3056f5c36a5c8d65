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
use switchyard::transport_policy::TransportPolicy;
use tokio::sync::mpsc;

use switchyard::api::pb;

use super::broker::{TestBroker, in_session, open_attached, run_exec};
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
    /// The relay's actors, when it runs in this process.
    pub relay: Option<Relay>,
    config: RelayConfig,
    /// The relay as a real `switchyard relay run` process instead
    /// ([`TestRelay::start_process`]).
    process: Option<RelayProcess>,
}

/// A `switchyard relay run` child process and how it was started.
struct RelayProcess {
    child: Option<tokio::process::Child>,
    /// Extra `relay run` arguments (limits).
    args: Vec<String>,
    /// What the command runs through (e.g. `ip netns exec NS`).
    prefix: Vec<String>,
}

impl TestRelay {
    /// A relay with users alice and carol (carol is not a remote user of
    /// the test services).
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A relay state directory (`relay init`) with users alice and carol.
    fn init_state() -> (tempfile::TempDir, PathBuf) {
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
        (dir, state_dir)
    }

    pub async fn start_with(adjust: impl FnOnce(&mut RelayConfig)) -> Self {
        let (dir, state_dir) = Self::init_state();
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
            process: None,
        }
    }

    /// The relay as a real `switchyard relay run` process (SIGKILL-able,
    /// restartable on the same ports), with users alice and carol, a 1 s
    /// poll interval and `args` added to `relay run`. `relay()` is not
    /// available; `pid()` and `log()` are.
    pub async fn start_process(args: &[&str]) -> Self {
        Self::start_process_via(&[], args).await
    }

    /// As [`Self::start_process`], run through `prefix` (e.g. `ip netns
    /// exec NS`).
    pub async fn start_process_via(prefix: &[&str], args: &[&str]) -> Self {
        let (dir, _) = Self::init_state();
        let mut config = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        config.packet_listen = Some("127.0.0.1:0".parse().unwrap());
        let mut relay = Self {
            dir,
            relay: None,
            config,
            process: Some(RelayProcess {
                child: None,
                args: args.iter().map(|a| a.to_string()).collect(),
                prefix: prefix.iter().map(|a| a.to_string()).collect(),
            }),
        };
        relay.spawn().await;
        relay
    }

    /// Starts the relay process on the ports of the last start (any at
    /// first) and returns once it serves. A port the killed process held
    /// may take a moment to be free: bounded retries.
    async fn spawn(&mut self) {
        let ready = self.dir.path().join("relay-ready.json");
        let packets = self.config.packet_listen.expect("a packet port");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let (child, doc) = loop {
            let _ = std::fs::remove_file(&ready);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("relay.log"))
                .unwrap();
            let process = self.process.as_ref().expect("a relay process");
            let mut command = match process.prefix.split_first() {
                Some((first, rest)) => {
                    let mut command = tokio::process::Command::new(first);
                    command.args(rest).arg(super::switchyard_bin());
                    command
                }
                None => tokio::process::Command::new(super::switchyard_bin()),
            };
            let mut child = command
                .args(["relay", "--state"])
                .arg(self.state_dir())
                .arg("run")
                .args(["--listen", &self.config.listen.to_string()])
                .args(["--http-listen", &self.config.http_listen.to_string()])
                .args(["--packet-listen", &packets.to_string()])
                .args(["--poll-interval", "1", "--ready-file"])
                .arg(&ready)
                .args(&process.args)
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("start the relay");
            let exited = loop {
                if ready.exists() {
                    break None;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the relay did not start:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            match exited {
                None => {
                    let doc: serde_json::Value =
                        serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
                    break (child, doc);
                }
                Some(status) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the relay exited ({status}):\n{}",
                        self.log()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let url: url::Url = doc["url"].as_str().unwrap().parse().unwrap();
        self.config.http_listen.set_port(url.port().unwrap());
        self.config.listen = doc["quic"].as_str().unwrap().parse().unwrap();
        self.config.packet_listen = Some(doc["packets"].as_str().unwrap().parse().unwrap());
        self.process.as_mut().unwrap().child = Some(child);
    }

    /// The relay process's id (`start_process`).
    pub fn pid(&self) -> u32 {
        self.process
            .as_ref()
            .and_then(|p| p.child.as_ref())
            .and_then(|c| c.id())
            .expect("a running relay process")
    }

    /// What the relay process logged (every start, appended).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// SIGKILL of the relay process: no goodbye to anyone; returns once
    /// it is gone.
    pub async fn kill(&mut self) {
        let mut child = self
            .process
            .as_mut()
            .and_then(|p| p.child.take())
            .expect("a running relay process");
        child.start_kill().unwrap();
        within(10, "the killed relay to exit", child.wait())
            .await
            .unwrap();
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

    /// The HTTPS listener's address (in process or as a process).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.config.http_listen
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
        if self.process.is_some() {
            if self.process.as_ref().is_some_and(|p| p.child.is_some()) {
                self.kill().await;
            }
            return self.spawn().await;
        }
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
        broker_config_at(dir, &[&self.url()], &self.ca_file())
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
        decide_at(
            &self.url(),
            &self.ca_file(),
            user_code,
            email,
            password,
            approve,
        )
        .await
    }
}

/// Approves (or denies) a pending SSO login on the page of the relay at
/// `url` (trusting `ca_file`), as a person would submit the form.
pub async fn decide_at(
    url: &str,
    ca_file: &std::path::Path,
    user_code: &str,
    email: &str,
    password: &str,
    approve: bool,
) -> String {
    let roots = switchyard::tls::root_store(Some(ca_file)).unwrap();
    let http = switchyard::tls::http_client(roots).unwrap();
    let response = http
        .post(format!("{url}/device"))
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

/// The OAuth endpoints of the relay (node) at `url`, as a device-login
/// client uses them over HTTPS (trusting `ca_file`).
pub struct OauthAt {
    pub url: String,
    http: reqwest::Client,
}

impl OauthAt {
    pub fn new(url: &str, ca_file: &std::path::Path) -> Self {
        let roots = switchyard::tls::root_store(Some(ca_file)).unwrap();
        Self {
            url: url.to_string(),
            http: switchyard::tls::http_client(roots).unwrap(),
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Starts a device login for `hint` (RFC 8628 §3.1); the relay's
    /// answer (device_code, user_code, ...).
    pub async fn start_device_login(&self, hint: &str) -> serde_json::Value {
        let (status, body) = self
            .post(
                "/oauth/device_authorization",
                &[("client_id", "switchyard"), ("login_hint", hint)],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// One poll (RFC 8628 §3.4): HTTP status and body.
    pub async fn poll(&self, device_code: &str) -> (u16, serde_json::Value) {
        self.post(
            "/oauth/token",
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
            ],
        )
        .await
    }

    /// A refresh (RFC 6749 §6): HTTP status and body.
    pub async fn refresh(&self, refresh_token: &str) -> (u16, serde_json::Value) {
        self.post(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// The approval page for `user_code` (as a person opens it).
    pub async fn device_page(&self, user_code: &str) -> String {
        self.http
            .get(format!("{}/device?user_code={user_code}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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
    /// How its relay agent reaches the relay (QUIC, TCP, or both raced).
    pub transport: TransportPolicy,
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
        Self::start_over(relay, serial, otp, extra, TransportPolicy::default()).await
    }

    /// As [`Self::start_with_otp`], its relay agent reaching the relay as
    /// `transport` says.
    pub async fn start_over(
        relay: &TestRelay,
        serial: &str,
        otp: &str,
        extra: &[NewDevice],
        transport: TransportPolicy,
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
            transport,
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
        let agent = RelayAgent::start(
            enrollment,
            server.tunnel_acceptor(),
            Default::default(),
            self.transport,
        )
        .unwrap();
        self.server = Some(server);
        self.agent = Some(agent);
    }

    pub fn rpc_addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    /// Stops the service as `service run` does on SIGTERM: goodbye to the
    /// relay, RPC socket shut, relay connection closed.
    pub async fn stop(&mut self) {
        let departed = match self.agent.take() {
            Some(agent) => Some(agent.leave().await),
            None => None,
        };
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::ZERO).await;
        }
        if let Some(departed) = departed {
            departed.close().await;
        }
    }
}

// ---------------------------------------------------------------------
// Broker-side helpers for the cloud tests (tests/cloud.rs,
// tests/relay_security.rs, tests/faults.rs).

/// A broker API client.
pub type Client = pb::broker_client::BrokerClient<tonic::transport::Channel>;

/// A broker process naming `relay` as its default domain.
pub async fn broker_for(relay: &TestRelay) -> TestBroker {
    broker_for_with(relay, &[]).await
}

/// A broker for `relay`, with extra environment (config overrides).
pub async fn broker_for_with(relay: &TestRelay, env: &[(&str, &str)]) -> TestBroker {
    broker_at(relay.dir.path(), &[&relay.url()], &relay.ca_file(), env).await
}

/// A broker config file in `dir` whose default domain `test` is the relay
/// node(s) at `urls` (one relay or a tier's nodes, tried in that order),
/// trusting `ca_file`.
pub fn broker_config_at(
    dir: &std::path::Path,
    urls: &[&str],
    ca_file: &std::path::Path,
) -> PathBuf {
    let path = dir.join(format!("broker-{}.toml", rand_hex()));
    std::fs::write(
        &path,
        format!(
            "[domains.test]\nurl = \"{}\"\nca_file = \"{}\"\ndefault = true\n",
            urls.join(","),
            ca_file.display()
        ),
    )
    .unwrap();
    path
}

/// A broker process (config in `dir`) whose default domain is the relay
/// node(s) at `urls` ([`broker_config_at`]), with extra environment.
pub async fn broker_at(
    dir: &std::path::Path,
    urls: &[&str],
    ca_file: &std::path::Path,
    env: &[(&str, &str)],
) -> TestBroker {
    let config = broker_config_at(dir, urls, ca_file);
    let config = config.to_str().unwrap().to_string();
    TestBroker::start_with(env, &["--config", &config]).await.0
}

/// A caller of a broker on an attached session, logged in with a token,
/// holding a reachable cloud service.
pub struct CloudCaller {
    pub client: Client,
    pub session: String,
    /// The cloud service's handle in `session`.
    pub service: String,
    _attach: tonic::Streaming<pb::SessionEvent>,
}

impl CloudCaller {
    /// `broker`'s caller logged in with `token`, with `serial` through the
    /// relay, waited for (15 s) until reachable.
    pub async fn start(broker: &TestBroker, token: &str, serial: &str) -> Self {
        let (mut client, session, attach) = token_session(broker, token).await;
        let service = cloud_service(&mut client, &session, serial, Some(15.0)).await;
        Self {
            client,
            session,
            service,
            _attach: attach,
        }
    }

    /// `show version` on core-1 through the service ([`show_version`]).
    pub async fn show_version(&mut self) -> Result<String, tonic::Status> {
        show_version(&mut self.client, &self.session, &self.service).await
    }

    /// As [`assert_show_version`].
    pub async fn assert_show_version(&mut self) {
        assert_show_version(&mut self.client, &self.session, &self.service).await
    }

    /// `commands` on `device` through the service; the devices' results.
    pub async fn exec(
        &mut self,
        device: &str,
        commands: &[&str],
    ) -> Result<Vec<super::broker::DeviceReport>, tonic::Status> {
        run_exec(
            &mut self.client,
            in_session(&self.session, &self.service),
            &[device],
            commands,
        )
        .await
    }
}

/// An access-token login (`session` empty: the caller's own login, which
/// the broker stores).
pub async fn token_login(
    client: &mut Client,
    session: &str,
    token: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    client
        .access_token_login(pb::AccessTokenLoginRequest {
            session_id: session.into(),
            token: token.into(),
            relay: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// The key password [`enroll_alice_cert`] seals the key under.
pub const KEY_PASSWORD: &str = "key-password";

/// Alice's client certificate, enrolled through `client` after an
/// access-token login the broker stores (the key sealed under
/// [`KEY_PASSWORD`]).
pub async fn enroll_alice_cert(client: &mut Client, relay: &TestRelay) -> pb::EnrollClientResponse {
    token_login(client, "", &relay.token(ALICE)).await.unwrap();
    client
        .enroll_client(pb::EnrollClientRequest {
            key_password: KEY_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A caller of `broker` on an attached session, logged in with `token`.
pub async fn token_session(
    broker: &TestBroker,
    token: &str,
) -> (Client, String, tonic::Streaming<pb::SessionEvent>) {
    let mut client = broker.client().await;
    let (session, attach) = open_attached(&mut client).await;
    token_login(&mut client, &session, token).await.unwrap();
    (client, session, attach)
}

/// `serial` through the relay for `session`: its service handle. With
/// `wait` (seconds), also waits until the service is reachable and checks
/// it names itself `cloud-service`.
pub async fn cloud_service(
    client: &mut Client,
    session: &str,
    serial: &str,
    wait: Option<f64>,
) -> String {
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
    if let Some(secs) = wait {
        let waited = within(
            secs as u64 + 5,
            "service reachable",
            client.wait(pb::WaitRequest {
                service: in_session(session, &service),
                timeout_secs: secs,
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(waited.service_name, "cloud-service");
    }
    service
}

/// `show version` on core-1 through `service`: the device's answer (its
/// commands checked to have run and exited 0).
pub async fn show_version(
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
    Ok(out[0].ok_output())
}

/// `show version` on core-1 answers with the simulator's banner.
pub async fn assert_show_version(client: &mut Client, session: &str, service: &str) {
    let out = show_version(client, session, service).await.unwrap();
    assert!(out.contains("Simulated Network OS"), "{out}");
    assert!(out.contains("core-1 uptime is"), "{out}");
}

/// Drains `tap` (the bytes a relay forwarded) and checks they carry
/// neither `command`, nor `output` (text the device printed), nor the
/// caller's identity in the clear. Returns how many bytes it saw.
pub fn assert_ciphertext_only(
    tap: &mut mpsc::Receiver<Bytes>,
    command: &str,
    output: &str,
    caller: &str,
) -> usize {
    let mut seen = Vec::new();
    while let Ok(chunk) = tap.try_recv() {
        seen.extend_from_slice(&chunk);
    }
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(command.as_bytes()),
        "the command crossed the relay in the clear"
    );
    assert!(
        !contains(output.as_bytes()),
        "the output crossed the relay in the clear"
    );
    assert!(
        !contains(caller.as_bytes()),
        "the assertion crossed the relay in the clear"
    );
    seen.len()
}
