-- Lists are stored as JSON arrays of strings from this version on; the space-joined
-- rows of earlier versions are rewritten by code right after this script
-- (`store::lists::migrate_space_joined`).

-- Audiences an API key may ask for in a token exchange (JSON array; empty = none).
ALTER TABLE api_keys ADD COLUMN exchange_audiences TEXT NOT NULL DEFAULT '[]';

-- Which access token was minted from which by token exchange, so revoking a token
-- reaches everything derived from it. Kept until the child would have expired.
CREATE TABLE token_lineage (
    parent_jti        TEXT NOT NULL,
    child_jti         TEXT NOT NULL,
    child_expires_at  INTEGER NOT NULL,
    PRIMARY KEY (parent_jti, child_jti)
);
CREATE INDEX token_lineage_expires ON token_lineage (child_expires_at);

-- Looked up when a refresh-minted token is exchanged.
CREATE INDEX family_access_tokens_jti ON family_access_tokens (jti);
