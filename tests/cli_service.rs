//! `switchyard service ...` as a user runs it: the real binary, real files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{init, switchyard_bin};
use switchyard::sim::server::{SimFleet, SimFleetConfig};

const ADMIN_PW: &str = "Adm1n-marker-never-logged";
const DEVICE_PW: &str = "Dev1ce-marker-never-logged";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin-pw"), format!("{ADMIN_PW}\n")).unwrap();
        std::fs::write(dir.path().join("wrong-pw"), "nope\n").unwrap();
        std::fs::write(dir.path().join("device-pw"), format!("{DEVICE_PW}\n")).unwrap();
        std::fs::write(dir.path().join("sim-pw"), "admin\n").unwrap();
        std::fs::write(dir.path().join("user-pw"), "user-password\n").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("inv.db")
    }

    /// Runs `switchyard service <args>` with the inventory and admin
    /// password, maximum logging, and no config file of the host's.
    fn service(&self, args: &[&str]) -> Output {
        self.service_with_admin("admin-pw", args)
    }

    fn service_with_admin(&self, pw_file: &str, args: &[&str]) -> Output {
        std::process::Command::new(switchyard_bin())
            .arg("service")
            .arg("--db")
            .arg(self.db())
            .arg("--admin-password-file")
            .arg(self.path(pw_file))
            .args(args)
            .env("RUST_LOG", "trace")
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap()
    }

    /// `device add NAME --host 127.0.0.1 [--port PORT] --username USER
    /// --password-file FILE` and then `extra`.
    fn add_device(
        &self,
        name: &str,
        port: Option<u16>,
        user: &str,
        password_file: &std::path::Path,
        extra: &[&str],
    ) -> Output {
        let port = port.map(|p| p.to_string());
        let mut args = vec!["device", "add", name, "--host", "127.0.0.1"];
        if let Some(port) = &port {
            args.extend(["--port", port.as_str()]);
        }
        args.extend(["--username", user, "--password-file"]);
        args.push(password_file.to_str().unwrap());
        args.extend(extra);
        self.service(&args)
    }
}

/// `out` is a failure whose stderr says `want`.
fn fails(out: Output, want: &str) {
    assert!(!out.status.success(), "should fail: {want}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(want), "{err}");
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn assert_no_secrets(out: &Output) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(ADMIN_PW), "admin password leaked: {text}");
        assert!(!text.contains(DEVICE_PW), "device password leaked: {text}");
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn admin_commands_manage_devices_and_users() {
    let env = Env::new();
    let out = env.service(&["init"]);
    assert!(ok(&out).contains("TLS fingerprint"));
    assert_no_secrets(&out);

    let info = json(&ok(&env.service(&["info", "--json"])));
    let fingerprint = info["tls_fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 95);

    let pw = env.path("device-pw");
    let out = env.service(&[
        "device",
        "add",
        "core-1",
        "--host",
        "192.0.2.10",
        "--port",
        "2222",
        "--device-type",
        "ios-xe",
        "--username",
        "netops",
        "--password-file",
        pw.to_str().unwrap(),
        "--attr",
        "site=lab",
        "--attr",
        "role=core",
    ]);
    ok(&out);
    assert_no_secrets(&out);
    ok(&env.service(&["device", "add", "sim-a", "--driver", "simulator"]));

    let duplicate = env.service(&["device", "add", "core-1", "--host", "x"]);
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));

    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "core-1");
    assert_eq!(list[0]["device_type"], "IOS-XE");
    assert_eq!(list[0]["port"], 2222);
    assert_eq!(list[0]["attributes"]["role"], "core");
    assert_eq!(list[0]["has_password"], true);
    assert_eq!(list[1]["driver"], "simulator");
    assert!(!list[0].to_string().contains(DEVICE_PW));

    let upw = env.path("user-pw");
    ok(&env.service(&[
        "user",
        "add",
        "alice",
        "--password-file",
        upw.to_str().unwrap(),
        "--devices",
        "core-*",
    ]));
    let users = json(&ok(&env.service(&["user", "list", "--json"])));
    assert_eq!(users[0]["name"], "alice");
    assert_eq!(users[0]["devices"][0], "core-*");
    assert!(
        !users.to_string().contains("argon2"),
        "hash must not be listed"
    );

    ok(&env.service(&["user", "remove", "alice"]));
    ok(&env.service(&["device", "remove", "sim-a"]));
    let info = json(&ok(&env.service(&["info", "--json"])));
    assert_eq!(info["devices"], 1);
    assert_eq!(info["remote_users"], 0);
    assert_eq!(info["tls_fingerprint"], fingerprint, "identity is stable");

    let unknown = env.service(&["device", "remove", "ghost"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no device named \"ghost\""));
}

#[test]
fn legacy_algorithms_flag_is_stored_per_device() {
    let env = Env::new();
    ok(&env.service(&["init"]));
    let add = |name: &str, flag: Option<&str>| {
        let mut args = vec!["device", "add", name, "--host", "192.0.2.1"];
        args.extend(flag);
        ok(&env.service(&args));
    };
    add("a-old", Some("--legacy-algorithms"));
    add("b-refuses", Some("--legacy-algorithms=false"));
    add("c-default", None);
    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    assert_eq!(list[0]["legacy_algorithms"], true);
    assert_eq!(list[1]["legacy_algorithms"], false);
    assert!(list[2]["legacy_algorithms"].is_null(), "{list}");
    let bad = env.service(&[
        "device",
        "add",
        "d",
        "--host",
        "h",
        "--legacy-algorithms=maybe",
    ]);
    assert!(!bad.status.success());
}

#[test]
fn device_list_text_shows_session_and_whether_an_enable_secret_is_set() {
    const ENABLE: &str = "En4ble-marker-never-listed";
    let env = Env::new();
    ok(&env.service(&["init"]));
    let en = env.path("enable-pw");
    std::fs::write(&en, format!("{ENABLE}\n")).unwrap();
    let en = en.to_str().unwrap();
    let add = |args: &[&str]| {
        let mut all = vec!["device", "add"];
        all.extend_from_slice(args);
        ok(&env.service(&all));
    };
    // IOS-XE: a shell by its type, with an enable secret.
    add(&[
        "a-ios",
        "--host",
        "h",
        "--device-type",
        "IOS-XE",
        "--enable-password-file",
        en,
    ]);
    // LINUX: exec channels by its type; overridden to a shell.
    add(&["b-linux", "--host", "h", "--device-type", "LINUX"]);
    add(&[
        "c-linux",
        "--host",
        "h",
        "--device-type",
        "LINUX",
        "--session",
        "shell",
    ]);
    // IOS-XE overridden to exec.
    add(&[
        "d-ios",
        "--host",
        "h",
        "--device-type",
        "IOS",
        "--session",
        "exec",
    ]);
    // Telnet: always a shell, port 23 by default.
    add(&["e-telnet", "--driver", "telnet", "--host", "h"]);
    add(&[
        "f-sim",
        "--driver",
        "simulator",
        "--attr",
        "site=lab",
        "--attr",
        "role=core",
    ]);

    let out = env.service(&["device", "list"]);
    let text = ok(&out);
    assert!(
        !text.contains(ENABLE),
        "the enable secret is never listed: {text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column: {text}"))
    };
    let (session, enable, port) = (col("SESSION"), col("ENABLE"), col("PORT"));
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
    };
    let cells = |name: &str| (row(name)[session], row(name)[enable]);
    assert_eq!(cells("a-ios"), ("shell", "set"), "{text}");
    assert_eq!(cells("b-linux"), ("exec", "-"), "{text}");
    assert_eq!(cells("c-linux"), ("shell", "-"), "{text}");
    assert_eq!(cells("d-ios"), ("exec", "-"), "{text}");
    assert_eq!(cells("e-telnet"), ("shell", "-"), "{text}");
    assert_eq!(row("e-telnet")[port], "23", "{text}");
    assert_eq!(cells("f-sim"), ("-", "-"), "{text}");
    // Attributes (issue 20, item 18): `key=value` by key, "-" for none.
    let attributes = col("ATTRIBUTES");
    assert_eq!(row("f-sim")[attributes], "role=core,site=lab", "{text}");
    assert_eq!(row("b-linux")[attributes], "-", "{text}");
}

#[test]
fn wrong_admin_password_is_one_clear_line() {
    let env = Env::new();
    ok(&env.service(&["init"]));
    let out = env.service_with_admin("wrong-pw", &["device", "add", "r1", "--host", "h"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: wrong admin password"), "{stderr}");
    assert_no_secrets(&out);
}

#[test]
fn missing_inventory_names_the_init_command() {
    let env = Env::new();
    let out = env.service(&["device", "list"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("switchyard service init --db"), "{stderr}");
}

#[test]
fn admin_password_arrives_as_a_systemd_credential() {
    let env = Env::new();
    ok(&env.service(&["init"]));
    let creds = env.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(env.path("admin-pw"), creds.join("admin-password")).unwrap();
    let out = std::process::Command::new(switchyard_bin())
        .args(["service", "--db"])
        .arg(env.db())
        .args(["device", "add", "r9", "--driver", "simulator"])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("XDG_CONFIG_HOME", env.dir.path())
        .output()
        .unwrap();
    ok(&out);
}

#[test]
fn config_errors_from_the_environment_are_reported() {
    let env = Env::new();
    let out = std::process::Command::new(switchyard_bin())
        .args(["service", "--db"])
        .arg(env.db())
        .arg("info")
        .env("XDG_CONFIG_HOME", env.dir.path())
        .env("SWITCHYARD_SSH__MAX_SESSIONS_PER_CONNECTION", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ssh.max_sessions_per_connection"),
        "{stderr}"
    );
}

/// The device reports of `exec --json` (the closing summary line left out).
fn exec_json(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(json)
        .filter(|r| r.get("summary").is_none())
        .collect()
}

#[test]
fn local_exec_on_the_in_process_simulator() {
    let env = Env::new();
    ok(&env.service(&["init"]));
    ok(&env.service(&["device", "add", "edge-1", "--driver", "simulator"]));
    let out = env.service(&[
        "exec",
        "edge-1",
        "-c",
        "show version",
        "-c",
        "show nope",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "a failed command fails the run");
    let reports = exec_json(&out);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["device"], "edge-1");
    assert_eq!(reports[0]["status"], "failure");
    assert_eq!(reports[0]["results"][0]["status"], "success");
    assert!(
        reports[0]["results"][0]["output"]
            .as_str()
            .unwrap()
            .contains("edge-1 uptime")
    );
    assert_eq!(reports[0]["results"][1]["status"], "failure");

    let out = env.service(&["exec", "ghost", "-c", "show version"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("failure: no device \"ghost\" that you may use")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_exec_over_ssh_records_the_host_key() {
    init();
    let fleet = SimFleet::start(SimFleetConfig {
        count: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let env = Env::new();
    ok(&env.service(&["init"]));
    let pw = env.path("sim-pw");
    for ep in fleet.endpoints() {
        ok(&env.service(&[
            "device",
            "add",
            &ep.name,
            "--host",
            "127.0.0.1",
            "--port",
            &ep.port.to_string(),
            "--username",
            "admin",
            "--password-file",
            pw.to_str().unwrap(),
        ]));
    }
    ok(&env.service(&[
        "device",
        "add",
        "dead",
        "--host",
        "127.0.0.1",
        "--port",
        &dead_port().to_string(),
        "--username",
        "u",
        "--password-file",
        pw.to_str().unwrap(),
    ]));

    let env2 = &env;
    let out = tokio::task::spawn_blocking({
        let db = env2.db();
        let admin = env2.path("admin-pw");
        let home = env2.dir.path().to_path_buf();
        move || run_exec(&db, &admin, &home)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "the dead device fails the run");
    let mut reports = exec_json(&out);
    reports.sort_by_key(|r| r["device"].as_str().unwrap().to_string());
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0]["status"], "failure");
    assert!(
        reports[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect to dead")
    );
    for r in &reports[1..] {
        assert_eq!(r["status"], "success", "{r}");
        assert!(
            r["results"][0]["output"]
                .as_str()
                .unwrap()
                .contains("uptime")
        );
    }
    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    let sim1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "sim-001")
        .unwrap();
    assert!(
        sim1["host_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    fleet.shutdown().await;
}

fn run_exec(db: &Path, admin: &Path, home: &Path) -> Output {
    std::process::Command::new(switchyard_bin())
        .args(["service", "--db"])
        .arg(db)
        .arg("--admin-password-file")
        .arg(admin)
        .args([
            "exec",
            "sim-001",
            "sim-002",
            "dead",
            "-c",
            "show version",
            "--json",
        ])
        .env("XDG_CONFIG_HOME", home)
        .output()
        .unwrap()
}

fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Issue 15 input 1 end to end: the inventory's opt-in reaches the driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_exec_reaches_a_sha1_kex_device_only_with_the_opt_in() {
    init();
    let sshd = Sshd::start_with(10, "KexAlgorithms diffie-hellman-group14-sha1").await;
    let env = Env::new();
    ok(&env.service(&["init"]));
    let pw = env.path("sshd-pw");
    std::fs::write(&pw, format!("{TEST_PASSWORD}\n")).unwrap();
    let port = sshd.port.to_string();
    for (name, flag) in [("old", Some("--legacy-algorithms")), ("old-off", None)] {
        let mut args = vec![
            "device",
            "add",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--username",
            TEST_USER,
            "--password-file",
            pw.to_str().unwrap(),
        ];
        args.extend(flag);
        ok(&env.service(&args));
    }
    let out = {
        let env = &env;
        tokio::task::block_in_place(|| {
            env.service(&["exec", "old", "old-off", "-c", "id -un", "--json"])
        })
    };
    let mut reports = exec_json(&out);
    reports.sort_by_key(|r| r["device"].as_str().unwrap().to_string());
    assert_eq!(
        reports[0]["status"],
        "success",
        "{reports:?}\n{}",
        sshd.log()
    );
    assert_eq!(
        reports[0]["results"][0]["output"].as_str().unwrap().trim(),
        TEST_USER
    );
    assert_eq!(reports[1]["status"], "failure");
    let error = reports[1]["error"].as_str().unwrap();
    assert!(error.contains("diffie-hellman-group14-sha1"), "{error}");
    assert!(error.contains("legacy_algorithms"), "{error}");
}

/// Issue 15 inputs 3 and 4 end to end: a device type from the documented
/// list, a session choice and a sealed enable secret are stored by `device
/// add`, and `service exec` runs privileged commands on a device that
/// refuses exec requests and logs in unprivileged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_type_session_and_enable_secret_reach_the_shell() {
    use switchyard::secret::Secret;
    use switchyard::sim::shell::ShellOptions;
    const ENABLE_PW: &str = "En4ble-marker-never-logged";
    init();
    let fleet = SimFleet::start(SimFleetConfig {
        count: 1,
        refuse_exec: true,
        shell: ShellOptions {
            enable_secret: Some(Secret::new(ENABLE_PW)),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let env = Env::new();
    ok(&env.service(&["init"]));
    let enable = env.path("enable-pw");
    std::fs::write(&enable, format!("{ENABLE_PW}\n")).unwrap();
    let sim_pw = env.path("sim-pw");
    let port = fleet.endpoints()[0].port;
    let add =
        |name: &str, extra: &[&str]| env.add_device(name, Some(port), "admin", &sim_pw, extra);
    let enable_flag = ["--enable-password-file", enable.to_str().unwrap()];
    ok(&add(
        "sim-001",
        &[&["--device-type", "ios"][..], &enable_flag[..]].concat(),
    ));
    ok(&add(
        "sim-exec",
        &["--device-type", "IOS", "--session", "exec"],
    ));
    let bad = add("bad", &["--device-type", "frob"]);
    assert!(!bad.status.success());
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(error.contains("unknown device type \"frob\""), "{error}");
    assert!(error.contains("IOS-XE, IOS-XR, NX-OS, ASA, JUNOS, EOS, LINUX, GENERIC"));

    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    assert_eq!(list[0]["name"], "sim-001");
    assert_eq!(list[0]["device_type"], "IOS");
    assert_eq!(list[0]["has_enable_password"], true);
    assert!(list[0]["session"].is_null(), "the type's default: {list}");
    assert_eq!(list[1]["session"], "exec");
    assert_eq!(list[1]["has_enable_password"], false);
    let db = std::fs::read(env.db()).unwrap();
    assert!(
        !db.windows(ENABLE_PW.len())
            .any(|w| w == ENABLE_PW.as_bytes()),
        "the enable secret is sealed"
    );

    let out = {
        let env = &env;
        tokio::task::block_in_place(|| {
            env.service(&[
                "exec",
                "sim-001",
                "sim-exec",
                "-c",
                "show running-config",
                "--json",
            ])
        })
    };
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(ENABLE_PW), "enable secret logged");
    let mut reports = exec_json(&out);
    reports.sort_by_key(|r| r["device"].as_str().unwrap().to_string());
    assert_eq!(reports[0]["status"], "success", "{reports:?}");
    let output = reports[0]["results"][0]["output"].as_str().unwrap();
    assert!(output.starts_with("Building configuration"), "{output}");
    assert!(output.contains("hostname sim-001\n"), "{output}");
    assert_eq!(reports[1]["status"], "failure", "exec refused: {reports:?}");
    fleet.shutdown().await;
}

/// `--jump-host` on `device add` and `device set`: checked when set (the
/// jump exists, is an ssh device, no cycles), shown in `device list`,
/// guarded on `device remove`; `service exec` reaches a device through a
/// stock sshd jump host (its log shows the direct-tcpip open) and records
/// the jump's host key too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_hosts_are_checked_listed_and_used() {
    init();
    let jump = Sshd::start_with(10, "AllowTcpForwarding yes\nLogLevel DEBUG1").await;
    let target = Sshd::start(10).await;
    let env = Env::new();
    ok(&env.service(&["init"]));
    let pw = env.path("sshd-pw");
    std::fs::write(&pw, format!("{TEST_PASSWORD}\n")).unwrap();
    let add = |name: &str, port: u16, extra: &[&str]| {
        let extra = [&["--device-type", "LINUX"][..], extra].concat();
        env.add_device(name, Some(port), TEST_USER, &pw, &extra)
    };
    ok(&add("jump-1", jump.port, &[]));
    // An unknown jump host: refused, and no device is left behind.
    fails(
        add("behind", target.port, &["--jump-host", "nope"]),
        "jump host \"nope\" is not a device in the inventory",
    );
    ok(&env.service(&["device", "add", "sim-1", "--driver", "simulator"]));
    fails(
        add("behind", target.port, &["--jump-host", "sim-1"]),
        "a jump host must be an ssh device",
    );
    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    assert_eq!(list.as_array().unwrap().len(), 2, "nothing added: {list}");
    ok(&add("behind", target.port, &["--jump-host", "jump-1"]));
    // A cycle: jump-1 through behind, which goes through jump-1.
    fails(
        env.service(&["device", "set", "jump-1", "--jump-host", "behind"]),
        "would make a cycle: jump-1 -> behind -> jump-1",
    );
    fails(
        env.service(&["device", "remove", "jump-1"]),
        "it is the jump host of behind",
    );
    let text = ok(&env.service(&["device", "list"]));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let col = rows[0].iter().position(|h| *h == "JUMP").expect("JUMP");
    let cell = |name: &str| rows.iter().find(|r| r[0] == name).unwrap()[col];
    assert_eq!((cell("behind"), cell("jump-1")), ("jump-1", "-"), "{text}");

    let exec = |device: &str| {
        let (db, admin, home) = (env.db(), env.path("admin-pw"), env.dir.path().to_owned());
        let device = device.to_string();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(switchyard_bin())
                .args(["service", "--db"])
                .arg(db)
                .arg("--admin-password-file")
                .arg(admin)
                .args(["exec", &device, "-c", "echo via-$((6*7))", "--json"])
                .env("XDG_CONFIG_HOME", home)
                .output()
                .unwrap()
        })
    };
    let out = exec("behind").await.unwrap();
    let report = &exec_json(&out)[0];
    assert_eq!(report["status"], "success", "{report}\n{}", jump.log());
    assert_eq!(
        report["results"][0]["output"].as_str().unwrap().trim(),
        "via-42"
    );
    let want = format!("target 127.0.0.1 port {}", target.port);
    assert!(jump.log().contains(&want), "{}", jump.log());
    // Both host keys were recorded: the target's and the jump's.
    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    for (name, server) in [("behind", &target), ("jump-1", &jump)] {
        let d = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap();
        assert_eq!(
            common::key_body(d["host_key"].as_str().unwrap_or_default()),
            common::key_body(&server.host_public_key()),
            "{name}: {d}"
        );
    }
    // Cleared: reached directly again, and jump-1 may go.
    ok(&env.service(&["device", "set", "behind", "--jump-host", "none"]));
    ok(&env.service(&["device", "remove", "jump-1"]));
    let out = exec("behind").await.unwrap();
    assert_eq!(exec_json(&out)[0]["status"], "success");
}

/// A device cannot be its own jump host (`device add` or `device set`):
/// refused like any other cycle. A self-reference already stored (a
/// database from before this check) makes calls fail with what is wrong
/// and the command that fixes it, not "inventory data is corrupt".
#[test]
fn a_device_cannot_be_its_own_jump_host() {
    let env = Env::new();
    ok(&env.service(&["init"]));
    let pw = env.path("device-pw");
    let add = |name: &str, extra: &[&str]| env.add_device(name, None, "u", &pw, extra);
    ok(&add("bastion", &[]));
    fails(
        env.service(&["device", "set", "bastion", "--jump-host", "bastion"]),
        "jump host bastion for bastion would make a cycle: bastion -> bastion",
    );
    fails(
        add("loop", &["--jump-host", "loop"]),
        "jump host loop for loop would make a cycle: loop -> loop",
    );
    ok(&add("behind", &["--jump-host", "bastion"]));
    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["name"])
        .collect();
    assert_eq!(names, ["bastion", "behind"], "nothing else added: {list}");
    assert!(list[0]["jump_host"].is_null(), "bastion unchanged: {list}");
    // The ports that may be forwarded: the default (its own port), or a
    // list as set; `device list` shows them in a FORWARD column.
    assert_eq!(list[0]["forward_ports"], serde_json::json!([22]), "{list}");
    ok(&env.service(&["device", "set", "behind", "--forward-ports", "8080,22"]));
    let list = json(&ok(&env.service(&["device", "list", "--json"])));
    assert_eq!(
        list[1]["forward_ports"],
        serde_json::json!([22, 8080]),
        "{list}"
    );
    ok(&env.service(&["device", "set", "bastion", "--forward-ports", "none"]));
    let text = ok(&env.service(&["device", "list"]));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let col = rows[0]
        .iter()
        .position(|h| *h == "FORWARD")
        .expect("FORWARD");
    let cell = |name: &str| rows.iter().find(|r| r[0] == name).unwrap()[col];
    assert_eq!(
        (cell("bastion"), cell("behind")),
        ("-", "22,8080"),
        "{text}"
    );

    // A self-reference stored before the check existed.
    let db = rusqlite::Connection::open(env.db()).unwrap();
    db.execute(
        "UPDATE devices SET jump_host = 'bastion' WHERE name = 'bastion'",
        [],
    )
    .unwrap();
    drop(db);
    let fix = "fix it with `switchyard service device set bastion --jump-host none`";
    for (device, chain) in [
        ("bastion", "bastion -> bastion"),
        ("behind", "behind -> bastion -> bastion"),
    ] {
        let out = env.service(&["exec", device, "-c", "true", "--json"]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!("the jump hosts of {device} form a cycle: {chain}; {fix}");
        assert!(all.contains(&want), "{device}: {all}");
        assert!(!all.contains("corrupt"), "{device}: {all}");
    }
    // The named fix works.
    ok(&env.service(&["device", "set", "bastion", "--jump-host", "none"]));
    let out = env.service(&["exec", "behind", "-c", "true", "--json"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("jump hosts of"),
        "{out:?}"
    );
}
