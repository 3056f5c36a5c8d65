//! What a new user meets in the first hour: where every command finds the
//! broker (one rule: `--socket`, `$SWITCHYARD_SOCKET`, the config's
//! `broker.socket`, the default), what a wrong `--socket` or config file
//! says, and that a waiting command stops on the first signal.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::broker::TestBroker;
use common::cloud::TestRelay;
use common::{switchyard_bin, within};
use switchyard::api::pb;

/// A `switchyard` command with a clean environment: no `SWITCHYARD_*`
/// variables, and runtime and config directories of its own (empty, so
/// the default socket has no broker and there is no default config file).
fn clean(home: &Path) -> Command {
    let mut cmd = Command::new(switchyard_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_STATE_HOME", home.join("state"));
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_reached(out: &Output, how: &str) {
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sessions:"),
        "{how}: {}",
        stderr(out)
    );
}

fn config_naming(dir: &Path, name: &str, socket: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("[broker]\nsocket = \"{}\"\n", socket.display()),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_of_the_socket_path_reaches_the_broker_in_its_order() {
    let broker = TestBroker::start(&[]).await;
    let home = tempfile::tempdir().unwrap();
    let good = broker.socket();
    let bad = home.path().join("nobody-here.sock");
    let good_cfg = config_naming(home.path(), "good.toml", &good);
    let bad_cfg = config_naming(home.path(), "bad.toml", &bad);

    // `status` with `args` and the environment `env` added.
    let status = |args: &[&OsStr], env: &[(&str, &Path)]| {
        let mut cmd = clean(home.path());
        cmd.arg("status").args(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd.output().unwrap()
    };
    let socket_flag = [OsStr::new("--socket"), good.as_os_str()];
    let config_flag = [OsStr::new("--config"), good_cfg.as_os_str()];
    assert_reached(&status(&socket_flag, &[]), "--socket");
    let out = status(&[], &[("SWITCHYARD_SOCKET", &good)]);
    assert_reached(&out, "$SWITCHYARD_SOCKET");
    assert_reached(&status(&config_flag, &[]), "--config");
    let out = status(&[], &[("SWITCHYARD_CONFIG", &good_cfg)]);
    assert_reached(&out, "$SWITCHYARD_CONFIG");
    let out = status(&[], &[("SWITCHYARD_BROKER__SOCKET", &good)]);
    assert_reached(&out, "$SWITCHYARD_BROKER__SOCKET");
    // The commands the front hands to switchyardd follow the same rule.
    let out = clean(home.path())
        .args(["logout", "--config"])
        .arg(&good_cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "logout --config: {}", stderr(&out));

    // The order: --socket, then $SWITCHYARD_SOCKET, then the config.
    let out = status(
        &socket_flag,
        &[("SWITCHYARD_SOCKET", &bad), ("SWITCHYARD_CONFIG", &bad_cfg)],
    );
    assert_reached(&out, "--socket over the rest");
    let out = status(
        &[],
        &[
            ("SWITCHYARD_SOCKET", &good),
            ("SWITCHYARD_CONFIG", &bad_cfg),
        ],
    );
    assert_reached(&out, "$SWITCHYARD_SOCKET over the config");
    let out = status(&[], &[("SWITCHYARD_CONFIG", &bad_cfg)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("not running at {}", bad.display())),
        "the config's socket is the one tried: {}",
        stderr(&out)
    );

    // The default config file, when present, counts too.
    let default_cfg = home.path().join("config/switchyard/config.toml");
    std::fs::create_dir_all(default_cfg.parent().unwrap()).unwrap();
    std::fs::copy(&good_cfg, &default_cfg).unwrap();
    assert_reached(&status(&[], &[]), "the default config file");
}

#[test]
fn a_named_config_file_that_does_not_exist_is_an_error_for_every_command() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("missing.toml");
    let want = format!("config file {} does not exist", missing.display());
    for args in [
        &["status"][..],
        &["exec", "lab", "d1", "-c", "show clock"],
        &["logout"],
        &["--socket", "/tmp/x.sock", "status"],
    ] {
        let out = clean(home.path())
            .args(args)
            .arg("--config")
            .arg(&missing)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(&want), "{args:?}: {}", stderr(&out));
        let out = clean(home.path())
            .args(args)
            .env("SWITCHYARD_CONFIG", &missing)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(&want), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_unknown_config_key_is_reported_once_with_the_file_and_line() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("c.toml");
    std::fs::write(&cfg, "[broker]\n\nidle_timout_secs = 3\n").unwrap();
    for args in [&["status"][..], &["logout"]] {
        let out = clean(home.path())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!("config file {}, line 3:", cfg.display())),
            "{err}"
        );
        assert_eq!(err.matches("idle_timout_secs").count(), 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// Runs `status --socket PATH` and returns the error line.
fn status_error(home: &Path, socket: &Path) -> String {
    let out = clean(home)
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    stderr(&out)
}

#[test]
fn a_wrong_socket_path_says_what_is_wrong_with_it() {
    let home = tempfile::tempdir().unwrap();

    let absent = home.path().join("absent.sock");
    let err = status_error(home.path(), &absent);
    assert!(
        err.contains(&format!(
            "not running at {0}; start it with `switchyard --socket {0} broker`",
            absent.display()
        )),
        "{err}"
    );

    let file = home.path().join("plain");
    std::fs::write(&file, "").unwrap();
    let err = status_error(home.path(), &file);
    assert!(
        err.contains("is not a socket (it is a regular file)"),
        "{err}"
    );
    assert!(!err.contains("switchyard broker"), "{err}");

    let err = status_error(home.path(), home.path());
    assert!(err.contains("is a directory"), "{err}");
    assert!(
        err.contains(&format!(
            "--socket {}",
            home.path().join("broker.sock").display()
        )),
        "{err}"
    );

    let long = home.path().join("x".repeat(120));
    let err = status_error(home.path(), &long);
    let len = long.as_os_str().len();
    assert!(
        err.contains(&format!("is {len} bytes long")) && err.contains("at most 107"),
        "{err}"
    );
}

#[test]
fn a_socket_this_user_may_not_open_says_permission_denied() {
    if !nix::unistd::geteuid().is_root() {
        // Only root can try as another user; root itself is never refused.
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("broker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(switchyard_bin())
        .arg("status")
        .arg("--socket")
        .arg(&socket)
        .env_clear()
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("permission denied opening {}", socket.display())),
        "{err}"
    );
}

/// `switchyard login sso` waits for approval; the first SIGINT (or SIGTERM)
/// ends it, non-zero, and the broker abandons the device grant.
async fn first_signal_stops_a_waiting_login(signal: nix::sys::signal::Signal) {
    use tokio::io::AsyncBufReadExt;
    let relay = TestRelay::start().await;
    let config = relay.broker_config(relay.dir.path());
    let config = config.to_str().unwrap().to_string();
    let (broker, _) = TestBroker::start_with(&[], &["--config", &config]).await;
    let alice = "alice@example.com";

    let start_login = || {
        let mut cmd = broker.command();
        cmd.args(["login", "sso", alice])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let read_code = |child: &mut tokio::process::Child| {
        let stdout = child.stdout.take().unwrap();
        async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let line = within(20, "SSO prompt", lines.next_line())
                .await
                .unwrap()
                .expect("a prompt line");
            let prompt: serde_json::Value = serde_json::from_str(&line).unwrap();
            prompt["user_code"].as_str().unwrap().to_string()
        }
    };
    let login_states = || async {
        let mut client = broker.client().await;
        let status = client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        status
            .logins
            .into_iter()
            .map(|l| l.state)
            .collect::<Vec<_>>()
    };

    default_sigint();
    let mut child = start_login();
    let first_code = read_code(&mut child).await;
    assert_eq!(login_states().await, ["waiting for approval"]);

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    // Generous: a process that ignores the first signal never ends; 5 s
    // was missed on a CI machine running three builds at once.
    let status = within(15, "the login to stop on the first signal", child.wait())
        .await
        .unwrap();
    assert!(!status.success(), "{status:?}");

    // The broker let the grant go: status lists no pending login...
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let states = login_states().await;
        if states.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pending login is still there: {states:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ...and the next login starts a new grant instead of joining it.
    let mut again = start_login();
    let second_code = read_code(&mut again).await;
    assert_ne!(first_code, second_code);
    assert_eq!(relay.relay().grants_started(), 2);
    again.start_kill().unwrap();
    let _ = again.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sigint_stops_a_waiting_sso_login_and_the_broker_drops_it() {
    first_signal_stops_a_waiting_login(nix::sys::signal::Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sigterm_stops_a_waiting_sso_login_and_the_broker_drops_it() {
    first_signal_stops_a_waiting_login(nix::sys::signal::Signal::SIGTERM).await;
}

/// A service that was re-initialized presents a new certificate: the
/// remembered one refuses it (naming `--fingerprint`), and an explicit
/// fingerprint replaces the remembered pin for later callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_fingerprint_replaces_the_remembered_one() {
    use common::broker::direct;
    use common::service::{ALICE_PASSWORD, start_service};
    use switchyard::service::rpc::RpcConfig;

    let broker = TestBroker::start(&[("SWITCHYARD_BROKER__IDLE_TIMEOUT_SECS", "0.1")]).await;
    let mut svc = start_service(&[], RpcConfig::default());
    let mut client = broker.client().await;
    connect_then_disconnect(&mut client, direct(&svc, "", "first", ALICE_PASSWORD)).await;
    reinitialize(&mut svc).await;
    links_closed(&mut client).await;

    let refused = client
        .service_direct(direct(&svc, "", "second", ALICE_PASSWORD))
        .await
        .unwrap_err();
    assert!(refused.message().contains("--fingerprint"), "{refused:?}");

    let mut pinned = direct(&svc, "", "third", ALICE_PASSWORD);
    pinned.fingerprint = svc.fingerprint.to_string();
    connect_then_disconnect(&mut client, pinned).await;
    links_closed(&mut client).await;
    // A caller that names no fingerprint, on a new link, gets the new pin.
    client
        .service_direct(direct(&svc, "", "fourth", ALICE_PASSWORD))
        .await
        .unwrap();
}

/// `known-services list` shows the certificate learned on first use; after
/// the service is re-initialized the refusal names `known-services forget`,
/// which forgets it (once: a second forget is an error), and the next
/// connection without a fingerprint trusts and remembers the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_services_lists_and_forgets_a_learned_certificate() {
    use common::broker::direct;
    use common::service::{ALICE_PASSWORD, start_service};
    use switchyard::service::rpc::RpcConfig;

    let broker = TestBroker::start(&[("SWITCHYARD_BROKER__IDLE_TIMEOUT_SECS", "0.1")]).await;
    let mut svc = start_service(&[], RpcConfig::default());
    let target = format!("127.0.0.1:{}", svc.addr().port());
    let known = || async {
        let out = broker
            .command()
            .args(["known-services", "list", "--json"])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        list
    };
    assert_eq!(known().await, serde_json::json!([]));

    let mut client = broker.client().await;
    connect_then_disconnect(&mut client, direct(&svc, "", "first", ALICE_PASSWORD)).await;
    let old = svc.fingerprint.to_string();
    assert_eq!(
        known().await,
        serde_json::json!([{"target": target, "fingerprint": old}])
    );
    let text = broker
        .command()
        .args(["known-services", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&text.stdout),
        format!("{target}  {old}\n")
    );

    reinitialize(&mut svc).await;
    links_closed(&mut client).await;
    let refused = client
        .service_direct(direct(&svc, "", "second", ALICE_PASSWORD))
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains(&format!("switchyard known-services forget {target}")),
        "{refused:?}"
    );

    let out = broker
        .command()
        .args(["known-services", "forget", &target])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&old));
    assert_eq!(known().await, serde_json::json!([]));
    let again = broker
        .command()
        .args(["known-services", "forget", &target])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no remembered certificate"),
        "{}",
        stderr(&again)
    );

    client
        .service_direct(direct(&svc, "", "third", ALICE_PASSWORD))
        .await
        .unwrap();
    assert_eq!(
        known().await,
        serde_json::json!([{"target": target, "fingerprint": svc.fingerprint.to_string()}])
    );
}

/// Re-initializes a test service in place: a new inventory (so a new
/// certificate) served on the same address. Returns once it serves.
async fn reinitialize(svc: &mut common::service::TestService) {
    use common::service::start_service;
    use switchyard::service::rpc::RpcConfig;
    let mut new_svc = start_service(&[], RpcConfig::default());
    new_svc.stop().await;
    svc.stop().await;
    // A consistent snapshot of the new database (its WAL included): the
    // stopped service's last connection may still be checkpointing, and
    // copying its files one by one then can catch a main file not yet
    // written (seen as "not initialized" on a loaded machine).
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(svc.dir.path().join(format!("inv.db{suffix}")));
    }
    let to = svc.dir.path().join("inv.db");
    rusqlite::Connection::open(new_svc.dir.path().join("inv.db"))
        .unwrap()
        .execute("VACUUM INTO ?1", [to.to_str().unwrap()])
        .unwrap();
    // The stopped endpoint lets its UDP port go in the background.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::UdpSocket::bind(svc.addr()).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the port stays taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    svc.restart();
    assert_ne!(svc.fingerprint, new_svc.fingerprint);
    svc.fingerprint = new_svc.fingerprint;
}

/// Connects `request` (a named direct service), then disconnects it: the
/// broker has learned the service's certificate.
async fn connect_then_disconnect(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
    request: pb::ServiceDirectRequest,
) {
    let name = request.name.clone();
    client.service_direct(request).await.unwrap();
    client
        .disconnect(pb::DisconnectRequest { name })
        .await
        .unwrap();
}

/// Waits (bounded) until the broker has no links, so the next call makes a
/// new one instead of sharing.
async fn links_closed(client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status.links.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "links stay: {:?}",
            status.links
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// SIGTERM (or SIGHUP) ends an open terminal with a message, restoring the
/// terminal mode, instead of killing it with the mode left raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_open_terminal_with_a_message() {
    use common::service::start_service;
    use switchyard::service::rpc::RpcConfig;
    use tokio::io::AsyncWriteExt;

    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    broker.client_with_named(&svc, "lab").await;
    let mut child = broker
        .command()
        .args(["terminal", "lab", "core-1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\r").await.unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut screen = Vec::new();
    common::read_screen_until(&mut stdout, &mut screen, 20, "the device's prompt", |s| {
        s.contains("core-1#")
    })
    .await;

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = within(5, "the terminal to end", child.wait_with_output())
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    drop(stdin);
}

/// `connect cloud` waits for an offline service; the first SIGINT ends it
/// non-zero and takes back the named service it had made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sigint_while_connect_cloud_waits_undoes_the_connect() {
    use common::cloud::CloudService;
    let relay = TestRelay::start().await;
    let mut svc = CloudService::start(&relay, "SN-OFF", &[]).await;
    svc.stop().await;
    let config = relay.broker_config(relay.dir.path());
    let config = config.to_str().unwrap().to_string();
    let (broker, _) = TestBroker::start_with(&[], &["--config", &config]).await;
    let token = broker.dir.path().join("token");
    std::fs::write(&token, relay.token("alice@example.com")).unwrap();
    let out = broker
        .command()
        .args(["login", "token", "--token-file"])
        .arg(&token)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let child = broker
        .command()
        .args(["connect", "cloud", "lab", "--serial", "SN-OFF"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = broker.client().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = client
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if status.named_services.iter().any(|n| n.name == "lab") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no named service");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = within(5, "connect to stop", child.wait_with_output())
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("stopped by SIGINT"),
        "{}",
        stderr(&out)
    );
    let status = client
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.named_services.is_empty(),
        "{:?}",
        status.named_services
    );
}

/// A command on a real pseudo-terminal (80x24): its stdin, stdout and
/// stderr are the pty's slave; the test types into and reads the master.
struct Pty {
    master: std::fs::File,
    chunks: std::sync::mpsc::Receiver<Vec<u8>>,
    screen: Vec<u8>,
}

impl Pty {
    fn spawn(mut cmd: tokio::process::Command) -> (Self, tokio::process::Child) {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).unwrap();
        let slave = pty.slave;
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        let child = cmd.spawn().unwrap();
        drop(cmd); // the test keeps no copy of the slave: EOF when the child ends
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, chunks) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once every slave descriptor is closed.
            while let Ok(n @ 1..) = std::io::Read::read(&mut reader, &mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        (
            Self {
                master,
                chunks,
                screen: Vec::new(),
            },
            child,
        )
    }

    fn type_keys(&mut self, keys: &[u8]) {
        std::io::Write::write_all(&mut self.master, keys).unwrap();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Reads (bounded) until the screen after byte `from` contains `what`;
    /// returns where it ends.
    fn expect_after(&mut self, from: usize, what: &str) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(at) =
                String::from_utf8_lossy(&self.screen[from.min(self.screen.len())..]).find(what)
            {
                return from + at + what.len();
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.screen.extend_from_slice(&chunk),
                Err(_) => panic!("no {what:?} on the screen: {:?}", self.text()),
            }
        }
    }

    /// Types `WORD\r` (not a device command) and waits for the device's
    /// answer and the prompt after it: all earlier output has arrived, and
    /// nothing more comes until the next keystroke. Returns the end.
    fn settle(&mut self, from: usize, word: &str) -> usize {
        self.type_keys(format!("{word}\r").as_bytes());
        let at = self.expect_after(from, &format!("marker: {word}\r\n"));
        self.expect_after(at, "core-1#")
    }

    /// Everything until the child closed the terminal (bounded).
    fn read_to_end(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.screen.extend_from_slice(&chunk),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(_) => panic!("the terminal stays open: {:?}", self.text()),
            }
        }
    }
}

/// On a real pty: `~?` shows the escapes without sending anything, `~~`
/// sends one `~` (the device echoes one), a `~` mid-line is plain, and
/// `~.` after Enter ends the terminal at once, exit 0, the terminal mode
/// restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_escapes_on_a_real_pty() {
    use common::service::start_service;
    use switchyard::service::rpc::RpcConfig;

    let svc = start_service(&[], RpcConfig::default());
    let broker = TestBroker::start(&[]).await;
    broker.client_with_named(&svc, "lab").await;
    let mut cmd = broker.command();
    cmd.args(["terminal", "lab", "core-1"]);
    let (mut pty, mut child) = Pty::spawn(cmd);
    pty.type_keys(b"\r");
    let mut at = pty.settle(0, "first");

    pty.type_keys(b"~?");
    at = pty.expect_after(at, "~~  send one ~\r\n");
    pty.type_keys(b"~~");
    pty.type_keys(b"x~y\r");
    // The device got exactly `~x~y` on that line: neither `~?` nor the
    // second `~` of `~~`.
    let start = pty.expect_after(at, "marker: ");
    let end = pty.expect_after(start, "\r\n");
    assert_eq!(
        String::from_utf8_lossy(&pty.screen[start..end]),
        "~x~y\r\n",
        "{:?}",
        pty.text()
    );
    at = pty.expect_after(end, "core-1#");

    pty.type_keys(b"~.");
    let status = within(10, "the terminal to end", child.wait())
        .await
        .unwrap();
    pty.read_to_end();
    assert!(status.success(), "{status:?}: {:?}", pty.text());
    let tail = String::from_utf8_lossy(&pty.screen[at..]).into_owned();
    // Nothing reached the device (no echo), and the message has its line.
    assert_eq!(tail, "\r\nterminal to core-1 ended (~.)\r\n");
}

/// On a real pty: the broker is killed while the terminal is open; the
/// terminal ends at once, non-zero, with a message on a line of its own
/// after the device's prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_going_away_ends_the_terminal_with_a_message_on_its_own_line() {
    use common::service::start_service;
    use switchyard::service::rpc::RpcConfig;

    let svc = start_service(&[], RpcConfig::default());
    let mut broker = TestBroker::start(&[]).await;
    broker.client_with_named(&svc, "lab").await;
    let mut cmd = broker.command();
    cmd.args(["terminal", "lab", "core-1"]);
    let (mut pty, mut child) = Pty::spawn(cmd);
    pty.type_keys(b"\r");
    let at = pty.settle(0, "first");

    broker.child.start_kill().unwrap();
    let status = within(10, "the terminal to end", child.wait())
        .await
        .unwrap();
    pty.read_to_end();
    assert!(!status.success());
    let tail = String::from_utf8_lossy(&pty.screen[at..]).into_owned();
    assert!(
        tail.starts_with("\r\nerror: the terminal to core-1 ended: lost the broker"),
        "{tail:?}"
    );
}

/// Starts `switchyard terminal SERVICE DEVICE` (pipes) and returns once the
/// device's prompt `DEVICE#` is on its screen: the call is open.
async fn open_terminal(
    mut cmd: tokio::process::Command,
    service: &str,
    device: &str,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    use tokio::io::AsyncWriteExt;
    let mut child = cmd
        .args(["terminal", service, device])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\r").await.unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let prompt = format!("{device}#");
    let mut screen = Vec::new();
    common::read_screen_until(&mut stdout, &mut screen, 30, "the device's prompt", |s| {
        s.contains(&prompt)
    })
    .await;
    (child, stdin)
}

fn sigint(child: &tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
}

/// Ctrl-C on a broker with an open terminal: it says it is draining, how
/// many calls it waits for and for how long, and that a second Ctrl-C
/// stops it at once, which it then does (long before the drain timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_broker_with_calls_open_says_it_drains_and_a_second_stops_it() {
    use common::service::start_service;
    use switchyard::service::rpc::RpcConfig;

    let svc = start_service(&[], RpcConfig::default());
    let mut broker = TestBroker::start(&[("SWITCHYARD_BROKER__DRAIN_TIMEOUT_SECS", "120")]).await;
    broker.client_with_named(&svc, "lab").await;
    let (_terminal, _keys) = open_terminal(broker.command(), "lab", "core-1").await;

    sigint(&broker.child);
    let told = "switchyard broker: draining: waiting up to 2m for 1 call to finish \
                (open terminals count; new calls are refused); press Ctrl-C again \
                (or send another SIGTERM) to stop at once";
    common::eventually(10, "the drain notice", || broker.log().contains(told)).await;
    assert!(
        broker.child.try_wait().unwrap().is_none(),
        "it waits for the call"
    );
    sigint(&broker.child);
    let status = within(5, "the broker to stop", broker.child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// The same on the demo (the README's first command), with an open
/// terminal to one of its devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_the_demo_with_a_terminal_open_says_it_drains_and_a_second_stops_it() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let home = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(switchyard_bin())
        .args(["demo", "--devices", "1"])
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_STATE_HOME", home.path())
        .env("SWITCHYARD_BROKER__DRAIN_TIMEOUT_SECS", "120")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let socket = within(60, "demo ready", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("demo exited early");
            if let Some(path) = line.trim().strip_prefix("broker socket:") {
                return PathBuf::from(path.trim());
            }
        }
    })
    .await;
    let mut cmd = tokio::process::Command::new(switchyard_bin());
    cmd.env("SWITCHYARD_SOCKET", &socket);
    let (_terminal, _keys) = open_terminal(cmd, "demo", "sim-001").await;

    let mut errors = BufReader::new(demo.stderr.take().unwrap()).lines();
    sigint(&demo);
    within(10, "the drain notice", async {
        loop {
            let line = errors.next_line().await.unwrap().expect("demo exited");
            if line.contains("switchyard demo: draining: waiting up to 2m for 1 call to finish")
                && line.contains("Ctrl-C again")
            {
                return;
            }
        }
    })
    .await;
    assert!(demo.try_wait().unwrap().is_none(), "it waits for the call");
    sigint(&demo);
    let status = within(5, "the demo to stop", demo.wait()).await.unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// A login restored at the broker's start is "unverified", not plainly
/// "logged in"; used while its relay is down it is "failing" with the
/// error; used once the relay is back, "reachable". A fresh login is
/// "reachable" (its credential was checked by connecting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_restored_logins_real_state() {
    let mut relay = TestRelay::start().await;
    let config = relay.broker_config(relay.dir.path());
    let config = config.to_str().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let state_env = [(
        "SWITCHYARD_BROKER__STATE_DIR",
        state.path().to_str().unwrap(),
    )];
    let (broker, _) = TestBroker::start_with(&state_env, &["--config", &config]).await;
    let token = broker.dir.path().join("token");
    std::fs::write(&token, relay.token("alice@example.com")).unwrap();
    let out = broker
        .command()
        .args(["login", "token", "--token-file"])
        .arg(&token)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let login = |broker: &TestBroker| {
        let socket = broker.socket();
        async move {
            let mut client = switchyard::api::client::connect(&socket).await.unwrap();
            let s = client
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(s.logins.len(), 1, "{:?}", s.logins);
            s.logins[0].clone()
        }
    };
    let fresh = login(&broker).await;
    assert_eq!(
        (fresh.state.as_str(), fresh.reach.as_str()),
        ("logged in", "reachable")
    );
    drop(broker);

    relay.stop().await;
    let (broker, _) = TestBroker::start_with(&state_env, &["--config", &config]).await;
    let restored = login(&broker).await;
    assert_eq!(
        (
            restored.state.as_str(),
            restored.reach.as_str(),
            restored.last_error.as_str()
        ),
        ("logged in", "unverified", "")
    );
    let text = broker.command().arg("status").output().await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("logged in, relay unverified"), "{text}");

    // A use while the relay is down: failing, with the error.
    let otp = || {
        broker
            .command()
            .args(["enroll", "service-otp", "--serial", "SN-R"])
            .output()
    };
    let out = within(60, "the enrollment to fail", otp()).await.unwrap();
    assert!(!out.status.success());
    let failing = login(&broker).await;
    assert_eq!(failing.reach, "failing", "{failing:?}");
    assert!(!failing.last_error.is_empty(), "{failing:?}");
    let text = broker.command().arg("status").output().await.unwrap();
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains(&format!("logged in, relay failing: {}", failing.last_error)),
        "{text}"
    );

    // The relay is back: the next use reaches it.
    relay.restart().await;
    let out = within(60, "the enrollment", otp()).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let back = login(&broker).await;
    assert_eq!(
        (back.reach.as_str(), back.last_error.as_str()),
        ("reachable", "")
    );
}

/// `--version` names the commit and the build date (from `git` in a
/// checkout; `unknown` only when built without one).
#[test]
fn version_names_the_commit_and_the_build_date() {
    let home = tempfile::tempdir().unwrap();
    let out = clean(home.path()).arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let rest = text
        .trim()
        .strip_prefix(&format!(
            "switchyard {} (commit ",
            env!("CARGO_PKG_VERSION")
        ))
        .unwrap_or_else(|| panic!("{text:?}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|r| r.split_once(", built "))
        .unwrap_or_else(|| panic!("{text:?}"));
    let date: Vec<_> = date.split('-').collect();
    assert!(
        date.len() == 3 && date[0].len() == 4 && date.iter().all(|p| p.parse::<u32>().is_ok()),
        "{text:?}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert!(commit.starts_with(&head), "{commit} is not HEAD {head}"),
        None => assert_eq!(commit, "unknown"),
    }
}

/// Completions for bash, zsh and fish come from the clap definitions (they
/// know the newest commands), and `man DIR` writes a page for the command,
/// each subcommand, and every page the systemd units' `Documentation=`
/// names.
#[test]
fn completions_and_man_pages_are_generated_from_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = clean(home.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["known-services", "admin-password", "terminal"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let refused = clean(home.path())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let dir = home.path().join("man1");
    let out = clean(home.path()).arg("man").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "switchyard",
        "switchyard-broker",
        "switchyard-terminal",
        "switchyard-service-device-set",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{page}.1")))
            .unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(text.contains(".TH"), "{page}.1 is not a man page");
    }
    let terminal = std::fs::read_to_string(dir.join("switchyard-terminal.1")).unwrap();
    assert!(
        terminal.contains("~?"),
        "the escapes are in the terminal's page"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let mut named = 0;
    for unit in [
        "switchyard-broker.service",
        "switchyard-service.service",
        "switchyard-relay.service",
        "user/switchyard-broker.service",
    ] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        let docs = text
            .lines()
            .find_map(|l| l.strip_prefix("Documentation="))
            .unwrap_or_else(|| panic!("{unit} has no Documentation="));
        for doc in docs.split_whitespace() {
            let page = doc
                .strip_prefix("man:")
                .and_then(|p| p.strip_suffix("(1)"))
                .unwrap_or_else(|| panic!("{unit}: {doc} is not a section-1 man page"));
            assert!(
                dir.join(format!("{page}.1")).exists(),
                "{unit} names {doc}, which `switchyard man` does not write"
            );
            named += 1;
        }
    }
    assert_eq!(named, 4);
}

/// A home directory with an initialized service inventory (`inv.db`), its
/// admin password file and a one-time password file for `service enroll`.
struct ServiceHome {
    home: tempfile::TempDir,
    admin: String,
    otp: String,
    db: String,
}

impl ServiceHome {
    fn init(otp: &str) -> Self {
        let home = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = home.path().join(name);
            std::fs::write(&path, format!("{text}\n")).unwrap();
            path.to_str().unwrap().to_string()
        };
        let admin = write("admin", "admin password for enrollment");
        let otp = write("otp", otp);
        let db = home.path().join("inv.db").display().to_string();
        let this = Self {
            home,
            admin,
            otp,
            db,
        };
        let init = clean(this.dir())
            .args(this.service_args())
            .arg("init")
            .output()
            .unwrap();
        assert!(init.status.success(), "{}", stderr(&init));
        this
    }

    fn dir(&self) -> &Path {
        self.home.path()
    }

    /// `service --db DB --admin-password-file FILE`.
    fn service_args(&self) -> [&str; 5] {
        [
            "service",
            "--db",
            &self.db,
            "--admin-password-file",
            &self.admin,
        ]
    }
}

/// `service enroll` waits for the relay's answer; against a relay that
/// accepts the connection and never answers, the first SIGINT (or
/// SIGTERM) ends it at once, non-zero, and nothing is enrolled.
async fn first_signal_stops_an_enrollment_waiting_for_the_relay(signal: nix::sys::signal::Signal) {
    let home = ServiceHome::init("not-a-real-otp");
    let (dir, otp) = (home.dir(), home.otp.as_str());
    let svc = home.service_args();

    // A "relay" that takes the TCP connection and then says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let mut cmd = tokio::process::Command::from(clean(dir));
    cmd.args(svc)
        .args(["enroll", "--relay", &url, "--otp-file", otp])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    default_sigint();
    let child = cmd.spawn().unwrap();
    let (_held, _) = within(20, "the enrollment to reach the relay", silent.accept())
        .await
        .unwrap();

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let out = within(
        15,
        "the enrollment to stop on the first signal",
        child.wait_with_output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success(), "{:?}", out.status);

    // Nothing half-done: the inventory still says the service is not
    // enrolled (a later `run --relay` would need a new OTP anyway).
    let show = clean(dir).args(svc).arg("info").output().unwrap();
    assert!(show.status.success(), "{}", stderr(&show));
    let text = String::from_utf8_lossy(&show.stdout).into_owned();
    assert!(!text.contains(&url), "the relay was recorded: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sigint_stops_an_enrollment_waiting_for_the_relay() {
    first_signal_stops_an_enrollment_waiting_for_the_relay(nix::sys::signal::Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_sigterm_stops_an_enrollment_waiting_for_the_relay() {
    first_signal_stops_an_enrollment_waiting_for_the_relay(nix::sys::signal::Signal::SIGTERM).await;
}

/// Gives the children spawned next SIGINT's default action: a test run
/// started in the background by a non-interactive shell inherits SIGINT
/// ignored, which a child keeps across exec (as a background job should),
/// so it would never see the signal these tests send.
fn default_sigint() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: installs the default action, no handler code runs.
    unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) }.unwrap();
}

/// `service enroll` against a relay whose private CA the host does not
/// trust (no `--relay-ca`) says it is the certificate; it used to say only
/// "error sending request for url (…)", which a fresh user could not tell
/// from a dead host. Nothing is lost: the same one-time password then
/// enrolls with `--relay-ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_without_the_relays_private_ca_names_the_certificate() {
    let relay = TestRelay::start().await;
    let home = ServiceHome::init(&relay.otp("SN-CA"));
    let (dir, otp) = (home.dir(), home.otp.as_str());
    let svc = home.service_args();
    let url = relay.url();
    let enroll = ["enroll", "--relay", &url, "--otp-file", otp];

    let untrusted = clean(dir).args(svc).args(enroll).output().unwrap();
    assert!(
        !untrusted.status.success(),
        "enrolled without trusting the CA"
    );
    let error = stderr(&untrusted);
    assert!(
        error.contains("cannot reach the relay") && error.contains("certificate"),
        "{error}"
    );

    let ca = relay.ca_file().display().to_string();
    let trusted = clean(dir)
        .args(svc)
        .args(enroll)
        .args(["--relay-ca", &ca])
        .output()
        .unwrap();
    assert!(trusted.status.success(), "{}", stderr(&trusted));
}

/// The same for a broker's login: a domain naming a relay with a private
/// CA but no `ca_file` fails, naming the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_the_relays_private_ca_names_the_certificate() {
    let relay = TestRelay::start().await;
    let config = relay.dir.path().join("no-ca.toml");
    std::fs::write(
        &config,
        format!(
            "[domains.test]\nurl = \"{}\"\ndefault = true\n",
            relay.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_string();
    let (broker, _) = TestBroker::start_with(&[], &["--config", &config]).await;
    let token = broker.dir.path().join("token");
    std::fs::write(&token, relay.token("alice@example.com")).unwrap();
    let out = within(
        60,
        "the login to fail",
        broker
            .command()
            .args(["login", "token", "--token-file"])
            .arg(&token)
            .output(),
    )
    .await
    .unwrap();
    assert!(!out.status.success(), "logged in without trusting the CA");
    let error = stderr(&out);
    assert!(error.contains("certificate"), "{error}");
}
