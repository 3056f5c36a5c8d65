-- Device logins (RFC 8628 grants) waiting for approval or redemption,
-- shared by the tier: started on one node, approved through another,
-- redeemed through a third, surviving the node that started them (see
-- src/relay/device_flow.rs). Times in Unix milliseconds; the device code
-- only as its SHA-256. A grant's row is locked (FOR UPDATE) while a rule
-- runs on it, so it is decided once and redeemed once.

CREATE TABLE device_grants (
    device_hash      BYTEA PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    login_hint       TEXT,
    expires_at       BIGINT NOT NULL,
    poll_interval_ms BIGINT NOT NULL,
    last_poll        BIGINT,
    state            TEXT NOT NULL,
    approved_by      TEXT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX device_grants_by_expiry ON device_grants (expires_at);
