//! A real service (inventory + RPC socket) on a loopback port-0 socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use switchyard::secret::Secret;
use switchyard::service::drivers::Drivers;
use switchyard::service::drivers::ssh::SshDriverConfig;
use switchyard::service::inventory::{
    DeviceScope, DriverKind, Inventory, NewDevice, NewRemoteUser,
};
use switchyard::service::ops::ServiceOps;
use switchyard::service::rpc::{RpcConfig, RpcServer};
use switchyard::service::seal::KdfParams;
use switchyard::wire::pin::Fingerprint;

pub const ADMIN_PASSWORD: &str = "admin-password";
pub const ALICE_PASSWORD: &str = "alice-password";

pub struct TestService {
    pub dir: tempfile::TempDir,
    pub server: Option<RpcServer>,
    pub fingerprint: Fingerprint,
    addr: SocketAddr,
    config: RpcConfig,
}

impl TestService {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the RPC socket (connections are closed).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(std::time::Duration::ZERO).await;
        }
    }

    /// Starts the RPC socket again on the same address and inventory.
    pub fn restart(&mut self) {
        let inv = Inventory::open(
            &self.dir.path().join("inv.db"),
            &Secret::new(ADMIN_PASSWORD),
        )
        .unwrap();
        let (ops, identity) = ops_for(inv);
        let config = RpcConfig {
            listen: self.addr,
            ..self.config.clone()
        };
        self.server = Some(RpcServer::start(ops, identity, config).unwrap());
    }
}

fn ops_for(inv: Inventory) -> (Arc<ServiceOps>, switchyard::service::inventory::TlsIdentity) {
    let identity = inv.tls_identity().unwrap();
    let ops = ServiceOps::new(
        "test-service",
        inv,
        Drivers::new(SshDriverConfig::default()),
    );
    (ops, identity)
}

pub fn cheap_kdf() -> KdfParams {
    KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    }
}

/// Creates an inventory with simulator devices `core-1`, `core-2`,
/// `edge-1` (plus `extra`), and users alice (all devices) and bob (`core-*`).
pub fn make_inventory(path: &std::path::Path, extra: &[NewDevice]) -> Inventory {
    let mut inv = Inventory::init_with(path, &Secret::new(ADMIN_PASSWORD), cheap_kdf()).unwrap();
    for name in ["core-1", "core-2", "edge-1"] {
        inv.add_device(&sim_device(name)).unwrap();
    }
    for d in extra {
        inv.add_device(d).unwrap();
    }
    inv.add_user(&NewRemoteUser {
        name: "alice".into(),
        password: Some(Secret::new(ALICE_PASSWORD)),
        devices: DeviceScope::all(),
        enabled: true,
        cloud: false,
    })
    .unwrap();
    inv.add_user(&NewRemoteUser {
        name: "bob".into(),
        password: Some(Secret::new("bob-password")),
        devices: DeviceScope::parse("core-*").unwrap(),
        enabled: true,
        cloud: false,
    })
    .unwrap();
    inv
}

pub fn sim_device(name: &str) -> NewDevice {
    NewDevice {
        name: name.into(),
        host: "simulated".into(),
        port: 22,
        device_type: "IOS-XE".into(),
        driver: DriverKind::Simulator,
        attributes: BTreeMap::from([(
            "role".to_string(),
            name.split('-').next().unwrap_or("").to_string(),
        )]),
        username: None,
        password: None,
        private_key: None,
        legacy_algorithms: None,
        enable_password: None,
        session: None,
    }
}

/// An SSH device at `port` (e.g. a silent TCP listener, for hangs).
pub fn ssh_device(name: &str, port: u16) -> NewDevice {
    NewDevice {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        device_type: "LINUX".into(),
        driver: DriverKind::Ssh,
        attributes: BTreeMap::new(),
        username: Some("nobody".into()),
        password: Some(Secret::new("x")),
        private_key: None,
        legacy_algorithms: None,
        enable_password: None,
        session: None,
    }
}

/// A device on a test [`super::sshd::Sshd`] at `port`, with the test
/// account's password.
pub fn sshd_device(name: &str, port: u16) -> NewDevice {
    NewDevice {
        username: Some(super::sshd::TEST_USER.into()),
        password: Some(Secret::new(super::sshd::TEST_PASSWORD)),
        ..ssh_device(name, port)
    }
}

pub fn start_service(extra: &[NewDevice], config: RpcConfig) -> TestService {
    super::init();
    let dir = tempfile::tempdir().unwrap();
    let inv = make_inventory(&dir.path().join("inv.db"), extra);
    let (ops, identity) = ops_for(inv);
    let fingerprint = Fingerprint::of(&identity.cert_der);
    let config = RpcConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let server = RpcServer::start(ops, identity, config.clone()).unwrap();
    TestService {
        dir,
        addr: server.local_addr(),
        server: Some(server),
        fingerprint,
        config,
    }
}

/// `switchyard connect integrated local` on `broker`: a fresh inventory
/// (the three simulated devices) in the broker's directory, opened with
/// the admin password from a file. Returns the command's output for the
/// caller to check.
pub async fn connect_integrated_local(broker: &super::broker::TestBroker) -> std::process::Output {
    let db = broker.dir.path().join("inv.db");
    drop(make_inventory(&db, &[]));
    let pw = broker.dir.path().join("admin-pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    broker
        .command()
        .args(["connect", "integrated", "local", "--db"])
        .arg(&db)
        .arg("--admin-password-file")
        .arg(&pw)
        .output()
        .await
        .unwrap()
}
