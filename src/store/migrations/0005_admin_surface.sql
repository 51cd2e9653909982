-- API-key rotation: the key that succeeded this one (ApiKeyInfo.rotated_to).
ALTER TABLE api_keys ADD COLUMN rotated_to TEXT;
-- ListApiKeys pages newest first.
CREATE INDEX api_keys_created ON api_keys (created_at, id);
-- ListClients pages newest first.
CREATE INDEX oauth_clients_created ON oauth_clients (created_at, id);

-- Emergency revocation of a signing key: it verifies nothing from this instant on.
ALTER TABLE signing_keys ADD COLUMN revoked_at INTEGER;

-- The audit trail gets real columns for what operators filter on (subject, the
-- credential concerned) and structured details. Old free-text details are kept
-- under "note"; old action names become the documented event kinds.
CREATE TABLE audit_log_v5 (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    request_id    TEXT NOT NULL,
    caller        TEXT NOT NULL,          -- caller's API-key id, or "-" / "system" / "offline"
    kind          TEXT NOT NULL,          -- "token.issued", "api_key.revoked", ...
    subject       TEXT NOT NULL DEFAULT '',
    token_id      TEXT NOT NULL DEFAULT '', -- key id / jti / family id / code id / kid
    detail        TEXT NOT NULL DEFAULT '{}' -- JSON object, never a secret
);
INSERT INTO audit_log_v5 (id, at, request_id, caller, kind, subject, token_id, detail)
SELECT id, at, request_id, caller,
       CASE action
           WHEN 'issue.api_key' THEN 'api_key.issued'
           WHEN 'revoke.api_key' THEN 'api_key.revoked'
           WHEN 'issue.client' THEN 'client.registered'
           WHEN 'issue.access_token' THEN 'token.issued'
           WHEN 'issue.authorization_code' THEN 'code.issued'
           WHEN 'exchange.client_credentials' THEN 'token.exchanged'
           WHEN 'exchange.token_exchange' THEN 'token.exchanged'
           WHEN 'exchange.refresh_token' THEN 'refresh.rotated'
           WHEN 'exchange.authorization_code' THEN 'code.redeemed'
           WHEN 'authorization_code.reuse_detected' THEN 'code.reuse_detected'
           WHEN 'revoke.access_token' THEN 'token.revoked'
           WHEN 'revoke.refresh_token' THEN 'refresh.revoked'
           WHEN 'revoke.unknown' THEN 'revoke.noop'
           WHEN 'bump_token_version' THEN 'token_version.bumped'
           WHEN 'key.rotate' THEN 'key.rotated'
           WHEN 'key.create' THEN 'key.created'
           WHEN 'admin.recover' THEN 'admin.recovered'
           ELSE action
       END,
       CASE action WHEN 'bump_token_version' THEN target ELSE '' END,
       CASE WHEN action = 'bump_token_version' OR target = '-' THEN '' ELSE target END,
       CASE
           WHEN action = 'exchange.client_credentials'
               THEN json_object('grant', 'client_credentials', 'note', detail)
           WHEN action = 'exchange.token_exchange'
               THEN json_object('grant', 'token_exchange', 'note', detail)
           WHEN detail = '' THEN '{}'
           ELSE json_object('note', detail)
       END
FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_v5 RENAME TO audit_log;
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_subject ON audit_log (subject, id) WHERE subject != '';
CREATE INDEX audit_log_caller ON audit_log (caller, id);
CREATE INDEX audit_log_kind ON audit_log (kind, id);
