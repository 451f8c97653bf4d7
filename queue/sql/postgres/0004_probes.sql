-- The health check proves the database takes writes by committing one small row per replica
-- (GET /health); a standby, a read-only or a frozen database fails it.
CREATE TABLE probes (
    writer text PRIMARY KEY,
    at double precision NOT NULL
);
