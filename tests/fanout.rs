//! Exec fan-out: per-device errors for unknown and forbidden devices,
//! duplicate device names merged, per-request caps, the service-wide bound
//! on device work, memory returned after a burst, and integrated mode's
//! inventory opened with the caller's rights.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::broker::TestBroker;
use common::service::{
    ADMIN_PASSWORD, cheap_kdf, make_inventory, sim_device, ssh_device, start_service,
};
use common::{switchyard_bin, within};
use switchyard::service::drivers::Drivers;
use switchyard::service::drivers::ssh::SshDriverConfig;
use switchyard::service::exec_limits::{ExecCaps, ExecLimits};
use switchyard::service::ops::ServiceOps;
use switchyard::wire::messages::{ErrorCode, Request, RequestEnvelope, Response};
use tokio::io::{AsyncBufReadExt, BufReader};

/// One JSON report per line of `switchyard exec --json` output (the
/// closing `{"summary": ...}` line left out).
fn reports(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|r: &serde_json::Value| r.get("summary").is_none())
        .collect()
}

fn report<'a>(all: &'a [serde_json::Value], device: &str) -> &'a serde_json::Value {
    all.iter()
        .find(|r| r["device"] == device)
        .unwrap_or_else(|| panic!("no report for {device}: {all:?}"))
}

/// `switchyard connect direct NAME` to `svc` as `user` (password from a file).
async fn connect_as(
    broker: &TestBroker,
    addr: std::net::SocketAddr,
    name: &str,
    user: &str,
    pw: &str,
) {
    let file = broker.dir.path().join(format!("{name}-{user}-pw"));
    std::fs::write(&file, format!("{pw}\n")).unwrap();
    let out = broker
        .command()
        .args(["connect", "direct", name, "--host", "127.0.0.1", "--port"])
        .arg(addr.port().to_string())
        .args(["--user", user, "--password-file"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert_ok(&out);
}

/// Panics, with its stderr, unless the command succeeded.
fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker with `addr` as alice's named service `lab`.
async fn broker_with_lab(addr: std::net::SocketAddr) -> TestBroker {
    let broker = TestBroker::start(&[]).await;
    connect_as(
        &broker,
        addr,
        "lab",
        "alice",
        common::service::ALICE_PASSWORD,
    )
    .await;
    broker
}

async fn cli_exec(broker: &TestBroker, args: &[&str]) -> std::process::Output {
    within(60, "exec", broker.command().arg("exec").args(args).output())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_forbidden_devices_fail_on_their_own_through_the_cli() {
    let svc = start_service(&[], Default::default());
    let broker = broker_with_lab(svc.addr()).await;
    let out = cli_exec(
        &broker,
        &[
            "lab",
            "core-1",
            "nosuch",
            "core-1",
            "-c",
            "show version",
            "--json",
        ],
    )
    .await;
    assert!(!out.status.success(), "a failed device fails the command");
    let all = reports(&out.stdout);
    assert_eq!(all.len(), 2, "one report per distinct device: {all:?}");
    let good = report(&all, "core-1");
    assert_eq!(good["status"], "success");
    assert!(
        good["results"][0]["output"]
            .as_str()
            .unwrap()
            .contains("core-1 uptime")
    );
    let bad = report(&all, "nosuch");
    assert_eq!(bad["status"], "failure");
    assert_eq!(bad["error"], "no device \"nosuch\" that you may use");
    assert_eq!(bad["error_code"], "NOT_FOUND");
    assert!(good.get("error_code").is_none(), "{good}");

    // Text output says the same, device by device.
    let out = cli_exec(&broker, &["lab", "core-1", "nosuch", "-c", "show version"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("=== core-1 [1/2] success") || text.contains("=== core-1 [2/2] success"),
        "{text}"
    );
    assert!(
        text.contains("failure: no device \"nosuch\" that you may use"),
        "{text}"
    );

    // bob may use core-* only: edge-1 exists, core-9 does not, and both
    // get the same answer.
    connect_as(&broker, svc.addr(), "bobs", "bob", "bob-password").await;
    let out = cli_exec(
        &broker,
        &[
            "bobs",
            "edge-1",
            "core-9",
            "core-2",
            "-c",
            "show version",
            "--json",
        ],
    )
    .await;
    let all = reports(&out.stdout);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(report(&all, "core-2")["status"], "success");
    for name in ["edge-1", "core-9"] {
        assert_eq!(
            report(&all, name)["error"],
            format!("no device \"{name}\" that you may use")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_devices_fail_on_their_own_in_integrated_mode() {
    let broker = TestBroker::start(&[]).await;
    let out = common::service::connect_integrated_local(&broker).await;
    assert_ok(&out);
    let out = cli_exec(
        &broker,
        &[
            "local",
            "ghost",
            "edge-1",
            "ghost",
            "-c",
            "show clock",
            "--json",
        ],
    )
    .await;
    let all = reports(&out.stdout);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(report(&all, "edge-1")["status"], "success");
    assert_eq!(
        report(&all, "ghost")["error"],
        "no device \"ghost\" that you may use"
    );
    assert_eq!(report(&all, "ghost")["error_code"], "NOT_FOUND");
}

/// A `switchyard service run` process over a fresh inventory with eight
/// extra simulated devices (`bulk-0`..`bulk-7`).
struct ServiceProcess {
    _dir: tempfile::TempDir,
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl ServiceProcess {
    async fn start(env: &[(&str, &str)]) -> Self {
        common::init();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("inv.db");
        let extra: Vec<_> = (0..8).map(|i| sim_device(&format!("bulk-{i}"))).collect();
        drop(make_inventory(&db, &extra));
        let admin = dir.path().join("admin-pw");
        std::fs::write(&admin, format!("{ADMIN_PASSWORD}\n")).unwrap();
        let mut cmd = tokio::process::Command::new(switchyard_bin());
        cmd.arg("service")
            .arg("--db")
            .arg(&db)
            .arg("--admin-password-file")
            .arg(&admin)
            .args(["run", "--listen", "127.0.0.1:0", "--name", "fanout"])
            .env("RUST_LOG", "warn")
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready: serde_json::Value = within(30, "service readiness", async {
            loop {
                let line = lines.next_line().await.unwrap().expect("service exited");
                if let Ok(v) = serde_json::from_str(&line) {
                    break v;
                }
            }
        })
        .await;
        Self {
            _dir: dir,
            child,
            addr: ready["rpc_addr"].as_str().unwrap().parse().unwrap(),
        }
    }

    /// Peak resident memory of the process so far, in bytes (VmHWM).
    fn peak(&self) -> u64 {
        status_bytes(self.child.id().unwrap(), "VmHWM:")
    }

    /// Resident memory of the process, in bytes (VmRSS).
    fn rss(&self) -> u64 {
        common::proc_status_bytes(self.child.id().unwrap(), "VmRSS")
    }
}

/// A size field (`VmHWM:`, `VmRSS:`, in kB) of `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// Issue 22: one command's 1 GiB output passes service, broker and caller
/// (`exec --raw`, real processes all three) with each one's peak resident
/// memory far below it: output streams, nothing holds it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_streams_through_with_bounded_memory_at_every_hop() {
    const SIZE: u64 = 1 << 30;
    const BOUND: u64 = 200 << 20;
    let svc = ServiceProcess::start(&[]).await;
    let broker = TestBroker::start(&[]).await;
    connect_as(
        &broker,
        svc.addr,
        "lab",
        "alice",
        common::service::ALICE_PASSWORD,
    )
    .await;
    let mut cmd = broker.command();
    cmd.args([
        "exec",
        "lab",
        "bulk-0",
        "-c",
        &format!("show bulk {SIZE}"),
        "--raw",
    ])
    .stdout(Stdio::piped());
    let mut caller = cmd.spawn().unwrap();
    let caller_pid = caller.id().unwrap();
    let mut stdout = caller.stdout.take().unwrap();
    let mut received = 0u64;
    let mut caller_peak = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut next_sample = 0;
    within(600, "1 GiB of output", async {
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut stdout, &mut buf)
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            received += n as u64;
            if received >= next_sample {
                // VmHWM is the peak so far: the last sample before the
                // caller exits is its peak over (almost) the whole run.
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{caller_pid}/status"))
                    && s.contains("VmHWM:")
                {
                    caller_peak = status_bytes(caller_pid, "VmHWM:");
                }
                next_sample += 16 << 20;
            }
        }
    })
    .await;
    let status = within(30, "the caller's exit", caller.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(received, SIZE);
    let broker_pid = broker.child.id().unwrap();
    let (service_peak, broker_peak) = (svc.peak(), status_bytes(broker_pid, "VmHWM:"));
    eprintln!(
        "1 GiB through: peak RSS service {} MiB, broker {} MiB, caller {} MiB",
        service_peak >> 20,
        broker_peak >> 20,
        caller_peak >> 20
    );
    assert!(caller_peak > 0, "the caller's memory was sampled");
    for (who, peak) in [
        ("service", service_peak),
        ("broker", broker_peak),
        ("caller", caller_peak),
    ] {
        assert!(peak < BOUND, "{who} peaked at {} MiB", peak >> 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_run_once_and_memory_returns_after_a_burst() {
    let svc = ServiceProcess::start(&[]).await;
    let broker = broker_with_lab(svc.addr).await;
    // Warm up (first connection, first exec), then measure idle.
    let out = cli_exec(&broker, &["lab", "core-1", "-c", "show version"]).await;
    assert_ok(&out);
    let idle = svc.rss();

    // 10,000 names of one device: one result, through the gRPC API (the
    // CLI would merge them itself before sending).
    let mut client = broker.client().await;
    let devices = vec!["core-1".to_string(); 10_000];
    let results = exec_counting(&mut client, devices, &["show version"]).await;
    assert_eq!(
        results.len(),
        1,
        "one result per distinct device: {results:?}"
    );
    assert_eq!(results[0].0, 0, "reported under its first index");
    assert_eq!(results[0].2, "", "no error");
    assert!(results[0].1 > 0, "output arrived");

    // Bursts: eight devices print 60 MB each at once (issue 17's finding:
    // the service peaked at 554 MB holding them), then 24 MB each.
    let bulk: Vec<String> = (0..8).map(|i| format!("bulk-{i}")).collect();
    for size in [60_000_000usize, 24_000_000] {
        let command = format!("show bulk {size}");
        let results = exec_counting(&mut client, bulk.clone(), &[&command]).await;
        assert_eq!(results.len(), 8);
        for (_, bytes, error) in &results {
            assert_eq!(error, "");
            assert_eq!(*bytes, size);
        }
    }
    // Output streams: the service never held the 480 MB, at its peak
    // either (VmHWM), not only after the burst.
    let peak = svc.peak();
    eprintln!("service peak during the bursts: {} MiB", peak >> 20);
    assert!(
        peak < 200 << 20,
        "the service peaked at {} MiB passing 8 x 60 MB on",
        peak >> 20
    );
    eprintln!(
        "idle {} MiB, after the burst {} MiB",
        idle >> 20,
        svc.rss() >> 20
    );
    // Memory goes back near its idle size (generous: idle + 64 MiB, while
    // the burst held 8 x 24 MB of output at least once).
    let bound = idle + 64 * 1024 * 1024;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = svc.rss();
        if now <= bound {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "service RSS stayed at {} MiB after the burst (idle {} MiB)",
            now >> 20,
            idle >> 20
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs an exec through the broker's API, counting output bytes per device
/// instead of keeping them: (device index, bytes, device error) per result.
async fn exec_counting(
    client: &mut switchyard::api::pb::broker_client::BrokerClient<tonic::transport::Channel>,
    devices: Vec<String>,
    commands: &[&str],
) -> Vec<(u32, usize, String)> {
    use switchyard::api::pb;
    let mut stream = client
        .exec(pb::ExecRequest {
            service: common::broker::named("lab"),
            devices,
            commands: commands.iter().map(|c| c.to_string()).collect(),
            timeout_ms: 0,
            max_output_bytes: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = std::collections::HashMap::<u32, usize>::new();
    let mut done = Vec::new();
    while let Some(event) = within(120, "exec event", stream.message()).await.unwrap() {
        match event.event {
            Some(pb::exec_event::Event::Output(o)) => {
                *bytes.entry(event.device).or_default() += o.data.len()
            }
            Some(pb::exec_event::Event::DeviceResult(r)) => {
                let inline: usize = r.commands.iter().map(|c| c.output.len()).sum();
                let total = bytes.remove(&event.device).unwrap_or(0) + inline;
                done.push((event.device, total, r.error));
            }
            Some(pb::exec_event::Event::Summary(_)) | None => {}
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_a_cap_are_refused_naming_the_setting() {
    let svc = ServiceProcess::start(&[
        ("SWITCHYARD_EXEC__MAX_COMMANDS_PER_REQUEST", "2"),
        ("SWITCHYARD_EXEC__MAX_DEVICES_PER_REQUEST", "2"),
    ])
    .await;
    let broker = broker_with_lab(svc.addr).await;
    let out = cli_exec(&broker, &["lab", "core-1", "-c", "a", "-c", "b", "-c", "c"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the request has 3 commands"), "{err}");
    assert!(err.contains("exec.max_commands_per_request"), "{err}");
    // Duplicates do not count against the device cap...
    let out = cli_exec(
        &broker,
        &["lab", "core-1", "core-2", "core-1", "-c", "show clock"],
    )
    .await;
    assert_ok(&out);
    // ...distinct devices do.
    let out = cli_exec(
        &broker,
        &["lab", "core-1", "core-2", "edge-1", "-c", "show clock"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 distinct devices"), "{err}");
    assert!(err.contains("exec.max_devices_per_request"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_work_is_bounded_across_requests() {
    common::init();
    // A TCP listener that never speaks SSH: each device connection hangs
    // in its handshake, holding its slot.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let _accept = switchyard::task::AbortOnDrop::new(tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let inv = make_inventory(
        &dir.path().join("inv.db"),
        &[ssh_device("hang-1", port), ssh_device("hang-2", port)],
    );
    let ops = ServiceOps::with_limits(
        "bounded",
        inv,
        Drivers::new(SshDriverConfig::default()),
        ExecLimits::new(ExecCaps {
            max_concurrent_devices: 1,
            ..ExecCaps::default()
        }),
    );
    let run = |device: &'static str, deadline_ms: u64| {
        let ops = ops.clone();
        async move {
            let (_input, no_input) = tokio::sync::mpsc::channel(1);
            let (out, mut events) = tokio::sync::mpsc::channel(16);
            let envelope = RequestEnvelope {
                deadline_ms: Some(deadline_ms),
                request: Request::Exec {
                    devices: vec![device.into()],
                    commands: vec!["true".into()],
                    timeout_ms: None,
                },
            };
            let principal = ServiceOps::owner();
            ops.handle(&principal, envelope, no_input, out).await;
            events.recv().await
        }
    };
    // One request holds the only slot: its device hangs in the handshake.
    let holder = switchyard::task::AbortOnDrop::new(tokio::spawn(run("hang-1", 60_000)));
    common::eventually(20, "the first device connects", || {
        accepted.load(Ordering::SeqCst) == 1
    })
    .await;
    // Another request's device waits for the slot until its deadline, and
    // never connects.
    let r = within(30, "the second request ends", run("hang-2", 1500)).await;
    assert!(
        matches!(&r, Some(Response::Error(e)) if e.code == ErrorCode::DeadlineExceeded),
        "{r:?}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "with one device slot taken, the second device never connected"
    );
    assert_eq!(ops.limits().busy_slots(), 1);
    drop(holder);
    common::eventually(20, "the slot is freed", || ops.limits().busy_slots() == 0).await;
}

/// Runs `switchyard` as uid/gid 65534 (nobody), with no supplementary groups.
fn as_nobody(broker: &TestBroker) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(switchyard_bin())
        .arg("--socket")
        .arg(broker.socket())
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME")
        .kill_on_drop(true);
    cmd
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_private_files_cannot_be_probed_through_integrated_mode() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a second uid");
        return;
    }
    let broker = TestBroker::start(&[]).await;
    chmod(&broker.socket(), 0o666);
    chmod(broker.dir.path(), 0o755);
    // Root's private directory holds an inventory.
    let private = broker.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let existing = private.join("inv.db");
    drop(make_inventory(&existing, &[]));
    let missing = private.join("nothing.db");
    let pw = broker.dir.path().join("admin-pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    chmod(&pw, 0o644);

    let attempt = |db: PathBuf| {
        let mut cmd = as_nobody(&broker);
        cmd.args(["connect", "integrated", "probe", "--db"])
            .arg(db)
            .arg("--admin-password-file")
            .arg(&pw);
        cmd
    };
    let mut answers = Vec::new();
    for db in [&existing, &missing] {
        let out = within(30, "connect", attempt(db.clone()).output())
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains(&format!(
                "cannot open inventory {} as uid 65534: not found or not permitted",
                db.display()
            )),
            "{err}"
        );
        answers.push(err.replace(&db.display().to_string(), "PATH"));
    }
    assert_eq!(answers[0], answers[1], "one answer for both");

    // A file nobody owns, on a path nobody may search, opens.
    let theirs = broker.dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let db = theirs.join("inv.db");
    let mut inv = switchyard::service::inventory::Inventory::init_with(
        &db,
        &switchyard::secret::Secret::new(ADMIN_PASSWORD),
        cheap_kdf(),
    )
    .unwrap();
    inv.add_device(&sim_device("n-1")).unwrap();
    drop(inv);
    for entry in std::fs::read_dir(&theirs).unwrap() {
        nix::unistd::chown(
            &entry.unwrap().path(),
            Some(65534.into()),
            Some(65534.into()),
        )
        .unwrap();
    }
    nix::unistd::chown(&theirs, Some(65534.into()), Some(65534.into())).unwrap();
    let out = within(30, "connect", attempt(db).output()).await.unwrap();
    assert_ok(&out);
}

#[test]
fn worker_threads_beyond_the_maximum_are_refused_with_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(switchyard_bin())
        .args(["broker", "--socket"])
        .arg(dir.path().join("b.sock"))
        .env("SWITCHYARD_RUNTIME__WORKER_THREADS", "20000")
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runtime.worker_threads is 20000; at most 1024"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = std::process::Command::new(switchyard_bin())
        .args(["broker", "--socket"])
        .arg(dir.path().join("b.sock"))
        .env("TOKIO_WORKER_THREADS", "20000")
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOKIO_WORKER_THREADS=20000"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
