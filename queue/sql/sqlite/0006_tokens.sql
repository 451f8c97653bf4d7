-- Scoped tokens (`da token create`): only a SHA-256 digest of each is kept, so a copy of the
-- database hands out no credential. The admin secret (SECRET_KEY) is never stored.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'reader', 'worker')),
    name TEXT NOT NULL,
    machine TEXT,
    -- Comma-separated names; names hold no commas.
    aliases TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
-- A name people type to revoke a token names one active token.
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;
