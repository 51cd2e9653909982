-- Refresh grace period: for `refresh_reuse_grace` after a refresh token's first use,
-- the successor pair it was exchanged for, sealed under the master key (AES-256-GCM,
-- associated data bound to the used token's hash), so a retry by the same client gets
-- the same pair. Deleted by housekeeping once the window has passed; never in clear.
CREATE TABLE refresh_grace (
    token_hash     BLOB PRIMARY KEY,      -- SHA-256 of the used refresh token
    family_id      TEXT NOT NULL,
    presenter      TEXT NOT NULL,         -- the client that made the first use
    successor_hash BLOB NOT NULL,         -- SHA-256 of the new refresh token
    sealed         BLOB NOT NULL,         -- nonce || ciphertext || tag
    expires_at     INTEGER NOT NULL       -- end of the grace window
);
CREATE INDEX refresh_grace_expires ON refresh_grace (expires_at);
CREATE INDEX refresh_grace_family ON refresh_grace (family_id);

-- Client-secret rotation: a confidential client's secrets are API keys. The first one
-- has the client's id; a rotated-in secret is a new API key whose id differs, so every
-- secret key is mapped to its client here, and the client row names its current one.
-- Authentication accepts any live key of the client: the old one only until its
-- overlap ends (its own expiry).
CREATE TABLE client_secrets (
    key_id    TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oauth_clients (id)
);
CREATE INDEX client_secrets_client ON client_secrets (client_id);
INSERT INTO client_secrets (key_id, client_id) SELECT id, id FROM oauth_clients WHERE public = 0;
ALTER TABLE oauth_clients ADD COLUMN secret_key_id TEXT;  -- NULL: the client's own id
