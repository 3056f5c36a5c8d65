//! Presence on PostgreSQL: which relay nodes are alive and which node each
//! connected service is on.
//!
//! A node is alive while its heartbeat (every [`HEARTBEAT`], stamped with
//! the database's clock so nodes' clocks do not matter) is younger than
//! [`NODE_TIMEOUT`]; readers only believe presence rows of live nodes, so
//! a node that dies stops owning its services within `NODE_TIMEOUT`. Rows
//! of nodes dead longer than [`NODE_FORGET`] are deleted by the others,
//! and so are their node certificates (kind `node`, subject the node id;
//! a node that the others forgot while it stalled records its certificate
//! again with its next beat, see [`PgStore::keep_node_cert`]).
//! Each change is announced with `NOTIFY` on [`PRESENCE_CHANNEL`].

use std::time::Duration;

use super::{PgStore, StoreError};
use crate::relay::nodes::NODE_CERT_KIND;

/// How often a node stamps its row.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node silent this long owns no service.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// A node silent this long is deleted (with its presence rows).
pub const NODE_FORGET: Duration = Duration::from_secs(60);
/// The channel presence changes are announced on.
pub const PRESENCE_CHANNEL: &str = "switchyard_relay_presence";

/// A node's load as its heartbeat reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLoadReport {
    /// Services connected to it.
    pub services: u32,
    /// Authenticated QUIC connections (brokers, services, other nodes).
    pub connections: u32,
    /// Tunnels open through it now.
    pub tunnels: u32,
    /// Tunnels since it started.
    pub tunnels_total: u64,
    /// Tunnel bytes it forwarded since it started (both paths).
    pub tunnel_bytes: u64,
}

/// One node of the tier as `relay nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    /// The QUIC address brokers, services and other nodes reach it at.
    pub quic: String,
    pub alive: bool,
    /// Seconds since its last heartbeat.
    pub silent_secs: u64,
    /// Its load at its last heartbeat.
    pub load: NodeLoadReport,
    /// Serials present on it (alive nodes only).
    pub serials: Vec<String>,
}

impl PgStore {
    /// Stamps node `id`'s row (creating it when missing) with its load.
    /// Returns true when the row was created (first beat, or after others
    /// forgot a stalled node): the caller then records its services again.
    pub async fn heartbeat(
        &self,
        id: &str,
        quic: &str,
        load: NodeLoadReport,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO relay_nodes (id, quic, started_at, heartbeat_at, services, connections, \
                 tunnels, tunnels_total, tunnel_bytes) \
                 VALUES ($1, $2, $3, now(), $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
                 heartbeat_at = now(), quic = EXCLUDED.quic, services = EXCLUDED.services, \
                 connections = EXCLUDED.connections, tunnels = EXCLUDED.tunnels, \
                 tunnels_total = EXCLUDED.tunnels_total, tunnel_bytes = EXCLUDED.tunnel_bytes \
                 RETURNING (xmax = 0)",
                &[
                    &id,
                    &quic,
                    &super::now(),
                    &(load.services as i32),
                    &(load.connections as i32),
                    &(load.tunnels as i32),
                    &(load.tunnels_total as i64),
                    &(load.tunnel_bytes as i64),
                ],
            )
            .await?;
        client
            .execute(
                "DELETE FROM relay_nodes WHERE heartbeat_at < now() - make_interval(secs => $1)",
                &[&NODE_FORGET.as_secs_f64()],
            )
            .await?;
        // Node certificates of nodes gone from the table (each start makes a
        // new node id and certificate). A certificate younger than
        // NODE_FORGET is kept: its node may not have beaten yet.
        client
            .execute(
                "DELETE FROM certs WHERE kind = $1 AND created_at < $2 AND NOT EXISTS \
                 (SELECT 1 FROM relay_nodes n WHERE n.id = certs.subject)",
                &[
                    &NODE_CERT_KIND,
                    &(super::now() - NODE_FORGET.as_secs() as i64),
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Records node `id`'s certificate `fingerprint` again unless it is
    /// still recorded (a node the others forgot while it stalled; a row
    /// that is there, revoked or not, is left as it is).
    pub async fn keep_node_cert(&self, fingerprint: &[u8; 32], id: &str) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(
                "INSERT INTO certs (fingerprint, kind, subject, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (fingerprint) DO NOTHING",
                &[&fingerprint.as_slice(), &NODE_CERT_KIND, &id, &super::now()],
            )
            .await?;
        Ok(())
    }

    /// Service `serial` is connected to node `node` now.
    pub async fn set_present(&self, serial: &str, node: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO presence (serial, node, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (serial) DO UPDATE SET node = EXCLUDED.node, since = EXCLUDED.since",
                &[&serial, &node, &super::now()],
            )
            .await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&PRESENCE_CHANNEL, &serial])
            .await?;
        Ok(())
    }

    /// Service `serial` left node `node` (a newer connection elsewhere is
    /// left alone).
    pub async fn clear_present(&self, serial: &str, node: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        let gone = client
            .execute(
                "DELETE FROM presence WHERE serial = $1 AND node = $2",
                &[&serial, &node],
            )
            .await?;
        if gone > 0 {
            client
                .execute("SELECT pg_notify($1, $2)", &[&PRESENCE_CHANNEL, &serial])
                .await?;
        }
        Ok(())
    }

    /// The live node `serial` is connected to: (node id, its QUIC address).
    pub async fn locate(&self, serial: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .pool
            .get()
            .await?
            .query_opt(
                "SELECT n.id, n.quic FROM presence p JOIN relay_nodes n ON n.id = p.node \
                 WHERE p.serial = $1 AND n.heartbeat_at > now() - make_interval(secs => $2)",
                &[&serial, &NODE_TIMEOUT.as_secs_f64()],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    /// Every node not yet forgotten, with the serials on the live ones.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, quic, heartbeat_at > now() - make_interval(secs => $1), \
                 GREATEST(0, EXTRACT(EPOCH FROM now() - heartbeat_at))::BIGINT, services, connections, \
                 tunnels, tunnels_total, tunnel_bytes FROM relay_nodes ORDER BY id",
                &[&NODE_TIMEOUT.as_secs_f64()],
            )
            .await?;
        let present = client
            .query("SELECT node, serial FROM presence ORDER BY serial", &[])
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let alive: bool = r.get(2);
                let serials = present
                    .iter()
                    .filter(|p| alive && p.get::<_, &str>(0) == id)
                    .map(|p| p.get(1))
                    .collect();
                NodeRecord {
                    quic: r.get(1),
                    alive,
                    silent_secs: r.get::<_, i64>(3) as u64,
                    load: NodeLoadReport {
                        services: r.get::<_, i32>(4) as u32,
                        connections: r.get::<_, i32>(5) as u32,
                        tunnels: r.get::<_, i32>(6) as u32,
                        tunnels_total: r.get::<_, i64>(7) as u64,
                        tunnel_bytes: r.get::<_, i64>(8) as u64,
                    },
                    serials,
                    id,
                }
            })
            .collect())
    }
}
