//! Schema migrations, numbered by SQLite's `user_version`.
//!
//! **Invariant:** entries are append-only. Migration N (1-based) takes a
//! database from version N-1 to N; a released entry is never edited.

use rusqlite::Transaction;

/// Each entry is one migration; its index + 1 is the version it produces.
const MIGRATIONS: &[&str] = &[
    // 1: meta, devices, remote users.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE devices (
        id                 INTEGER PRIMARY KEY,
        name               TEXT NOT NULL UNIQUE,
        host               TEXT NOT NULL,
        port               INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        device_type        TEXT NOT NULL,
        driver             TEXT NOT NULL,
        attributes         TEXT NOT NULL DEFAULT '{}',
        username           TEXT,
        password_sealed    BLOB,
        private_key_sealed BLOB,
        host_key           TEXT,
        created_at         INTEGER NOT NULL
    );
    CREATE TABLE remote_users (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        password_hash TEXT,
        devices       TEXT NOT NULL DEFAULT '["*"]',
        enabled       INTEGER NOT NULL DEFAULT 1,
        created_at    INTEGER NOT NULL
    );
    "#,
    // 2: remote users that are cloud identities (vouched for by the relay).
    r#"
    ALTER TABLE remote_users ADD COLUMN cloud INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: a device's choice to be offered legacy SSH algorithms (NULL: the
    // service's `ssh.legacy_algorithms` decides).
    r#"
    ALTER TABLE devices ADD COLUMN legacy_algorithms INTEGER
        CHECK (legacy_algorithms IN (0, 1));
    "#,
    // 4: the enable secret (sealed like the password) and where commands
    // run (NULL: the device type's default).
    r#"
    ALTER TABLE devices ADD COLUMN enable_password_sealed BLOB;
    ALTER TABLE devices ADD COLUMN session TEXT CHECK (session IN ('exec', 'shell'));
    "#,
    // 5: the TCP ports of a device remote users may forward to, as a JSON
    // array of port numbers (NULL: the default, see `inventory::forwarding`).
    r#"
    ALTER TABLE devices ADD COLUMN forward_ports TEXT;
    "#,
    // 6: the inventory device this one is reached through over SSH
    // `direct-tcpip` (NULL: reached directly; see `inventory::jump`).
    r#"
    ALTER TABLE devices ADD COLUMN jump_host TEXT;
    "#,
];

/// The schema version this build writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Reads the schema version.
pub fn version(conn: &rusqlite::Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies every migration after `from`, inside the caller's transaction, so
/// a failure leaves the database at its old version.
pub fn migrate(tx: &Transaction<'_>, from: u32) -> rusqlite::Result<()> {
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as u32 + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_to_latest() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        assert_eq!(version(&conn).unwrap(), 0);
        let tx = conn.transaction().unwrap();
        migrate(&tx, 0).unwrap();
        tx.commit().unwrap();
        assert_eq!(version(&conn).unwrap(), LATEST);
        // Running again from the latest version is a no-op.
        let tx = conn.transaction().unwrap();
        migrate(&tx, LATEST).unwrap();
        tx.commit().unwrap();
        assert_eq!(version(&conn).unwrap(), LATEST);
    }
}
