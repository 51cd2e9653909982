-- Housekeeping deletes by age: let it find the rows by index instead of scanning.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX refresh_families_absolute_expiry ON refresh_families (absolute_expires_at);
CREATE INDEX refresh_families_revoked ON refresh_families (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX family_access_tokens_expires ON family_access_tokens (expires_at);
