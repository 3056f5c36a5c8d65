//! The inventory file: sealing, wrong passwords, migrations, concurrency.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use switchyard::secret::Secret;
use switchyard::service::inventory::{
    DeviceScope, DriverKind, Inventory, InventoryError, NewDevice, NewRemoteUser,
};
use switchyard::service::seal::KdfParams;

const DEVICE_PASSWORD: &str = "Dev1cePassw0rd-unique-marker";
const DEVICE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nKEYMATERIAL-unique-marker\n-----END OPENSSH PRIVATE KEY-----\n";

fn cheap() -> KdfParams {
    KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    }
}

fn device(name: &str) -> NewDevice {
    NewDevice {
        name: name.into(),
        host: "10.0.0.1".into(),
        port: 22,
        device_type: "IOS-XE".into(),
        driver: DriverKind::Ssh,
        attributes: BTreeMap::new(),
        username: Some("netops".into()),
        password: Some(Secret::new(DEVICE_PASSWORD)),
        private_key: Some(Secret::new(DEVICE_KEY)),
        legacy_algorithms: None,
        enable_password: None,
        session: None,
    }
}

/// Every byte SQLite keeps for this database: main file, WAL and shm.
fn all_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", db.display());
        if let Ok(b) = std::fs::read(&p) {
            bytes.extend(b);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn device_secrets_never_reach_the_file_in_plain_text() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inv.db");
    let admin = Secret::new("admin-pw");
    let mut inv = Inventory::init_with(&db, &admin, cheap()).unwrap();
    inv.add_device(&device("r1")).unwrap();
    // While open (data may sit in the WAL) and after close (checkpointed).
    let open_bytes = all_bytes(&db);
    drop(inv);
    let closed_bytes = all_bytes(&db);
    for bytes in [&open_bytes, &closed_bytes] {
        assert!(
            contains(bytes, "netops"),
            "sanity: plain fields are in the file"
        );
        assert!(
            !contains(bytes, DEVICE_PASSWORD),
            "device password in plain text"
        );
        assert!(
            !contains(bytes, "KEYMATERIAL-unique-marker"),
            "private key in plain text"
        );
        assert!(!contains(bytes, "admin-pw"), "admin password in plain text");
    }
    // And they come back intact with the admin password.
    let inv = Inventory::open(&db, &admin).unwrap();
    let creds = inv.device_credentials("r1").unwrap();
    assert_eq!(creds.password.unwrap().expose(), DEVICE_PASSWORD);
    assert_eq!(creds.private_key.unwrap().expose(), DEVICE_KEY);
}

#[test]
fn wrong_admin_password_fails_and_changes_nothing() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inv.db");
    let mut inv = Inventory::init_with(&db, &Secret::new("right"), cheap()).unwrap();
    inv.add_device(&device("r1")).unwrap();
    drop(inv);
    let before = Sha256::digest(std::fs::read(&db).unwrap());
    let err = Inventory::open(&db, &Secret::new("wrong")).unwrap_err();
    assert!(
        matches!(err, InventoryError::WrongAdminPassword(_)),
        "{err}"
    );
    assert!(err.to_string().contains("wrong admin password"));
    let after = Sha256::digest(std::fs::read(&db).unwrap());
    assert_eq!(before, after, "file changed after a failed open");
    // Still opens with the right one.
    assert!(Inventory::open(&db, &Secret::new("right")).is_ok());
}

#[test]
fn init_migrates_an_empty_file_to_the_latest_schema() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    std::fs::write(&db, b"").unwrap();
    let inv = Inventory::init_with(&db, &Secret::new("a"), cheap()).unwrap();
    let info = inv.info().unwrap();
    assert!(info.schema_version >= 1);
    assert_eq!(info.devices, 0);
    assert_eq!(info.tls_fingerprint.len(), 95);
    // Created private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let dir2 = tempfile::tempdir().unwrap();
    let fresh = dir2.path().join("fresh.db");
    drop(Inventory::init_with(&fresh, &Secret::new("a"), cheap()).unwrap());
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("junk.db");
    std::fs::write(&db, vec![0x42u8; 8192]).unwrap();
    let err = Inventory::open_unsealed(&db).unwrap_err();
    assert!(matches!(err, InventoryError::Sqlite(_)), "{err}");
}

#[test]
fn concurrent_readers_see_a_consistent_inventory_while_a_writer_adds() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("inv.db");
    let admin = Secret::new("a");
    let mut writer = Inventory::init_with(&db, &admin, cheap()).unwrap();
    writer
        .add_user(&NewRemoteUser {
            name: "ops".into(),
            password: Some(Secret::new("pw")),
            devices: DeviceScope::all(),
            enabled: true,
            cloud: false,
        })
        .unwrap();
    const N: usize = 50;
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let reader = Inventory::open_unsealed(&db).unwrap();
                    let mut last = 0;
                    while last < N {
                        let n = reader.devices().unwrap().len();
                        assert!(n >= last, "device count went backwards");
                        last = n;
                        assert_eq!(reader.users().unwrap().len(), 1);
                    }
                })
            })
            .collect();
        for i in 0..N {
            writer.add_device(&device(&format!("r{i:03}"))).unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
    });
}
