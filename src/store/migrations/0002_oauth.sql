-- OAuth clients for the authorization-code flow. A confidential client's id is the id
-- of its API key (its secret); a public client has no secret.
CREATE TABLE oauth_clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    public        INTEGER NOT NULL,       -- 1 = public (no secret), 0 = confidential
    redirect_uris TEXT NOT NULL,          -- space-separated, matched exactly
    scopes        TEXT NOT NULL,          -- space-separated: what codes may carry
    created_at    INTEGER NOT NULL
);

-- Authorization codes (hashed). A used code stays until purged, with what its
-- redemption issued, so a replay can revoke it.
CREATE TABLE authorization_codes (
    code_hash      BLOB PRIMARY KEY,
    id             TEXT NOT NULL,         -- public id, for the audit log
    client_id      TEXT NOT NULL REFERENCES oauth_clients (id),
    redirect_uri   TEXT NOT NULL,
    subject        TEXT NOT NULL,
    scopes         TEXT NOT NULL,         -- space-separated
    code_challenge TEXT NOT NULL,         -- S256
    issued_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    family_id      TEXT,                  -- refresh family the redemption started
    access_jti     TEXT,                  -- access token the redemption minted
    access_expires_at INTEGER
);
CREATE INDEX authorization_codes_expires ON authorization_codes (expires_at);
CREATE INDEX authorization_codes_challenge ON authorization_codes (code_challenge);
