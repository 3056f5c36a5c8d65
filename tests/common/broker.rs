//! A real broker process on a Unix socket in a temporary directory.

use std::path::PathBuf;
use std::process::Stdio;

use switchyard::api::pb::broker_client::BrokerClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::{switchyard_bin, within};

pub struct TestBroker {
    pub dir: tempfile::TempDir,
    pub child: Child,
    log: PathBuf,
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
        super::init();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("broker.log");
        let mut cmd = Command::new(switchyard_bin());
        cmd.arg("broker")
            .args(args)
            .arg("--socket")
            .arg(dir.path().join("broker.sock"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", dir.path())
            .env("RUST_LOG", "info,switchyard=debug")
            .env_remove("SWITCHYARD_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
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
            let mut file = tokio::fs::File::create(&log_path).await.unwrap();
            let _ = tokio::io::AsyncWriteExt::write_all(&mut file, seen.as_bytes()).await;
            while let Ok(Some(line)) = lines.next_line().await {
                let _ =
                    tokio::io::AsyncWriteExt::write_all(&mut file, format!("{line}\n").as_bytes())
                        .await;
            }
        });
        (Self { dir, child, log }, startup)
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

    /// A `switchyard` command pointed at this broker.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(switchyard_bin());
        cmd.env("SWITCHYARD_SOCKET", self.socket())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .kill_on_drop(true);
        cmd
    }
}
