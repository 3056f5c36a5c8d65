//! A real broker process on a Unix socket in a temporary directory.

use std::path::PathBuf;
use std::process::Stdio;

use switchyard::api::pb::broker_client::BrokerClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::service::TestService;
use super::{switchyard_bin, within};
use switchyard::api::pb;

pub struct TestBroker {
    pub dir: tempfile::TempDir,
    pub child: Child,
    log: PathBuf,
    /// How it was started (prefix, environment, arguments), for `restart`.
    launch: Launch,
}

#[derive(Clone)]
struct Launch {
    prefix: Vec<String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

impl TestBroker {
    /// Starts `switchyard broker` and returns once its socket serves.
    /// `env` adds settings (e.g. `SWITCHYARD_BROKER__IDLE_TIMEOUT_SECS`).
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, &[]).await.0
    }

    /// Like `start`, with extra arguments; also returns the log lines seen
    /// up to readiness.
    pub async fn start_with(env: &[(&str, &str)], args: &[&str]) -> (Self, String) {
        Self::start_via(&[], env, args).await
    }

    /// Like `start_with`, run through `prefix` (e.g. `ip netns exec NS`:
    /// the socket is a path, reachable from any network namespace).
    pub async fn start_via(prefix: &[&str], env: &[(&str, &str)], args: &[&str]) -> (Self, String) {
        super::init();
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        let (child, log, startup) = Self::spawn(dir.path(), &launch).await;
        (
            Self {
                dir,
                child,
                log,
                launch,
            },
            startup,
        )
    }

    /// Starts the broker process in `dir` (socket, state, log) and returns
    /// once its socket serves: the child, its log file, and the log lines
    /// seen up to readiness. The log file is appended to, so a restarted
    /// broker's log follows the first one's.
    async fn spawn(dir: &std::path::Path, launch: &Launch) -> (Child, PathBuf, String) {
        let log = dir.join("broker.log");
        let mut cmd = match launch.prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(switchyard_bin());
                cmd
            }
            None => Command::new(switchyard_bin()),
        };
        cmd.arg("broker")
            .args(&launch.args)
            .arg("--socket")
            .arg(dir.join("broker.sock"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("XDG_CONFIG_HOME", dir)
            .env("RUST_LOG", "info,switchyard=debug")
            .env_remove("SWITCHYARD_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start broker");
        // Readiness: the broker says so on stderr once the socket serves.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        within(30, "broker readiness", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("switchyard broker listening on") {
                    return;
                }
            }
            panic!("broker exited before it was ready:\n{seen}");
        })
        .await;
        // Keep draining stderr into a file so the broker never blocks on it.
        let log_path = log.clone();
        let startup = seen.clone();
        tokio::spawn(async move {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .await
                .unwrap();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut file, seen.as_bytes()).await;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ =
                    tokio::io::AsyncWriteExt::write_all(&mut file, format!("{line}\n").as_bytes())
                        .await;
            }
        });
        (child, log, startup)
    }

    /// SIGKILL: the broker ends with no goodbye (its socket file stays
    /// behind); returns once the process is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        within(10, "the killed broker to exit", self.child.wait())
            .await
            .unwrap();
    }

    /// Starts the broker again as it was started, on the same socket and
    /// state (after `kill`), and returns once it serves.
    pub async fn restart(&mut self) {
        let (child, _, _) = Self::spawn(self.dir.path(), &self.launch).await;
        self.child = child;
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("broker.sock")
    }

    pub async fn client(&self) -> BrokerClient<Channel> {
        switchyard::api::client::connect(&self.socket())
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `switchyard connect direct NAME` to `svc` as alice (password from a
    /// file), with extra environment; returns the command's output.
    pub async fn connect_direct(
        &self,
        svc: &TestService,
        name: &str,
        env: &[(&str, &str)],
    ) -> std::process::Output {
        let pw = self.dir.path().join(format!("{name}-alice-pw"));
        std::fs::write(&pw, format!("{}\n", super::service::ALICE_PASSWORD)).unwrap();
        let mut cmd = self.command();
        cmd.args(["connect", "direct", name, "--host", "127.0.0.1", "--port"])
            .arg(svc.addr().port().to_string())
            .args(["--user", "alice", "--password-file"])
            .arg(&pw);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().await.unwrap()
    }

    /// `switchyard connect integrated NAME` over a fresh inventory in the
    /// broker's directory holding `devices` (and the usual simulated ones),
    /// opened with the test admin password; returns the command's output.
    pub async fn connect_integrated(
        &self,
        name: &str,
        devices: &[switchyard::service::inventory::NewDevice],
    ) -> std::process::Output {
        let db = self.dir.path().join(format!("{name}-inv.db"));
        drop(super::service::make_inventory(&db, devices));
        let pw = self.dir.path().join(format!("{name}-admin-pw"));
        std::fs::write(&pw, format!("{}\n", super::service::ADMIN_PASSWORD)).unwrap();
        self.command()
            .args(["connect", "integrated", name, "--db"])
            .arg(&db)
            .arg("--admin-password-file")
            .arg(&pw)
            .output()
            .await
            .unwrap()
    }

    /// A client of this broker for which `svc` is the named service
    /// `name`, reached directly as alice.
    pub async fn client_with_named(&self, svc: &TestService, name: &str) -> BrokerClient<Channel> {
        let mut client = self.client().await;
        client
            .service_direct(direct(svc, "", name, super::service::ALICE_PASSWORD))
            .await
            .unwrap();
        client
    }

    /// A `switchyard` command pointed at this broker.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(switchyard_bin());
        cmd.env("SWITCHYARD_SOCKET", self.socket())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .kill_on_drop(true);
        cmd
    }
}

// Request helpers shared by the broker-level tests.

pub fn direct(
    svc: &TestService,
    session: &str,
    name: &str,
    password: &str,
) -> pb::ServiceDirectRequest {
    pb::ServiceDirectRequest {
        session_id: session.into(),
        name: name.into(),
        username: "alice".into(),
        host: "127.0.0.1".into(),
        port: svc.addr().port().into(),
        password: password.into(),
        fingerprint: String::new(),
        ..Default::default()
    }
}

pub fn in_session(session: &str, service: &str) -> Option<pb::ServiceRef> {
    Some(pb::ServiceRef {
        session_id: session.into(),
        service_id: service.into(),
        name: String::new(),
    })
}

pub fn named(name: &str) -> Option<pb::ServiceRef> {
    Some(pb::ServiceRef {
        name: name.into(),
        ..Default::default()
    })
}

pub async fn status(broker: &TestBroker) -> pb::StatusResponse {
    broker
        .client()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// One command's result, as the broker reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandReport {
    /// Its stdout as text (lossy UTF-8; chunks sent ahead of the result
    /// included).
    pub output: String,
    /// Its stdout bytes exactly.
    pub raw: Vec<u8>,
    /// Its stderr bytes exactly.
    pub stderr: Vec<u8>,
    /// Its exit status, when the device reported one.
    pub exit_status: Option<u32>,
    /// Why it failed (timeout, lost connection); empty on success.
    pub error: String,
}

/// One device's answer to an exec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// One per command that ran, in order.
    pub commands: Vec<CommandReport>,
    /// Why the device failed as a whole; empty when its commands ran.
    pub error: String,
    /// The gRPC code name of that failure; empty on success.
    pub error_code: String,
}

impl DeviceReport {
    /// Every command's output, in order, after checking that the device
    /// answered, that every command ran without error and exited 0.
    /// Panics with the whole report otherwise.
    pub fn ok_output(&self) -> String {
        assert!(
            self.error.is_empty() && self.error_code.is_empty(),
            "device failed: {self:?}"
        );
        assert!(!self.commands.is_empty(), "no command results: {self:?}");
        for c in &self.commands {
            assert!(c.error.is_empty(), "command failed: {self:?}");
            assert_eq!(c.exit_status, Some(0), "exit status: {self:?}");
        }
        self.commands.iter().map(|c| c.output.as_str()).collect()
    }
}

/// Runs an exec and returns each device's report (per-command output, exit
/// status and error, and the device's own error).
pub async fn run_exec(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
    service: Option<pb::ServiceRef>,
    devices: &[&str],
    commands: &[&str],
) -> Result<Vec<DeviceReport>, tonic::Status> {
    let request = pb::ExecRequest {
        service,
        devices: devices.iter().map(|s| s.to_string()).collect(),
        commands: commands.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Ok(run_exec_request(client, request).await?.0)
}

/// Runs an exec request; returns each device's report and the closing
/// summary (checked to come last, once).
pub async fn run_exec_request(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
    request: pb::ExecRequest,
) -> Result<(Vec<DeviceReport>, pb::ExecSummary), tonic::Status> {
    let (devices, commands) = (request.devices.len(), request.commands.len());
    let mut stream = client.exec(request).await?.into_inner();
    let mut out = vec![DeviceReport::default(); devices];
    // Output chunks arrive before their command's result: [stdout, stderr].
    let mut chunks = vec![vec![[Vec::new(), Vec::new()]; commands]; devices];
    let mut answered = vec![false; devices];
    let mut summary = None;
    while let Some(event) = within(60, "exec event", stream.message()).await? {
        let d = event.device as usize;
        assert!(d < devices, "event for device {d}: {event:?}");
        assert!(summary.is_none(), "an event after the summary: {event:?}");
        match event.event {
            Some(pb::exec_event::Event::Output(o)) => {
                chunks[d][o.command as usize][usize::from(o.stderr)].extend_from_slice(&o.data)
            }
            Some(pb::exec_event::Event::DeviceResult(r)) => {
                assert!(!answered[d], "two results for device {d}");
                answered[d] = true;
                for c in r.commands {
                    let [mut raw, mut stderr] = std::mem::take(&mut chunks[d][c.command as usize]);
                    raw.extend_from_slice(&c.output);
                    stderr.extend_from_slice(&c.stderr);
                    out[d].commands.push(CommandReport {
                        output: String::from_utf8_lossy(&raw).into_owned(),
                        raw,
                        stderr,
                        exit_status: c.exit_status,
                        error: c.error,
                    });
                }
                out[d].error = r.error;
                out[d].error_code = r.error_code;
            }
            Some(pb::exec_event::Event::Summary(s)) => summary = Some(s),
            None => panic!("an exec event with nothing in it"),
        }
    }
    assert!(
        answered.iter().all(|a| *a),
        "a device got no result: {out:?}"
    );
    Ok((out, summary.expect("the exec ends with a summary")))
}

pub async fn open_attached(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
) -> (String, tonic::Streaming<pb::SessionEvent>) {
    let id = client
        .open_session(pb::OpenSessionRequest {
            client_name: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .session_id;
    let mut attach = client
        .attach(pb::AttachRequest {
            session_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = within(10, "attached", attach.message())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(pb::session_event::Event::Attached(_))
    ));
    (id, attach)
}

/// The metrics page of a broker started with `--metrics-listen`, whose
/// start-up log (from `TestBroker::start_with`) says where it serves.
pub struct Metrics {
    url: String,
}

impl Metrics {
    pub fn from_startup_log(startup: &str) -> Self {
        let url = startup
            .lines()
            .find_map(|l| l.strip_prefix("switchyard metrics on "))
            .expect("metrics address logged")
            .to_string();
        Self { url }
    }

    /// Scrapes the page now (with a real HTTP client).
    pub async fn scrape(&self) -> MetricsPage {
        let out = within(
            10,
            "metrics scrape",
            Command::new("curl").args(["-sf", &self.url]).output(),
        )
        .await
        .expect("curl");
        assert!(out.status.success(), "scrape of {} failed", self.url);
        MetricsPage(String::from_utf8(out.stdout).unwrap())
    }
}

pub struct MetricsPage(String);

impl MetricsPage {
    /// The value of the sample `name` (with its labels, as the page
    /// prints them); fails the test if the page has no such sample.
    pub fn value(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{}", self.0))
    }
}
