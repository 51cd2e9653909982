-- The change log: one row per change to the revocation state, written in the same
-- transaction as the change itself, so `seq` order is commit order. Live subscribers
-- (WatchRevocations) and, later, other replicas replay it from a sequence number.
-- AUTOINCREMENT: a sequence number is never reused, even after compaction empties
-- the table, so a stale resume point can never name a different change.
CREATE TABLE change_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,   -- when it was written (compaction deletes by age)
    kind     TEXT NOT NULL,      -- 'jti' | 'version' | 'api_key' | 'signing_key'
    name     TEXT NOT NULL,      -- the jti, subject, API key id or kid
    value    INTEGER NOT NULL,   -- jti: its exp; version: the new version; else 0
    state    TEXT                -- signing_key: published | active | retired | revoked
);
CREATE INDEX change_log_at ON change_log (at);
-- Sequences start above 2^32: snapshot items are numbered just below the oldest
-- retained row, and this leaves room for any snapshot (see store/changes.rs).
INSERT INTO sqlite_sequence (name, seq) VALUES ('change_log', 4294967296);
