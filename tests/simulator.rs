//! Simulated devices, reached through the SSH driver and through the stock
//! OpenSSH client, exactly like real devices.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{init, key_body, switchyard_bin, within};
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{DeviceTarget, DriverError};
use switchyard::sim::server::{SimFleet, SimFleetConfig, public_host_key_for};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(20);

fn target(name: &str, port: u16, password: &str) -> DeviceTarget {
    common::loopback_device(name, port, "admin", password)
}

async fn fleet(count: usize) -> SimFleet {
    SimFleet::start(SimFleetConfig {
        count,
        ..Default::default()
    })
    .await
    .expect("start simulated devices")
}

fn cmds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_driver_runs_cli_commands_on_simulated_devices() {
    init();
    let fleet = fleet(2).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let [a, b] = fleet.endpoints() else {
        panic!("two devices")
    };
    assert_eq!((a.name.as_str(), b.name.as_str()), ("sim-001", "sim-002"));

    let exec = within(
        30,
        "exec",
        pool.exec(
            &target(&a.name, a.port, "admin"),
            &cmds(&[
                "terminal length 0",
                "show version",
                "show bogus",
                "show bulk 1000000",
            ]),
            T,
        ),
    )
    .await
    .unwrap();
    let out = |i: usize| exec.results[i].outcome.as_ref().unwrap();
    assert_eq!(out(0).exit_status, Some(0));
    assert!(
        out(1).output.contains("sim-001 uptime is"),
        "{}",
        out(1).output
    );
    assert_eq!(out(2).exit_status, Some(1));
    assert!(out(2).output.starts_with("% Invalid input"));
    assert_eq!(out(3).output.len(), 1_000_000);
    let learned = exec.learned_host_key.unwrap();
    assert_eq!(
        key_body(&learned),
        key_body(&public_host_key_for("sim-001"))
    );

    // Same command, another device: different, but stable, output.
    let other = pool
        .exec(
            &target(&b.name, b.port, "admin"),
            &cmds(&["show version"]),
            T,
        )
        .await
        .unwrap();
    let other = other.results[0].outcome.as_ref().unwrap();
    assert!(other.output.contains("sim-002 uptime is"));
    let again = pool
        .exec(
            &target(&a.name, a.port, "admin"),
            &cmds(&["show version"]),
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        again.results[0].outcome.as_ref().unwrap().output,
        out(1).output
    );
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_by_the_simulator() {
    init();
    let fleet = fleet(1).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let ep = &fleet.endpoints()[0];
    let err = within(
        30,
        "exec",
        pool.exec(
            &target(&ep.name, ep.port, "nope"),
            &cmds(&["show version"]),
            T,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, DriverError::AuthenticationFailed { .. }),
        "{err}"
    );
}

/// A known_hosts file naming the simulated device's stable key, so the
/// stock client checks the host key strictly.
fn known_hosts(dir: &std::path::Path, name: &str, port: u16) -> std::path::PathBuf {
    let path = dir.join("known_hosts");
    std::fs::write(
        &path,
        format!("[127.0.0.1]:{port} {}\n", public_host_key_for(name)),
    )
    .unwrap();
    path
}

fn ssh_command(known_hosts: &std::path::Path, port: u16) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sshpass");
    cmd.args(["-p", "admin", "ssh", "-F", "/dev/null"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "ConnectTimeout=10",
            "-p",
        ])
        .arg(port.to_string())
        .arg("admin@127.0.0.1")
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_openssh_client_runs_exec_requests() {
    init();
    let fleet = fleet(1).await;
    let ep = &fleet.endpoints()[0];
    let dir = tempfile::tempdir().unwrap();
    let kh = known_hosts(dir.path(), &ep.name, ep.port);
    let out = within(
        30,
        "ssh",
        ssh_command(&kh, ep.port).arg("show version").output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sim-001 uptime is"));

    let out = within(
        30,
        "ssh",
        ssh_command(&kh, ep.port).arg("show nonsense").output(),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("% Invalid input"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_openssh_client_gets_an_interactive_shell() {
    init();
    let fleet = fleet(1).await;
    let ep = &fleet.endpoints()[0];
    let dir = tempfile::tempdir().unwrap();
    let kh = known_hosts(dir.path(), &ep.name, ep.port);
    let mut child = ssh_command(&kh, ep.port)
        .arg("-tt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"show ip interface brief\rexit\r")
        .await
        .unwrap();
    let out = within(30, "interactive ssh", child.wait_with_output())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sim-001#"), "prompt missing: {text:?}");
    assert!(
        text.contains("GigabitEthernet0/0"),
        "output missing: {text:?}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(stdin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_command_reports_ports_and_stops_on_sigterm() {
    init();
    let mut child = tokio::process::Command::new(switchyard_bin())
        .args(["sim", "--count", "3", "--prefix", "lab"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut devices = Vec::new();
    for _ in 0..3 {
        let line = within(30, "ready line", lines.next_line())
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        devices.push((
            v["name"].as_str().unwrap().to_string(),
            v["port"].as_u64().unwrap() as u16,
        ));
    }
    assert_eq!(devices[2].0, "lab-003");

    let pool = SshPool::new(SshDriverConfig::default());
    let (name, port) = &devices[1];
    let exec = within(
        30,
        "exec",
        pool.exec(&target(name, *port, "admin"), &cmds(&["show version"]), T),
    )
    .await
    .unwrap();
    assert!(
        exec.results[0]
            .outcome
            .as_ref()
            .unwrap()
            .output
            .contains("lab-002 uptime")
    );

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = within(30, "sim exit", child.wait()).await.unwrap();
    assert!(status.success(), "sim exited with {status}");
}
