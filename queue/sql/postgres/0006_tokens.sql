-- Scoped tokens (`da token create`): only a SHA-256 digest of each is kept, so a copy of the
-- database hands out no credential. The admin secret (SECRET_KEY) is never stored.
CREATE TABLE tokens (
    id text PRIMARY KEY,
    digest text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('client', 'reader', 'worker')),
    name text NOT NULL,
    machine text,
    -- Comma-separated names; names hold no commas.
    aliases text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,
    revoked_at double precision
);
-- A name people type to revoke a token names one active token.
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;
