-- The relay's durable state on PostgreSQL (see src/relay/pg/). The same
-- tables as the SQLite store (src/relay/store.rs); times are Unix seconds.
-- Append-only: a change is a new file with the next number, never an edit.

CREATE TABLE users (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_by_kind ON tokens (kind, created_at);

-- One-time passwords by SHA-256; `used_at` set once, in the redeeming
-- transaction (which holds the row lock: exactly one redemption wins).
CREATE TABLE otps (
    hash       BYTEA PRIMARY KEY,
    serial     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE certs (
    fingerprint BYTEA PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
CREATE INDEX certs_by_subject ON certs (kind, subject);

CREATE TABLE services (
    serial      TEXT PRIMARY KEY,
    fingerprint BYTEA NOT NULL,
    advertise   TEXT,
    enrolled_at BIGINT NOT NULL,
    owner       TEXT
);

CREATE TABLE enrollment_audit (
    id             BIGSERIAL PRIMARY KEY,
    at             BIGINT NOT NULL,
    serial         TEXT NOT NULL,
    action         TEXT NOT NULL,
    actor          TEXT NOT NULL,
    owner          TEXT NOT NULL,
    previous_owner TEXT,
    fingerprint    BYTEA
);
