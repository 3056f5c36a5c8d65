//! Real processes and network namespaces for tests: `switchyard service
//! run` as a child ([`ServiceProcess`]) and a network namespace of the
//! test's own ([`Netns`], where nftables rules can drop UDP for real).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use switchyard::api::pb;
use tokio::process::{Child, Command};

use super::service::{ALICE_PASSWORD, make_inventory};
use super::{eventually, switchyard_bin, within};

/// `switchyard service run` as a child process (SIGKILL-able), restartable
/// on the same address, optionally inside a network namespace.
pub struct ServiceProcess {
    pub dir: tempfile::TempDir,
    netns: Option<String>,
    child: Option<Child>,
    pub addr: Option<SocketAddr>,
    /// Its TCP RPC listener (TLS + HTTP/2), after the first start.
    pub tcp_addr: Option<SocketAddr>,
    /// Extra `service run` arguments (e.g. `--relay-transport tcp`).
    pub run_args: Vec<String>,
}

impl ServiceProcess {
    pub fn new(netns: Option<String>) -> Self {
        super::init();
        let dir = tempfile::tempdir().unwrap();
        drop(make_inventory(&dir.path().join("inv.db"), &[]));
        std::fs::write(
            dir.path().join("admin-pw"),
            format!("{}\n", super::service::ADMIN_PASSWORD),
        )
        .unwrap();
        Self {
            dir,
            netns,
            child: None,
            addr: None,
            tcp_addr: None,
            run_args: Vec::new(),
        }
    }

    /// A service in `ns` (or on the host) with `devices` beside the usual
    /// ones, alice's cloud identity one of its remote users (for `core-*`),
    /// reading `config` as its config file
    /// (`$XDG_CONFIG_HOME/switchyard/config.toml`), enrolled with `relay`
    /// as `serial` (`service enroll` run in the namespace too) and started
    /// with `run_args`.
    pub async fn enrolled(
        ns: Option<&Netns>,
        relay: &super::cloud::TestRelay,
        serial: &str,
        config: &str,
        devices: &[switchyard::service::inventory::NewDevice],
        run_args: &[&str],
    ) -> Self {
        use switchyard::secret::Secret;
        use switchyard::service::inventory::{DeviceScope, Inventory, NewRemoteUser};
        let mut svc = Self::new(ns.map(|ns| ns.0.clone()));
        svc.run_args = run_args.iter().map(|a| a.to_string()).collect();
        let config_dir = svc.dir.path().join("switchyard");
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::write(config_dir.join("config.toml"), config).unwrap();
        let db = svc.dir.path().join("inv.db");
        let mut inv = Inventory::open(&db, &Secret::new(super::service::ADMIN_PASSWORD)).unwrap();
        inv.add_user(&NewRemoteUser {
            name: super::cloud::ALICE.into(),
            password: None,
            devices: DeviceScope::parse("core-*").unwrap(),
            enabled: true,
            cloud: true,
        })
        .unwrap();
        for device in devices {
            inv.add_device(device).unwrap();
        }
        drop(inv);
        let otp_file = svc.dir.path().join("otp");
        std::fs::write(&otp_file, relay.otp(serial)).unwrap();
        let admin_pw = svc.dir.path().join("admin-pw");
        let (url, ca) = (relay.url(), relay.ca_file());
        let enroll = [
            switchyard_bin(),
            "service",
            "--db",
            db.to_str().unwrap(),
            "--admin-password-file",
            admin_pw.to_str().unwrap(),
            "enroll",
            "--relay",
            &url,
            "--otp-file",
            otp_file.to_str().unwrap(),
            "--relay-ca",
            ca.to_str().unwrap(),
        ];
        match ns {
            Some(ns) => ns.run(&enroll),
            None => run_ok(&enroll),
        }
        svc.start().await;
        svc
    }

    /// The service's log (appended to by every start).
    pub fn log_file(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("service.log"))
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    pub fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    /// Starts the service (on its old address after the first start) and
    /// returns once it serves.
    pub async fn start(&mut self) -> SocketAddr {
        let _ = std::fs::remove_file(self.ready_file());
        let listen = self
            .addr
            .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let tcp_listen = self
            .tcp_addr
            .map_or_else(|| "127.0.0.1:0".to_string(), |a| a.to_string());
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, switchyard_bin()]);
                cmd
            }
            None => Command::new(switchyard_bin()),
        };
        cmd.args(["service", "--db"])
            .arg(self.dir.path().join("inv.db"))
            .arg("--admin-password-file")
            .arg(self.dir.path().join("admin-pw"))
            .args(["run", "--listen", &listen, "--tcp-listen", &tcp_listen])
            .args(&self.run_args)
            .arg("--ready-file")
            .arg(self.ready_file())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("FAULTS_SERVICE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("start the service"));
        let ready = self.ready_file();
        eventually(30, "service readiness", || ready.exists()).await;
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        let addr: SocketAddr = doc["rpc_addr"].as_str().unwrap().parse().unwrap();
        self.addr = Some(addr);
        self.tcp_addr = doc["tcp_addr"].as_str().and_then(|a| a.parse().ok());
        addr
    }

    /// SIGKILL: no goodbye to anyone; returns once the process is gone.
    /// (Through `ip netns exec` the child *is* the service: it execs.)
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().unwrap();
        within(10, "the killed service to exit", child.wait())
            .await
            .unwrap();
    }

    /// SIGTERM (a graceful stop, as systemd's); returns once the process
    /// is gone.
    pub async fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        within(30, "the stopped service to exit", child.wait())
            .await
            .unwrap();
    }

    pub fn service_ref(&self, name: &str) -> pb::ServiceDirectRequest {
        pb::ServiceDirectRequest {
            session_id: String::new(),
            name: name.into(),
            username: "alice".into(),
            host: "127.0.0.1".into(),
            port: self.addr.unwrap().port().into(),
            password: ALICE_PASSWORD.into(),
            fingerprint: String::new(),
            ..Default::default()
        }
    }
}

/// Runs `argv` (a command and its arguments); panics, with its stderr,
/// if it fails.
pub fn run_ok(argv: &[&str]) {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e} (run scripts/setup-test-host.sh)"));
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace of the test's own, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// `None` (the test is skipped, loudly) only when this host cannot make
    /// network namespaces at all.
    pub fn create() -> Option<Self> {
        let name = format!("sy-test-{}-{}", std::process::id(), rand_suffix());
        let made = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .output();
        match made {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot create a network namespace here: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            Err(e) => {
                eprintln!("SKIPPED: `ip` is not available ({e}); run scripts/setup-test-host.sh");
                return None;
            }
        }
        let ns = Self(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Runs `argv` inside the namespace; panics if it fails.
    pub fn run(&self, argv: &[&str]) {
        let mut inside = self.prefix().to_vec();
        inside.extend_from_slice(argv);
        run_ok(&inside);
    }

    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.0]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
