-- Presence: the relay nodes of a tier and which node each connected
-- service is on. A node's row is refreshed by its heartbeat (database
-- clock); a node silent longer than the timeout owns nothing (readers
-- filter on heartbeat_at), and a long-dead node's rows are deleted by
-- the others (its presence rows with it).

CREATE TABLE relay_nodes (
    id           TEXT PRIMARY KEY,
    quic         TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    services     INTEGER NOT NULL DEFAULT 0,
    connections  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE presence (
    serial TEXT PRIMARY KEY,
    node   TEXT NOT NULL REFERENCES relay_nodes (id) ON DELETE CASCADE,
    since  BIGINT NOT NULL
);
CREATE INDEX presence_by_node ON presence (node);
