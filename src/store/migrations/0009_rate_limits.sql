-- A key's request rate limit (NULL: none). Both set or both NULL.
ALTER TABLE api_keys ADD COLUMN rate_per_second INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_burst INTEGER;
