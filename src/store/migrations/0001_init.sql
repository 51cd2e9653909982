-- API keys: only the SHA-256 of the secret is stored.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    secret_hash   BLOB NOT NULL,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    environment   TEXT NOT NULL,
    scopes        TEXT NOT NULL,          -- space-separated
    created_at    INTEGER NOT NULL,       -- unix seconds
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    last_used_at  INTEGER
);

-- Signing keys: the private half is sealed (AES-256-GCM) under the master key.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    public_key    BLOB NOT NULL,
    sealed_private BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER,                -- stopped signing
    verify_until  INTEGER                 -- leaves the JWKS after this instant
);

-- Per-subject token version ("log out everywhere").
CREATE TABLE token_versions (
    subject       TEXT PRIMARY KEY,
    version       INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Revoked access-token ids, kept until the token would have expired.
CREATE TABLE jti_blocklist (
    jti           TEXT PRIMARY KEY,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX jti_blocklist_expires ON jti_blocklist (expires_at);

-- Refresh-token families: one per grant; revoking the family kills every member.
CREATE TABLE refresh_families (
    id            TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    client_id     TEXT NOT NULL,
    audience      TEXT NOT NULL,          -- space-separated
    scopes        TEXT NOT NULL,          -- space-separated
    claims        TEXT NOT NULL,          -- JSON object of extra claims
    created_at    INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX refresh_families_subject ON refresh_families (subject);

-- Refresh tokens (hashed); a used token stays as evidence for reuse detection.
CREATE TABLE refresh_tokens (
    token_hash    BLOB PRIMARY KEY,
    family_id     TEXT NOT NULL REFERENCES refresh_families (id),
    id            TEXT NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Access tokens minted from a refresh family, so revoking the family can blocklist them.
CREATE TABLE family_access_tokens (
    family_id     TEXT NOT NULL REFERENCES refresh_families (id),
    jti           TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    PRIMARY KEY (family_id, jti)
);

-- Append-only audit trail. Never holds a secret.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    request_id    TEXT NOT NULL,
    caller        TEXT NOT NULL,          -- caller's API-key id, or "-" / "system"
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,          -- key id / jti / subject / kid
    detail        TEXT NOT NULL
);
