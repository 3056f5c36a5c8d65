//! Changing an inventory after creation through the real binary: `service
//! device set`, `service user set`, and `service admin-password`, including
//! a process that dies half-way through re-sealing.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Output;

use common::switchyard_bin;
use switchyard::secret::Secret;
use switchyard::service::inventory::{ABORT_MIDWAY_ENV, Inventory, InventoryError};

const OLD_ADMIN: &str = "old-admin-password";
const NEW_ADMIN: &str = "new-admin-password";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// An inventory (sealed under OLD_ADMIN) with an SSH device that has a
    /// password and attributes, and a remote user.
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for (file, text) in [
            ("old", OLD_ADMIN),
            ("new", NEW_ADMIN),
            ("dev-pw", "device-password-1"),
            ("dev-pw-2", "device-password-2"),
            ("user-pw", "user-password-1"),
            ("user-pw-2", "user-password-2"),
        ] {
            std::fs::write(env.path(file), format!("{text}\n")).unwrap();
        }
        ok(&env.service(&[], &["init"]));
        ok(&env.service(
            &[],
            &[
                "device",
                "add",
                "core-1",
                "--host",
                "192.0.2.10",
                "--username",
                "netops",
                "--password-file",
                env.path("dev-pw").to_str().unwrap(),
                "--attr",
                "site=lab",
                "--attr",
                "rack=4",
            ],
        ));
        ok(&env.service(
            &[],
            &[
                "user",
                "add",
                "alice",
                "--password-file",
                env.path("user-pw").to_str().unwrap(),
                "--devices",
                "core-*",
            ],
        ));
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("inv.db")
    }

    /// `switchyard service --db DB --admin-password-file old ARGS`.
    fn service(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.service_as("old", env, args)
    }

    fn service_as(&self, admin: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(switchyard_bin());
        cmd.arg("service")
            .arg("--db")
            .arg(self.db())
            .arg("--admin-password-file")
            .arg(self.path(admin))
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove(ABORT_MIDWAY_ENV);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn open(&self, admin: &str) -> Result<Inventory, InventoryError> {
        Inventory::open(&self.db(), &Secret::new(admin))
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn device_password(inv: &Inventory) -> String {
    inv.device_credentials("core-1")
        .unwrap()
        .password
        .unwrap()
        .expose()
        .to_string()
}

fn assert_opens_with(env: &Env, good: &str, bad: &str, fingerprint: &str) {
    let inv = env.open(good).unwrap();
    assert_eq!(device_password(&inv), "device-password-1");
    assert_eq!(inv.info().unwrap().tls_fingerprint, fingerprint);
    inv.tls_identity().unwrap();
    assert!(matches!(
        env.open(bad),
        Err(InventoryError::WrongAdminPassword(_))
    ));
}

/// The admin password change re-seals everything in one transaction: a
/// process killed half-way (after the password check and TLS key were
/// re-sealed, before the devices) leaves the inventory as it was, opened by
/// the old password with every secret readable; a complete change moves
/// every secret to the new password.
#[test]
fn an_admin_password_change_killed_midway_leaves_the_old_password_working() {
    let env = Env::new();
    let fingerprint = env.open(OLD_ADMIN).unwrap().info().unwrap().tls_fingerprint;
    let new_file = env.path("new");
    let args = [
        "admin-password",
        "--new-password-file",
        new_file.to_str().unwrap(),
    ];

    let killed = env.service(&[(ABORT_MIDWAY_ENV, "1")], &args);
    assert_eq!(
        killed.status.signal(),
        Some(nix::sys::signal::Signal::SIGABRT as i32),
        "the hook did not fire: {:?} {}",
        killed.status,
        String::from_utf8_lossy(&killed.stderr)
    );
    assert_opens_with(&env, OLD_ADMIN, NEW_ADMIN, &fingerprint);
    // The CLI, too, still works with the old password.
    ok(&env.service(&[], &["device", "set", "core-1", "--attr", "after=crash"]));

    let out = ok(&env.service(&[], &args));
    assert!(out.contains("changed the admin password"), "{out}");
    assert_opens_with(&env, NEW_ADMIN, OLD_ADMIN, &fingerprint);
    let refused = env.service(&[], &["device", "remove", "core-1"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("wrong admin password"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(&env.service_as("new", &[], &["device", "list"]));
}

/// `device set` changes only what it is given; host and port changes
/// forget the recorded host key; the password can be replaced or removed.
#[test]
fn device_set_changes_only_the_fields_given() {
    let env = Env::new();
    env.open(OLD_ADMIN)
        .unwrap()
        .record_host_key("core-1", "ssh-ed25519 AAAA")
        .unwrap();
    ok(&env.service(
        &[],
        &[
            "device",
            "set",
            "core-1",
            "--attr",
            "rack=5",
            "--remove-attr",
            "site",
            "--attr",
            "role=core",
            "--legacy-algorithms",
            "true",
        ],
    ));
    let inv = env.open(OLD_ADMIN).unwrap();
    let d = inv.device("core-1").unwrap();
    assert_eq!(
        d.attributes,
        [("rack", "5"), ("role", "core")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into()
    );
    assert_eq!(d.legacy_algorithms, Some(true));
    assert_eq!((d.host.as_str(), d.port), ("192.0.2.10", 22));
    assert_eq!(d.username.as_deref(), Some("netops"));
    assert_eq!(d.host_key.as_deref(), Some("ssh-ed25519 AAAA"), "kept");
    assert_eq!(device_password(&inv), "device-password-1");
    drop(inv);

    let pw2 = env.path("dev-pw-2");
    ok(&env.service(
        &[],
        &[
            "device",
            "set",
            "core-1",
            "--host",
            "192.0.2.11",
            "--port",
            "2222",
            "--username",
            "ops2",
            "--password-file",
            pw2.to_str().unwrap(),
            "--legacy-algorithms",
            "default",
        ],
    ));
    let inv = env.open(OLD_ADMIN).unwrap();
    let d = inv.device("core-1").unwrap();
    assert_eq!((d.host.as_str(), d.port), ("192.0.2.11", 2222));
    assert_eq!(d.username.as_deref(), Some("ops2"));
    assert_eq!(d.legacy_algorithms, None);
    assert_eq!(d.host_key, None, "a new address forgets the host key");
    assert_eq!(d.attributes.len(), 2);
    assert_eq!(device_password(&inv), "device-password-2");
    drop(inv);

    ok(&env.service(&[], &["device", "set", "core-1", "--no-password"]));
    let inv = env.open(OLD_ADMIN).unwrap();
    assert!(inv.device_credentials("core-1").unwrap().password.is_none());

    let unknown = env.service(&[], &["device", "set", "nosuch", "--port", "23"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no device named \"nosuch\""));
    let bad = env.service(
        &[],
        &["device", "set", "core-1", "--legacy-algorithms", "maybe"],
    );
    assert!(!bad.status.success());
}

/// `device set --forward-ports`: a list replaces the setting, other
/// changes keep it, `none` and `default` work, a bad list changes nothing.
#[test]
fn device_set_changes_the_forward_ports() {
    use switchyard::service::inventory::ForwardPorts;
    let env = Env::new();
    let ports = |env: &Env| {
        env.open(OLD_ADMIN)
            .unwrap()
            .forward_ports("core-1")
            .unwrap()
    };
    assert_eq!(ports(&env), ForwardPorts::Default);
    let set = |list: &str| env.service(&[], &["device", "set", "core-1", "--forward-ports", list]);
    ok(&set("22,80,830"));
    assert_eq!(ports(&env), ForwardPorts::Listed(vec![22, 80, 830]));
    ok(&env.service(&[], &["device", "set", "core-1", "--port", "2222"]));
    assert_eq!(ports(&env), ForwardPorts::Listed(vec![22, 80, 830]), "kept");
    let bad = set("22,http");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--forward-ports: \"http\" is not a port"),
        "{err}"
    );
    assert_eq!(
        ports(&env),
        ForwardPorts::Listed(vec![22, 80, 830]),
        "unchanged"
    );
    ok(&set("none"));
    assert_eq!(ports(&env), ForwardPorts::Listed(vec![]));
    ok(&set("default"));
    assert_eq!(ports(&env), ForwardPorts::Default);
    // What the service then allows: the device's own (new) SSH port.
    let target = env
        .open(OLD_ADMIN)
        .unwrap()
        .forward_target("core-1")
        .unwrap();
    assert_eq!(target.allowed, vec![2222]);
}

/// `user set`: a new password (the old one stops working), a new device
/// scope, disable and enable.
#[test]
fn user_set_changes_password_devices_and_enabled() {
    let env = Env::new();
    let check = |password: &str| {
        env.open(OLD_ADMIN)
            .unwrap()
            .authenticate_user("alice", &Secret::new(password))
            .unwrap()
    };
    assert!(check("user-password-1").is_some());
    let pw2 = env.path("user-pw-2");
    ok(&env.service(
        &[],
        &[
            "user",
            "set",
            "alice",
            "--password-file",
            pw2.to_str().unwrap(),
            "--devices",
            "edge-*,core-1",
        ],
    ));
    assert!(check("user-password-1").is_none());
    let user = check("user-password-2").expect("the new password works");
    assert_eq!(user.devices.patterns(), ["edge-*", "core-1"]);

    ok(&env.service(&[], &["user", "set", "alice", "--disable"]));
    assert!(check("user-password-2").is_none(), "disabled");
    ok(&env.service(&[], &["user", "set", "alice", "--enable"]));
    assert!(check("user-password-2").is_some(), "enabled again");

    let unknown = env.service(&[], &["user", "set", "bob", "--disable"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no remote user named \"bob\""));
}
