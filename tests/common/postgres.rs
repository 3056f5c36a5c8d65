//! A relay tier in tests: a private PostgreSQL cluster (Debian's server
//! binaries, run as the unprivileged `switchyard-pg` account because
//! initdb refuses root, listening only on a Unix socket in a temporary
//! directory), relay nodes as real `switchyard relay run` processes on
//! one database, and services enrolled through one node.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::secret::Secret;
use switchyard::service::enroll::{EnrollError, EnrollOptions, enroll};
use switchyard::service::inventory::{DeviceScope, Inventory, NewDevice, NewRemoteUser};

use super::cloud::{ALICE, CloudService};
use super::service::{ADMIN_PASSWORD, make_inventory};
use super::within;

/// The account the clusters run as.
pub const PG_USER: &str = "switchyard-pg";

/// The newest installed PostgreSQL's binary directory
/// (`/usr/lib/postgresql/N/bin`, Debian's layout).
pub fn pg_bindir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/setup-test-host.sh (Debian's postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no /usr/lib/postgresql/*/bin/postgres: run scripts/setup-test-host.sh")
        .1
}

/// The uid and gid of [`PG_USER`], creating the account when missing
/// (parallel tests may race to create it: whoever loses finds it made).
fn pg_account() -> (u32, u32) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the relay tier tests run PostgreSQL as {PG_USER}, which needs root (CI runs as root)"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(user) = nix::unistd::User::from_name(PG_USER).unwrap() {
            return (user.uid.as_raw(), user.gid.as_raw());
        }
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_USER,
            ])
            .status();
        assert!(
            Instant::now() < deadline,
            "cannot create the account {PG_USER}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private PostgreSQL cluster, stopped and deleted on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    server: Child,
}

impl PgCluster {
    /// initdb + postgres as [`PG_USER`], no TCP listener; returns once it
    /// accepts connections.
    pub fn start() -> Self {
        let (uid, gid) = pg_account();
        let bin = pg_bindir();
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::chown(
            dir.path(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        let data = dir.path().join("data");
        let as_pg = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            cmd.uid(uid)
                .gid(gid)
                .current_dir(dir.path())
                .env_clear()
                .env("LC_ALL", "C")
                .env("PATH", "/usr/bin:/bin");
            cmd
        };
        let out = as_pg("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let server = as_pg("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut cluster = Self { dir, server };
        cluster.wait_ready();
        cluster
    }

    /// Polls `postmaster.pid` until the server says it is ready (its
    /// status line), failing with the server's log if it exits or takes
    /// longer than 30 s.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid_file = self.dir.path().join("data/postmaster.pid");
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && text.lines().any(|l| l.trim() == "ready")
            {
                return;
            }
            if let Some(status) = self.server.try_wait().unwrap() {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a fresh database and returns its URL (over the socket).
    pub fn create_database(&self) -> String {
        let name = format!("relay_{:016x}", rand::random::<u64>());
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@/{database}?host={}",
            self.socket_dir().display()
        )
    }

    /// Runs one SQL command in `database` and returns its output
    /// (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(pg_bindir().join("psql"))
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-U",
                "postgres",
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown (nothing to keep).
        let pid = nix::unistd::Pid::from_raw(self.server.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// A relay state directory made once by `relay init` (what an operator
/// copies to every node of a tier).
pub fn init_tier_state(dir: &Path) -> PathBuf {
    let state = dir.join("relay-state");
    switchyard::relay::state::init(&state, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    state
}

/// A copy of the state directory `from` for one node.
pub fn copy_state(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("relay.db") {
            continue;
        }
        std::fs::copy(entry.path(), to.join(name)).unwrap();
    }
}

/// One node: a real `switchyard relay run` process on the shared database,
/// with every port 0; killed on drop.
pub struct TierNode {
    pub name: String,
    pub state: PathBuf,
    pub url: String,
    pub quic: String,
    pub child: Option<tokio::process::Child>,
    /// A node run inside the test process instead (`start_tapped`).
    pub relay: Option<switchyard::relay::Relay>,
    log: PathBuf,
}

impl TierNode {
    /// Starts node `name` with its own copy of `state`, on `database`.
    pub async fn start(name: &str, work: &Path, state: &Path, database: &str) -> Self {
        Self::start_with_args(name, work, state, database, &[]).await
    }

    /// As [`TierNode::start`], with `extra` arguments to `relay run`.
    pub async fn start_with_args(
        name: &str,
        work: &Path,
        state: &Path,
        database: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_bin(super::switchyard_bin(), name, work, state, database, extra).await
    }

    /// As [`TierNode::start_with_args`], running the relay binary `bin`
    /// (benchmarks compare another build).
    pub async fn start_bin(
        bin: &str,
        name: &str,
        work: &Path,
        state: &Path,
        database: &str,
        extra: &[&str],
    ) -> Self {
        let own = work.join(format!("state-{name}"));
        if !own.exists() {
            copy_state(state, &own);
        }
        let ready = work.join(format!("ready-{name}-{:08x}.json", rand::random::<u32>()));
        let log = work.join(format!("relay-{name}.log"));
        let child = tokio::process::Command::new(bin)
            .arg("relay")
            .arg("--state")
            .arg(&own)
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--poll-interval", "1"])
            // A loopback packet port unless `extra` names one (or `off`).
            .args(
                (!extra.contains(&"--packet-listen"))
                    .then_some(["--packet-listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .arg("--ready-file")
            .arg(&ready)
            .env("SWITCHYARD_RELAY_DATABASE", database)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut node = Self {
            name: name.into(),
            state: own,
            url: String::new(),
            quic: String::new(),
            child: Some(child),
            relay: None,
            log,
        };
        let text = within(30, "relay node ready", async {
            loop {
                if let Ok(text) = std::fs::read_to_string(&ready) {
                    return text;
                }
                if let Some(status) = node.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("relay node {name} exited ({status}): {}", node.log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let ready: serde_json::Value = serde_json::from_str(&text).unwrap();
        node.url = ready["url"].as_str().unwrap().to_string();
        node.quic = ready["quic"].as_str().unwrap().to_string();
        node
    }

    /// Node `name` as a `Relay` inside the test process, on `database`
    /// with its own copy of `state`, copying every tunnel byte it forwards
    /// to the returned receiver.
    pub async fn start_tapped(
        name: &str,
        work: &Path,
        state: &Path,
        database: &str,
    ) -> (Self, tokio::sync::mpsc::Receiver<bytes::Bytes>) {
        use switchyard::relay::{Relay, RelayConfig, db::Database, state::load_keys};
        let own = work.join(format!("state-{name}"));
        if !own.exists() {
            copy_state(state, &own);
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1 << 20);
        let config = RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            public_host: Some("127.0.0.1".into()),
            tap: Some(tx),
            ..RelayConfig::default()
        };
        let db = Database::open(&own, Some(database)).await.unwrap();
        let relay = Relay::start_on(load_keys(&own).unwrap(), db, config)
            .await
            .unwrap();
        let node = Self {
            name: name.into(),
            state: own,
            url: relay.url(),
            quic: relay.quic_addr().to_string(),
            child: None,
            relay: Some(relay),
            log: work.join(format!("relay-{name}.log")),
        };
        (node, rx)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.state.join("ca.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reaped (an in-process node is dropped: its sockets
    /// close at once).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
        drop(self.relay.take());
    }

    /// A broker config file naming this node as the default domain `test`.
    pub fn broker_config(&self, dir: &Path) -> PathBuf {
        super::cloud::broker_config_at(dir, &[&self.url], &self.ca_file())
    }
}

/// A service inventory (devices `core-*` reachable by alice's cloud
/// identity) enrolled over `enroll_via`'s HTTPS with `otp`.
pub async fn enroll_service(
    enroll_via: &TierNode,
    otp: &str,
    extra: &[NewDevice],
) -> (tempfile::TempDir, Result<String, EnrollError>) {
    super::init();
    let dir = tempfile::tempdir().unwrap();
    let mut inv = make_inventory(&dir.path().join("inv.db"), extra);
    inv.add_user(&NewRemoteUser {
        name: ALICE.into(),
        password: None,
        devices: DeviceScope::parse("core-*").unwrap(),
        enabled: true,
        cloud: true,
    })
    .unwrap();
    let roots = switchyard::tls::root_store(Some(&enroll_via.ca_file())).unwrap();
    let result = enroll(
        &mut inv,
        EnrollOptions {
            relay_url: enroll_via.url.clone(),
            otp: Secret::new(otp),
            roots,
            advertise: None,
        },
    )
    .await;
    (dir, result)
}

/// Runs an enrolled service (its RPC socket and relay agent) connected to
/// `node` (whatever node it enrolled through), once online there.
pub async fn run_service_on(dir: tempfile::TempDir, serial: &str, node: &TierNode) -> CloudService {
    {
        let mut inv =
            Inventory::open(&dir.path().join("inv.db"), &Secret::new(ADMIN_PASSWORD)).unwrap();
        let mut enrollment = inv.relay_enrollment().unwrap().unwrap();
        enrollment.quic = node.quic.clone();
        inv.set_relay_enrollment(&enrollment).unwrap();
    }
    run_service(dir, serial).await
}

/// The relay address(es) an enrolled service's inventory holds.
pub fn enrolled_quic(dir: &tempfile::TempDir) -> String {
    let inv = Inventory::open(&dir.path().join("inv.db"), &Secret::new(ADMIN_PASSWORD)).unwrap();
    inv.relay_enrollment().unwrap().unwrap().quic
}

/// Runs an enrolled service as its enrollment says, once online.
pub async fn run_service(dir: tempfile::TempDir, serial: &str) -> CloudService {
    let mut svc = CloudService {
        dir,
        serial: serial.into(),
        server: None,
        agent: None,
        transport: Default::default(),
    };
    svc.run();
    within(15, "service online at its node", async {
        assert!(
            svc.agent
                .as_ref()
                .unwrap()
                .wait_online(Duration::from_secs(15))
                .await
        );
    })
    .await;
    svc
}
