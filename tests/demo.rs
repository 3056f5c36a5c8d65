//! The README's main command: `switchyard demo`.

mod common;

use std::process::Stdio;

use common::{switchyard_bin, within};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_an_integrated_service_and_cleans_up() {
    let home = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(switchyard_bin())
        .args(["demo", "--devices", "2"])
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_STATE_HOME", home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let socket = within(60, "demo ready", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("demo exited early");
            if let Some(path) = line.trim().strip_prefix("broker socket:") {
                return std::path::PathBuf::from(path.trim());
            }
        }
    })
    .await;
    let out = tokio::process::Command::new(switchyard_bin())
        .args([
            "exec",
            "demo",
            "sim-002",
            "inproc-1",
            "-c",
            "show version",
            "--json",
        ])
        .env("SWITCHYARD_SOCKET", &socket)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sim-002 uptime") && text.contains("inproc-1 uptime"),
        "{text}"
    );

    let pid = nix::unistd::Pid::from_raw(demo.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = within(30, "demo exit", demo.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the demo removed its socket");
    assert!(
        !socket.parent().unwrap().exists(),
        "the demo removed its directory"
    );
}
