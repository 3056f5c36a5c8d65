//! The broker's SSH proxy with stock OpenSSH `ssh` as the client: a real
//! broker process, a service on loopback QUIC, a stock OpenSSH device and
//! the simulator. Exec with output and exit status, an interactive shell
//! over `ssh -tt`, key and password logins and their refusals, clear
//! errors for unknown targets, a host key that survives a restart, and
//! stock `sftp` and `scp` (its SFTP mode and `-O`) carrying files both
//! ways through the device's SFTP subsystem (or a clear error without one).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::broker::{TestBroker, status};
use common::service::{TestService, sim_device, sshd_device, start_service};
use common::sshd::Sshd;
use common::within;
use switchyard::service::rpc::RpcConfig;
use tokio::io::AsyncWriteExt;

/// A broker with the named service `lab` (`linux-1` on stock OpenSSH,
/// `sim-1` simulated) and a client key pair in `dir`.
struct Lab {
    sshd: Sshd,
    svc: TestService,
    broker: TestBroker,
    dir: tempfile::TempDir,
}

fn keygen(path: &Path) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "proxy-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

impl Lab {
    async fn start() -> Self {
        Self::start_with("").await
    }

    /// [`Lab::start`] with `extra` sshd_config lines for the device (e.g.
    /// its `Subsystem sftp` line; without one it has no SFTP).
    async fn start_with(sshd_extra: &str) -> Self {
        let sshd = Sshd::start_with(10, sshd_extra).await;
        let svc = start_service(
            &[sshd_device("linux-1", sshd.port), sim_device("sim-1")],
            RpcConfig::default(),
        );
        let broker = TestBroker::start(&[]).await;
        let out = broker.connect_direct(&svc, "lab", &[]).await;
        assert!(out.status.success(), "{out:?}");
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("key"));
        keygen(&dir.path().join("stranger"));
        std::fs::copy(
            dir.path().join("key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        Self {
            sshd,
            svc,
            broker,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `switchyard ssh-proxy ARGS...`.
    async fn cli(&self, args: &[&str]) -> std::process::Output {
        within(
            30,
            "switchyard ssh-proxy",
            self.broker.command().arg("ssh-proxy").args(args).output(),
        )
        .await
        .unwrap()
    }

    /// Starts the proxy on a free port with the test's authorized keys
    /// (and `extra` options); returns its port and host key fingerprint.
    async fn start_proxy(&self, extra: &[&str]) -> (u16, String) {
        let keys = self.path("authorized_keys");
        let mut args = vec!["start", "--authorized-keys", keys.to_str().unwrap()];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let out = self.cli(&args).await;
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        // "127.0.0.1:PORT  host key SHA256:..."
        let first = text.lines().next().unwrap();
        let (addr, rest) = first.split_once("  host key ").expect(first);
        let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        (port, rest.trim().to_string())
    }

    /// `ssh` (stock OpenSSH) to the proxy as `user` with `key`, in batch
    /// mode, trusting the host key on first use in the test's own
    /// known_hosts; `extra` options override these.
    fn ssh(&self, port: u16, key: &str, user: &str, extra: &[&str]) -> tokio::process::Command {
        let mut cmd = self.openssh("ssh", key, extra);
        cmd.args(["-p", &port.to_string()])
            .arg(format!("{user}@127.0.0.1"));
        cmd
    }

    /// A stock OpenSSH `program` (`ssh`, `sftp`, `scp`) with the test's
    /// options: `key` only, batch mode, the test's own known_hosts
    /// (trusting the proxy's key on first use); `extra` go first (in
    /// OpenSSH the first value given wins).
    fn openssh(&self, program: &str, key: &str, extra: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(extra)
            .args(["-F", "/dev/null", "-i"])
            .arg(self.path(key))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                "-o",
            ])
            .arg(format!(
                "UserKnownHostsFile={}",
                self.path("known_hosts").display()
            ))
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

async fn run(mut cmd: tokio::process::Command) -> std::process::Output {
    within(60, "ssh", cmd.output()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_exec_gives_output_and_exit_status_on_openssh_and_the_simulator() {
    let lab = Lab::start().await;
    let (port, _) = lab.start_proxy(&[]).await;

    let mut cmd = lab.ssh(port, "key", "linux-1@lab", &[]);
    cmd.arg("echo hello; echo oops >&2; exit 3");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(text(&out.stderr), "oops\n");

    let mut cmd = lab.ssh(port, "key", "linux-1@lab", &[]);
    cmd.arg("echo ok");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"ok\n");

    // The client's input reaches the command, and its end ends it.
    let mut cmd = lab.ssh(port, "key", "linux-1@lab", &[]);
    cmd.arg("wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[7u8; 100_000]).await.unwrap();
    drop(stdin);
    let out = within(60, "ssh wc", child.wait_with_output())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stdout).trim(), "100000");

    // The simulator: its output, and its failure status for bad input.
    let mut cmd = lab.ssh(port, "key", "sim-1@lab", &[]);
    cmd.arg("show version");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).contains("sim-1 uptime"), "{out:?}");
    let mut cmd = lab.ssh(port, "key", "sim-1@lab", &[]);
    cmd.arg("show bogus");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stdout).contains("% Invalid input"), "{out:?}");

    // Counted in `status`.
    let s = status(&lab.broker).await;
    let proxy = s.ssh_proxy.expect("ssh proxy in status");
    assert!(proxy.connections_total >= 5, "{proxy:?}");
    assert_eq!(proxy.connections_failed, 0, "{proxy:?}");
    let shown = lab.broker.command().arg("status").output().await.unwrap();
    assert!(
        text(&shown.stdout).contains(&format!("ssh proxy: 127.0.0.1:{port}")),
        "{shown:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_shell_over_ssh_tt_runs_piped_input() {
    let lab = Lab::start().await;
    let (port, _) = lab.start_proxy(&[]).await;
    for (user, input, expect) in [
        (
            "linux-1@lab",
            &b"echo marker-$((6*7))\nexit\n"[..],
            "marker-42",
        ),
        ("sim-1@lab", &b"show version\rexit\r"[..], "sim-1 uptime"),
    ] {
        let mut cmd = lab.ssh(port, "key", user, &["-tt"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).await.unwrap();
        let out = within(60, "ssh -tt", child.wait_with_output())
            .await
            .unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(0), "{user}: {out:?}");
        assert!(text(&out.stdout).contains(expect), "{user}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_and_passwords_are_refused_and_the_right_password_works() {
    let lab = Lab::start().await;
    std::fs::write(lab.path("pw"), "proxy-secret\n").unwrap();
    let pw = lab.path("pw");
    let (port, _) = lab
        .start_proxy(&["--password-file", pw.to_str().unwrap()])
        .await;

    let mut cmd = lab.ssh(port, "stranger", "linux-1@lab", &[]);
    cmd.arg("echo in");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");

    // Passwords through SSH_ASKPASS (no terminal needed).
    let askpass = lab.path("askpass");
    for (given, works) in [("wrong-secret", false), ("proxy-secret", true)] {
        std::fs::write(&askpass, format!("#!/bin/sh\necho {given}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut cmd = lab.ssh(
            port,
            "stranger",
            "linux-1@lab",
            &[
                "-o",
                "BatchMode=no",
                "-o",
                "PreferredAuthentications=password",
                "-o",
                "NumberOfPasswordPrompts=1",
            ],
        );
        cmd.arg("echo in")
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
        let out = run(cmd).await;
        if works {
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            assert_eq!(out.stdout, b"in\n");
        } else {
            assert_eq!(out.status.code(), Some(255), "{out:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
        }
    }
    let proxy = status(&lab.broker).await.ssh_proxy.unwrap();
    assert_eq!(proxy.connections_failed, 2, "{proxy:?}");
    assert!(proxy.password && proxy.authorized_keys == 1, "{proxy:?}");
    // The password never reaches the log.
    assert!(!lab.broker.log().contains("proxy-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_services_and_user_names_say_so_on_stderr() {
    let lab = Lab::start().await;
    let (port, _) = lab.start_proxy(&[]).await;
    for (user, says) in [
        ("nosuch@lab", "no device \"nosuch\""),
        ("linux-1@nope", "no named service \"nope\""),
        ("linux-1", "log in as DEVICE@SERVICE"),
    ] {
        for tty in [false, true] {
            let extra: &[&str] = if tty { &["-tt"] } else { &[] };
            let mut cmd = lab.ssh(port, "key", user, extra);
            if !tty {
                cmd.arg("echo hi");
            }
            let out = run(cmd).await;
            assert_eq!(out.status.code(), Some(255), "{user}: {out:?}");
            // With a pty, ssh merges the device's stderr into stdout.
            let both = text(&out.stderr) + &text(&out.stdout);
            assert!(
                both.contains("switchyard ssh-proxy: ") && both.contains(says),
                "{user}: {out:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_key_is_the_same_after_a_broker_restart() {
    let mut lab = Lab::start().await;
    let (port, fingerprint) = lab.start_proxy(&[]).await;
    let mut cmd = lab.ssh(port, "key", "linux-1@lab", &[]);
    cmd.arg("echo first");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    assert!(known.contains("ssh-ed25519"), "{known}");

    // Stop and start again: the same key; and again after a restart.
    assert!(lab.cli(&["stop"]).await.status.success());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    );
    let stopped = lab.cli(&["stop"]).await;
    assert!(
        text(&stopped.stderr).contains("no SSH proxy"),
        "{stopped:?}"
    );
    lab.broker.kill().await;
    lab.broker.restart().await;
    let out = lab.broker.connect_direct(&lab.svc, "lab", &[]).await;
    assert!(out.status.success(), "{out:?}");
    let (port, again) = lab
        .start_proxy(&["--listen", &format!("127.0.0.1:{port}")])
        .await;
    assert_eq!(again, fingerprint);
    // A changed key would fail here: strict checking against the file.
    let mut cmd = lab.ssh(
        port,
        "key",
        "linux-1@lab",
        &["-o", "StrictHostKeyChecking=yes"],
    );
    cmd.arg("echo second");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"second\n");
    assert_eq!(
        std::fs::read_to_string(lab.path("known_hosts")).unwrap(),
        known
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_w_reaches_a_device_port_through_the_proxy_and_refusals_say_why() {
    let lab = Lab::start().await;
    let (port, _) = lab.start_proxy(&[]).await;
    // `-W`: ssh's stdin and stdout are the device's SSH port (allowed by
    // default), whose banner comes first.
    let to = format!("linux-1:{}", lab.sshd.port);
    let mut cmd = lab.ssh(port, "key", "linux-1@lab", &["-W", &to]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let banner = within(30, "the device's banner", lines.next_line())
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    drop(child.stdin.take());
    let _ = child.start_kill();

    // A port the service does not allow: the channel is refused with the
    // service's reason (which ssh logs at INFO).
    let extra = ["-o", "LogLevel=INFO", "-W", "linux-1:1"];
    let out = run(lab.ssh(port, "key", "linux-1@lab", &extra)).await;
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("open failed") && err.contains("forward_ports"),
        "{out:?}"
    );
}

/// The device's SFTP server (Debian's OpenSSH path).
const SFTP: &str = "Subsystem sftp /usr/lib/openssh/sftp-server";

/// Pseudo-random bytes (xorshift), so a lost or repeated block shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_and_scp_carry_10_mb_both_ways_through_the_proxy() {
    let lab = Lab::start_with(SFTP).await;
    let (port, _) = lab.start_proxy(&[]).await;
    let port = port.to_string();
    let original = lab.path("original.bin");
    std::fs::write(&original, pattern(10 << 20)).unwrap();
    let want = sha256_file(&original);
    let scratch = lab.sshd.scratch();

    // sftp, as DEVICE@SERVICE@HOST: a batch that puts and gets back.
    let remote = scratch.join("by-sftp.bin");
    let back = lab.path("back-sftp.bin");
    let batch = lab.path("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            original.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();
    let batch = batch.to_str().unwrap();
    let mut cmd = lab.openssh("sftp", "key", &["-P", &port, "-b", batch]);
    cmd.arg("linux-1@lab@127.0.0.1");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "sftp: {out:?}");
    assert_eq!(sha256_file(&remote), want, "sftp put");
    assert_eq!(sha256_file(&back), want, "sftp get");

    // scp in its default SFTP mode, then in the legacy protocol (`-O`:
    // `scp -t`/`-f` run as exec commands), each both ways.
    for (mode, extra) in [("sftp-mode", &[][..]), ("legacy", &["-O"][..])] {
        let remote = scratch.join(format!("by-scp-{mode}.bin"));
        let back = lab.path(&format!("back-scp-{mode}.bin"));
        let spec = format!("linux-1@lab@127.0.0.1:{}", remote.display());
        let mut args = vec!["-q", "-P", &port];
        args.extend_from_slice(extra);
        let mut cmd = lab.openssh("scp", "key", &args);
        cmd.arg(&original).arg(&spec);
        let out = run(cmd).await;
        assert_eq!(out.status.code(), Some(0), "scp {mode} up: {out:?}");
        assert_eq!(sha256_file(&remote), want, "scp {mode} up");
        let mut cmd = lab.openssh("scp", "key", &args);
        cmd.arg(&spec).arg(&back);
        let out = run(cmd).await;
        assert_eq!(out.status.code(), Some(0), "scp {mode} down: {out:?}");
        assert_eq!(sha256_file(&back), want, "scp {mode} down");
    }
    let proxy = status(&lab.broker).await.ssh_proxy.unwrap();
    assert_eq!(proxy.connections_failed, 0, "{proxy:?}");
}

/// The cipher `ssh -v` says it negotiated in `direction` (`client->server`
/// or `server->client`).
fn negotiated_cipher(stderr: &str, direction: &str) -> String {
    let tag = format!("kex: {direction} cipher: ");
    let line = stderr
        .lines()
        .find_map(|l| l.split_once(tag.as_str()).map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no {tag:?} in {stderr}"));
    line.split_whitespace().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_clients_get_aes_gcm_where_the_cpu_has_aes_instructions() {
    let lab = Lab::start().await;
    let (port, _) = lab.start_proxy(&[]).await;
    let mut cmd = lab.ssh(port, "key", "linux-1@lab", &["-o", "LogLevel=DEBUG1"]);
    cmd.arg("echo ok");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"ok\n");
    let stderr = text(&out.stderr);
    let want_gcm = switchyard::broker::ssh_proxy::server::aes_hardware();
    for direction in ["client->server", "server->client"] {
        let cipher = negotiated_cipher(&stderr, direction);
        if want_gcm {
            // OpenSSH's own order puts ChaCha20 and AES-CTR first: it
            // takes AES-GCM only if nothing else is offered.
            assert!(
                cipher.starts_with("aes") && cipher.ends_with("-gcm@openssh.com"),
                "{cipher}"
            );
        } else {
            assert_eq!(cipher, "chacha20-poly1305@openssh.com");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_sftp_gives_a_clear_error_and_legacy_scp_still_works() {
    // No `Subsystem` line: this device refuses SFTP.
    let lab = Lab::start().await;
    let (port, _) = lab.start_proxy(&[]).await;
    let port = port.to_string();
    let says = "switchyard ssh-proxy: linux-1 has no sftp subsystem";

    let mut cmd = lab.openssh("sftp", "key", &["-P", &port, "-b", "/dev/null"]);
    cmd.arg("linux-1@lab@127.0.0.1");
    let out = run(cmd).await;
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stderr).contains(says), "{out:?}");

    let file = lab.path("small.txt");
    std::fs::write(&file, b"through legacy scp\n").unwrap();
    let remote = lab.sshd.scratch().join("small.txt");
    let spec = format!("linux-1@lab@127.0.0.1:{}", remote.display());
    let mut cmd = lab.openssh("scp", "key", &["-q", "-P", &port]);
    cmd.arg(&file).arg(&spec);
    let out = run(cmd).await;
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stderr).contains(says), "{out:?}");
    assert!(!remote.exists());

    let mut cmd = lab.openssh("scp", "key", &["-q", "-O", "-P", &port]);
    cmd.arg(&file).arg(&spec);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(std::fs::read(&remote).unwrap(), b"through legacy scp\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_reaches_a_device_of_an_integrated_service() {
    // The same device also as service `local`, run inside the broker: the
    // subsystem's channel is handed over in-process, no link stream.
    let lab = Lab::start_with(SFTP).await;
    let out = lab
        .broker
        .connect_integrated("local", &[sshd_device("linux-1", lab.sshd.port)])
        .await;
    assert!(out.status.success(), "{out:?}");
    let (port, _) = lab.start_proxy(&[]).await;
    let original = lab.path("original.bin");
    std::fs::write(&original, pattern(1 << 20)).unwrap();
    let remote = lab.sshd.scratch().join("integrated.bin");
    let back = lab.path("back.bin");
    let batch = lab.path("batch");
    let (o, r, b) = (original.display(), remote.display(), back.display());
    std::fs::write(&batch, format!("put {o} {r}\nget {r} {b}\n")).unwrap();
    let batch = batch.to_str().unwrap();
    let mut cmd = lab.openssh("sftp", "key", &["-P", &port.to_string(), "-b", batch]);
    cmd.arg("linux-1@local@127.0.0.1");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(sha256_file(&remote), sha256_file(&original));
    assert_eq!(sha256_file(&back), sha256_file(&original));
}
