-- Publish before sign: a key enters the JWKS when stored and signs only from
-- `activates_at`. Keys stored before this migration signed from their creation.
-- `announced` is the last state written to the change log, so the transitions that
-- happen by the clock alone (published → active, active → retired) are logged exactly
-- once, by whichever process notices them first, even across restarts.
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ADD COLUMN announced TEXT;
UPDATE signing_keys SET announced = CASE
    WHEN revoked_at IS NOT NULL THEN 'revoked'
    WHEN retired_at IS NOT NULL THEN 'retired'
    ELSE 'active' END;
