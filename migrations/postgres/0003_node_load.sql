-- Each node's tunnel load at its last heartbeat (`relay nodes`): tunnels
-- open now, tunnels since it started, tunnel bytes forwarded since it
-- started (stream and packet paths).

ALTER TABLE relay_nodes
    ADD COLUMN tunnels       INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN tunnels_total BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN tunnel_bytes  BIGINT  NOT NULL DEFAULT 0;
