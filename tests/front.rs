//! The lean `switchyard` front: it runs client commands itself and hands
//! daemon and admin commands to `switchyardd` in the same process.

mod common;

use std::path::PathBuf;

use common::broker::TestBroker;
use common::switchyard_bin;

/// A copy of the lean binary alone in a directory, without `switchyardd`.
fn lone_front() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let lone = dir.path().join("switchyard");
    if std::fs::hard_link(switchyard_bin(), &lone).is_err() {
        std::fs::copy(switchyard_bin(), &lone).unwrap();
    }
    (dir, lone)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_command_becomes_switchyardd_keeping_pid_and_argv0() {
    let broker = TestBroker::start(&[]).await;
    let pid = broker.child.id().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe.file_name().unwrap(), "switchyardd", "{}", exe.display());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(argv[0], switchyard_bin().as_bytes());
    assert_eq!(argv[1], b"broker");
}

#[test]
fn without_switchyardd_a_daemon_command_says_what_is_missing() {
    let (dir, lone) = lone_front();
    let out = std::process::Command::new(&lone)
        .args(["broker", "--socket"])
        .arg(dir.path().join("broker.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("switchyardd") && err.contains("installed next to `switchyard`"),
        "{err}"
    );
    assert!(!dir.path().join("broker.sock").exists());
}

#[test]
fn client_commands_run_without_switchyardd() {
    let (dir, lone) = lone_front();
    let socket = dir.path().join("no-broker.sock");
    let out = std::process::Command::new(&lone)
        .arg("status")
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the broker is not running"), "{err}");
    assert!(!err.contains("switchyardd"), "{err}");
}

/// The front reads no configuration: a client command that a config file
/// or a setting variable applies to is handed to `switchyardd`, which
/// loads it (tests/first_hour.rs checks the outcome).
#[test]
fn client_commands_with_configuration_are_handed_to_switchyardd() {
    let (dir, lone) = lone_front();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "").unwrap();
    let with_file = std::process::Command::new(&lone)
        .args(["status", "--config"])
        .arg(&config)
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .unwrap();
    let with_variable = std::process::Command::new(&lone)
        .arg("status")
        .env_remove("SWITCHYARD_CONFIG")
        .env("SWITCHYARD_BROKER__SOCKET", dir.path().join("b.sock"))
        .output()
        .unwrap();
    for out in [with_file, with_variable] {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("installed next to `switchyard`"), "{err}");
    }
}

#[test]
fn help_and_mistakes_get_the_whole_command_line() {
    let help = std::process::Command::new(switchyard_bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["broker", "service", "relay", "exec", "status"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
    let wrong = std::process::Command::new(switchyard_bin())
        .args(["exec", "lab", "sim-1", "--no-such-option"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2), "clap's usage-error exit code");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("--no-such-option"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let broker = TestBroker::start(&[]).await;
    // A pipe whose reading end is already gone: the first write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = tokio::process::Command::new(switchyard_bin())
        .arg("status")
        .arg("--socket")
        .arg(broker.socket())
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
